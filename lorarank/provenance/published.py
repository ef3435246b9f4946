"""Published digests: a run's scientific outputs checked, file by file, against a published run's.

    python -m lorarank check-run results/default                          # against config/published/default.json
    python -m lorarank check-run results/default --against AUTHORS/archive   # an archive (dir, .tar.gz, MANIFEST.json)
    python -m lorarank check-run results/default --publish                # (re)write config/published/default.json

The scientific outputs are what a reader's conclusions rest on: the data splits, the model and adapter
weights, the gradient and rank logs, the predictions and `summary/results.md`; never logs, timings, run
records or paths (they name the machine). `make run` ends with the first command: "40/40 outputs identical
to the published run", or the first output that differs, in pipeline order, and what that points to.
The published file is the run's archive manifest cut to those files, with its config (the check first
compares configs: another config, or `numerics.kernels: native`, is another study and is reported as not
comparable) and the package versions the run's jobs recorded. Publishing is one command, run in the same
commit as any change that moves the numbers (README: "Published digests").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lorarank.errors import UserError
from lorarank.io import atomic_path, read_json, sha256_file

FORMAT = "lorarank-digests/1"
CHECKOUT = Path(__file__).resolve().parents[2]
# where an experiment's published digests live in the repository, beside the configs
PUBLISHED = CHECKOUT / "config" / "published"
NAMES = {"train.parquet", "warmup.parquet", "validation.parquet", "test.parquet", "grad_norms.parquet",
         "ranks.parquet", "predictions.parquet", "results.md"}
# pipeline order: the first output that differs is the one nearer the cause, and what follows inherits it
STAGES = {
    "data": "the data splits differ: another generator, data file or pandas/pyarrow version; everything after "
            "them differs with them",
    "model": "the base model differs (its build or import): every later stage starts from other weights",
    "warmup": "the warm-up trained differently although its inputs match: CPU numerics (is numerics.kernels "
              "portable in force on both sides?) or another torch/transformers/TRL version",
    "runs": "training diverged although its inputs match: CPU numerics, or another torch/transformers/TRL/PEFT "
            "version (a last-bit difference grows into another adapter over the steps)",
    "eval": "the predictions differ although the adapters match: generation (transformers, torch kernels)",
    "summary": "the report differs although every prediction and log matches: the statistics code or its "
               "numpy/scipy/statsmodels versions",
}
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "tokenizers", "numpy", "pandas", "pyarrow",
            "scipy", "statsmodels", "safetensors")


def scientific(name: str) -> bool:
    """Whether a results-relative file name is a scientific output (see the module docstring)."""
    parts = name.split("/")
    return parts[0] in STAGES and (parts[-1] in NAMES or parts[-1].endswith(".safetensors"))


def order(name: str) -> tuple:
    return list(STAGES).index(name.split("/")[0]), name


def hashes(results: Path, names) -> dict[str, str]:
    """name -> sha256 of the scientific outputs among `names` (the run's own manifest: files an earlier config
    left behind do not count), in pipeline order; a listed file no longer on disk is left out (missing)."""
    return {n: sha256_file(results / n) for n in sorted(filter(scientific, names), key=order)
            if (results / n).is_file()}


def packages(manifest: dict) -> dict[str, str]:
    """The versions of the packages that decide the bits, as the run's training/evaluation jobs recorded them."""
    envs = manifest.get("environments", {}).get("train") or [{}]
    seen = (envs[0].get("environment") or {}).get("packages", {})
    return {p: seen[p] for p in PACKAGES if p in seen}


def from_manifest(doc: dict) -> dict:
    """A published-digests document cut from an archive manifest (`lorarank.provenance.archive`)."""
    files = {n: v["sha256"] for n, v in doc.get("files", {}).items() if scientific(n)}
    return {"format": FORMAT, "experiment": doc.get("experiment"), "config": doc.get("config"),
            "packages": packages(doc), "files": dict(sorted(files.items(), key=lambda kv: order(kv[0])))}


def load(path: Path) -> dict:
    """Published digests from a digests file, an archive (directory or .tar.gz, verified first) or a manifest."""
    from lorarank.provenance.verify_archive import verify

    if path.is_file() and path.suffix == ".json":
        doc = read_json(path, "published digests")
        if isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("files"), dict):
            return doc
        path = path.parent  # a MANIFEST.json: verify the archive it describes
    doc, problems, _ = verify(str(path))
    if problems:
        raise UserError(f"{path} does not verify against its own manifest ({problems[0]}): "
                        f"`lorarank verify-archive {path}` lists every problem")
    return from_manifest(doc)


