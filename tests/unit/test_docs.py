"""Every citation of the design notes names a section they have (a renamed heading breaks this, not a reader)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

CITATION = re.compile(r'docs/design\.md, "([^"]+)"')


def test_every_citation_of_the_design_notes_names_one_of_its_sections():
    design = Path(ROOT) / "docs" / "design.md"
    sections = {line.lstrip("#").strip() for line in design.read_text().splitlines() if line.startswith("#")}
    files = [p for pattern in ("lorarank/**/*.py", "tests/**/*.py", "benchmarks/*.py", "workflow/**/*.smk",
                               "config/*.yaml", "workflow/Snakefile", "README.md") for p in Path(ROOT).glob(pattern)]
    cited = {}
    for path in files:
        # a citation may wrap across lines of a docstring or a comment
        text = re.sub(r"\s*\n\s*#?\s*", " ", path.read_text())
        for name in CITATION.findall(text):
            cited.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert cited, "no citations found: has the citation form changed?"
    assert {n: p for n, p in cited.items() if n not in sections} == {}
