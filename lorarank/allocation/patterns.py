"""`lorarank check-pattern`: a linter for hand-written PEFT `rank_pattern` / `alpha_pattern`.

    python -m lorarank check-pattern --model Qwen/Qwen2.5-1.5B-Instruct --pattern pattern.json

PEFT (0.21, `peft.utils.other.get_pattern_key`) tries each key in dict order as
`re.match(rf"(.*\\.)?({key})$", module_path)` and takes the first that matches; a module that no
key matches silently gets the default `r`/`lora_alpha`. This linter evaluates every key with
exactly that rule against the model's real target paths and reports, per key, what it hits.
Findings (exit code 1):
  invalid-regex   the key does not compile (`*.q_proj`): PEFT raises re.error mid-injection;
  glob            the key reads like a shell glob (`*` at the start or `.*.` between path parts):
                  as a regex it means something else, report says what it hits;
  no-match        the key hits no target module: its rank is never applied;
  multi-layer     the key names a layer (`layers.1`) but hits other layers too
                  (`model.layers.1.*.q_proj` hits layers 1 and 10-19);
  order-dependent two keys with different values hit the same module: the dict order decides.
The pattern file is JSON: {"rank_pattern": {...}, "alpha_pattern": {...}}, a lora.json written
by `lorarank lora-config`, or a bare {key: rank} mapping (read as a rank_pattern).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from lorarank.argtypes import csv_list
from lorarank.errors import UserError
from lorarank.io import read_json
from lorarank.study import DEFAULT_MODULES

NAMED_LAYER = re.compile(r"layers(?:\\?\.|_)(\d+)(?!\d)")
GLOB = re.compile(r"^\*|(?<!\\)\.\*(?<!\\)\.")


def peft_matches(key: str, name: str) -> bool:
    """PEFT's own rule (get_pattern_key): may raise re.error for an invalid key, as PEFT does."""
    return re.match(rf"(.*\.)?({key})$", name) is not None


def format_ranges(values) -> str:
    """[1, 10, 11, 12] -> '1, 10-12'."""
    vals = sorted(set(values))
    out, i = [], 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ", ".join(out)


@dataclass
class Finding:
    kind: str
    pattern: str  # rank_pattern or alpha_pattern
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.pattern}[{self.key!r}] {self.message}"


def lint(pattern: dict, names: list[str], layer_of: dict[str, int], kind: str = "rank_pattern"):
    """Return (hits per key, findings) for one pattern dict against the target module paths."""
    hits: dict[str, list[str]] = {}
    findings: list[Finding] = []
    for key in pattern:
        try:
            hits[key] = [n for n in names if peft_matches(key, n)]
        except re.error:
            try:
                re.compile(key)
                why = "breaks PEFT's wrapper regex"
            except re.error as e:  # report the position within the key, not within PEFT's wrapper
                why = str(e)
            glob = " (it looks like a glob)" if GLOB.search(key) else ""
            findings.append(Finding("invalid-regex", kind, key, f"is not a valid regex: {why}{glob}; PEFT raises re.error on it"))
            continue
        layers = sorted({layer_of[n] for n in hits[key]})
        where = f"{len(hits[key])} module(s) in layer(s) {format_ranges(layers)}" if layers else "nothing"
        if GLOB.search(key):
            findings.append(Finding("glob", kind, key, f"looks like a glob, but PEFT reads a regex: it hits {where}"))
        if not hits[key]:
            findings.append(Finding("no-match", kind, key, "hits no target module: PEFT silently uses the default instead"))
        named = NAMED_LAYER.search(key)
        if named and hits[key] and layers != [int(named.group(1))]:
            findings.append(Finding("multi-layer", kind, key, f"names layer {named.group(1)} but hits {where}"))
    # A module hit by several keys gets the first key's value; flag pairs that disagree.
    valid = [k for k in pattern if k in hits]
    for i, a in enumerate(valid):
        for b in valid[i + 1:]:
            shared = set(hits[a]) & set(hits[b])
            if shared and pattern[a] != pattern[b]:
                findings.append(Finding(
                    "order-dependent", kind, b,
                    f"and {a!r} both hit {len(shared)} module(s) (e.g. {sorted(shared)[0]}) with values "
                    f"{pattern[b]} vs {pattern[a]}: PEFT takes whichever key comes first in dict order"))
    return hits, findings


def read_patterns(path: str) -> dict[str, dict]:
    doc = read_json(path, "pattern file")
    if not isinstance(doc, dict):
        raise UserError(f"pattern file {path!r} must hold a JSON object")
    doc = doc.get("lora_config", doc)
    if "rank_pattern" in doc or "alpha_pattern" in doc:
        found = {k: doc.get(k) or {} for k in ("rank_pattern", "alpha_pattern")}
    else:
        found = {"rank_pattern": doc}
    for kind, pat in found.items():
        if not isinstance(pat, dict):
            raise UserError(f"{kind} in {path!r} must be a JSON object of key -> value")
        for key, value in pat.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UserError(f"{kind}[{key!r}] = {value!r} in {path!r} is not a positive number")
    return found


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="hub id, model directory or config.json")
    p.add_argument("--pattern", required=True, help="JSON with rank_pattern/alpha_pattern")
    p.add_argument("--target-modules", type=csv_list, default=list(DEFAULT_MODULES))


def run(args) -> int:
    from lorarank.models.loading import targets

    patterns = read_patterns(args.pattern)
    _, tg = targets(args.model, args.target_modules)
    names = [t.name for t in tg]
    layer_of = {t.name: t.layer for t in tg}
    all_findings = []
    for kind, pattern in patterns.items():
        hits, findings = lint(pattern, names, layer_of, kind)
        for key in pattern:
            if key in hits:
                layers = format_ranges(layer_of[n] for n in hits[key]) or "-"
                print(f"{kind}[{key!r}] = {pattern[key]}: {len(hits[key])} module(s), layers {layers}")
        all_findings += findings
    for f in all_findings:
        print(f)
    print(f"{len(all_findings)} finding(s) in {sum(map(len, patterns.values()))} key(s) over {len(names)} target modules")
    return 1 if all_findings else 0
