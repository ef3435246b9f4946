"""Code fingerprints: what counts as a change, and which modules and packages each command runs."""

from pathlib import Path

from conftest import ROOT, child_env
from lorarank.provenance import fingerprint as fp


def test_rule_for_a_change(tmp_path):
    a = tmp_path / "a.py"
    a.write_text('"""Doc."""\nimport os\n\n\ndef f(x):\n    """Doc."""\n    return x + 1  # note\n')
    base = fp.normalized(a)
    a.write_text('"""Other doc."""\n# comment\nimport os\ndef f( x ):\n    return (x + 1)\n')
    assert fp.normalized(a) == base  # comments, docstrings, layout: not a change
    a.write_text('import os\ndef f(x):\n    return x + 2\n')
    assert fp.normalized(a) != base  # code: a change


def test_closures_follow_function_level_imports():
    mods, ext = fp.closure(Path(ROOT), "lorarank.training.train")
    assert {"lorarank.training.rewards", "lorarank.evaluation.gsm8k", "lorarank.allocation.lora", "lorarank.training.profiler"} <= set(mods)
    # the allocation math and the evaluation are not training's code; the packages a module sits in are
    assert not {"lorarank.allocation.allocate", "lorarank.allocation.ranks", "lorarank.evaluation.evaluate"} & set(mods)
    assert {"lorarank.training", "lorarank.allocation"} <= set(mods)
    assert {"trl", "peft", "torch", "transformers", "deepspeed"} <= set(ext)
    mods, ext = fp.closure(Path(ROOT), "lorarank.data.prepare")
    assert "lorarank.evaluation.gsm8k" not in mods and "trl" not in ext and "torch" not in ext


def test_every_command_has_a_stable_fingerprint():
    a, b = fp.fingerprints(Path(ROOT)), fp.fingerprints(Path(ROOT))
    assert a == b and set(a) >= {"prepare-data", "build-model", "sft", "allocate", "lora-config", "train",
                                 "evaluate", "analyze", "summarize"}
    # commands whose code differs differ (verify-archive and check-run import each other: one closure)
    modules = fp.commands(Path(ROOT))
    code = {c: fp.closure(Path(ROOT), m) for c, m in modules.items()}
    for x in a:
        for y in a:
            assert (a[x] == a[y]) == (code[x] == code[y]), (x, y)
    assert a["prepare-data"] != a["train"] and a["verify-archive"] == a["check-run"]


def test_fingerprints_are_the_same_in_other_processes_and_hash_seeds(tmp_path):
    """What a rerun on another day computes: fresh processes with other PYTHONHASHSEEDs (set and dict order) and
    another working directory give this process's fingerprints."""
    import json
    import subprocess
    import sys

    here = fp.fingerprints(Path(ROOT))
    code = f"import json; from pathlib import Path; from lorarank.provenance import fingerprint as fp; " \
           f"print(json.dumps(fp.fingerprints(Path({ROOT!r}))))"
    for seed in ("12345",):  # (this process: a random seed, unless PYTHONHASHSEED is set)
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                           env={**child_env(), "PYTHONHASHSEED": seed, "PYTHONPATH": ROOT})
        assert json.loads(r.stdout) == here


def test_container_digest_replaces_package_versions():
    with_versions = fp.describe(Path(ROOT), "train")
    pinned = fp.describe(Path(ROOT), "train", container="docker://x@sha256:" + "0" * 64)
    assert "trl" in with_versions["environment"] and pinned["environment"] == {"container": "docker://x@sha256:" + "0" * 64}
    assert pinned["fingerprint"] != with_versions["fingerprint"]


def test_cli(cli):
    code, out, _ = cli("fingerprint", "evaluate", "-v")
    assert code == 0 and "module  lorarank.evaluation.gsm8k" in out and "package transformers==" in out
    assert cli("fingerprint", "fly")[0] == 2


def test_what_the_snakefile_imports_needs_only_the_standard_library():
    """With `--sdm apptainer` the submit host may have nothing but Snakemake: the Snakefile's lorarank
    imports (config wiring and checks, containers, fingerprints) must load without numpy, pandas or torch."""
    import subprocess
    import sys

    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'numpy', 'pandas', 'torch', 'transformers', 'peft', 'trl', 'datasets', 'scipy', 'yaml'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from lorarank import workflow_config
from lorarank.provenance import containers, fingerprint
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_regime_commands_are_read_without_importing_the_registry():
    """Another checkout's commands come from its own files: the regime commands parsed from its regimes.py
    are the ones the running CLI has."""
    from lorarank.cli import COMMANDS

    assert fp.commands(Path(ROOT)) == {name: module for name, (module, _) in COMMANDS.items()}