def run_manifest(results: Path) -> dict:
    return read_json(results / "archive" / "MANIFEST.json", "the run's archive manifest (written by archive_results)")


def config_difference(mine: dict, theirs: dict, prefix: str = "") -> str | None:
    """The first config key whose value differs, as 'key: mine (published: theirs)', or None."""
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = config_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {json.dumps(a)} (published: {json.dumps(b)})"
    return None


IDENTICAL, DIFFERS, NOT_COMPARABLE = "identical", "differs", "not comparable"


def compare(results: Path, published: dict) -> tuple[str, list[str]]:
    """(IDENTICAL, DIFFERS or NOT_COMPARABLE, report lines) for a finished run against published digests."""
    mine = run_manifest(results)
    differs = config_difference(mine.get("config") or {}, published.get("config") or {})
    if differs:
        return NOT_COMPARABLE, [f"not comparable: the run's config differs from the published run's at {differs}; "
                                f"published digests hold for the published config only"]
    got, want = hashes(results, mine.get("files", {})), published["files"]
    same = [n for n in want if got.get(n) == want[n]]
    if len(same) == len(want) and set(got) == set(want):
        return IDENTICAL, [f"{len(same)}/{len(want)} outputs identical to the published run"]
    missing = [n for n in want if n not in got]
    extra = [n for n in got if n not in want]
    changed = [n for n in want if n in got and got[n] != want[n]]
    lines = [f"{len(same)}/{len(want)} outputs identical to the published run; {len(changed)} differ, "
             f"{len(missing)} missing, {len(extra)} not in the published run"]
    if changed:
        first = min(changed, key=order)
        lines.append(f"first that differs: {first} (sha256 {got[first][:16]}…, published {want[first][:16]}…): "
                     f"{STAGES[first.split('/')[0]]}")
    lines += [f"missing: {n}" for n in missing[:5]] + [f"not published: {n}" for n in extra[:5]]
    versions = packages(mine)
    moved = [f"{p} {versions.get(p)} (published: {v})" for p, v in published.get("packages", {}).items()
             if versions.get(p) != v]
    if moved:
        lines.append("package versions differ from the published run's: " + ", ".join(moved))
    return DIFFERS, lines


def report(results: Path, published: dict) -> int:
    """Print the comparison; exit 1 only when the run differs (another config is another study, not a failure)."""
    status, lines = compare(results, published)
    for line in lines:
        print(f"{results}: {line}", file=sys.stderr if status == DIFFERS else sys.stdout)
    return 1 if status == DIFFERS else 0


def publish(results: Path, out: Path) -> dict:
    """Write the published digests of a finished run (its archive manifest, cut), after checking the files
    on disk still match that manifest."""
    manifest = run_manifest(results)
    doc = from_manifest(manifest)
    now = hashes(results, manifest.get("files", {}))
    if now != doc["files"]:
        stale = next(n for n in sorted(set(now) | set(doc["files"]), key=order) if now.get(n) != doc["files"].get(n))
        raise UserError(f"{results}/{stale} does not match the run's archive manifest: rerun the workflow "
                        f"(archive_results) before publishing")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def configure(p) -> None:
    p.add_argument("results", help="results/<experiment> of a finished run (it holds archive/MANIFEST.json)")
    p.add_argument("--against", default=None,
                   help="published digests (.json), or an archive (directory, .tar.gz or MANIFEST.json) to compare "
                        "with; default: config/published/<experiment>.json")
    p.add_argument("--publish", action="store_true",
                   help="write config/published/<experiment>.json (or --against) from this run instead of checking")


def run(args) -> int:
    results = Path(args.results)
    target = Path(args.against) if args.against else PUBLISHED / f"{results.name}.json"
    if args.publish:
        if target.suffix != ".json":
            raise UserError(f"--publish writes a .json file, not {str(target)!r} (an archive is never overwritten)")
        doc = publish(results, target)
        print(f"{target}: {len(doc['files'])} published digests of {results}")
        return 0
    if not target.exists():
        raise UserError(f"no published digests at {str(target)!r} (allowed: a digests .json, an archive directory, "
                        f".tar.gz or MANIFEST.json; `lorarank check-run {results} --publish` writes one)")
    return report(results, load(target))
