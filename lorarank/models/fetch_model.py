"""`lorarank fetch-model`: a hub model, fetched once at a pinned revision into a local directory.

    python -m lorarank fetch-model --model Qwen/Qwen2.5-1.5B-Instruct --revision main --out resources/paper/model

The workflow runs this as a local rule on the submit host (the one machine that needs the network);
training and evaluation jobs then read only the local directory, with HF_HUB_OFFLINE=1, as compute
nodes without internet require. The revision (a branch, a tag, or null for main) is resolved to its
commit once and recorded in `fetch.json` beside the files, with the sha256 of each: the archive carries
it. Only what loading needs is fetched (config, safetensors weights, tokenizer files, chat template).
Without the network, a copy in the local hub cache (HF_HOME) serves, as huggingface_hub does offline.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

from lorarank.errors import UserError
from lorarank.io import atomic_dir, sha256_file, write_json
from lorarank.options import add_arguments, from_args, opt

RECORD = "fetch.json"
PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]


@dataclass
class HubModel:
    """A model on the hub: the flags of `lorarank fetch-model`, config `model.name_or_path`/`model.revision`."""

    model: str | None = opt(None, "hub id (org/name)", required=True)
    revision: str | None = opt(None, "branch, tag or commit (default: main, resolved to its commit and recorded)")

    def check(self) -> None:
        if "/" not in (self.model or "") or self.model.count("/") > 1:
            raise UserError(f"--model {self.model!r} is neither a local directory nor a hub id (org/name)")


def fetch(hub: HubModel, out: str | Path) -> dict:
    """Copy the model's files at the revision into `out` (whole or not at all); return fetch.json."""
    hub.check()
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(hub.model, revision=hub.revision, allow_patterns=PATTERNS))
    except Exception as e:  # network, auth, a missing repo or revision: all mean the same here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"model {hub.model!r} (revision {hub.revision or 'main'}) could not be fetched from the hub "
                        f"or the local hub cache: {first}") from None
    files = sorted(p for p in snapshot.iterdir() if p.is_file())
    if not any(p.suffix == ".safetensors" for p in files):
        raise UserError(f"model {hub.model!r} has no safetensors weights (only those are loaded: no pickles)")
    with atomic_dir(out) as tmp:
        for p in files:
            shutil.copyfile(p, tmp / p.name)  # the cache holds symlinks into blobs: copy the content
        record = {"model": hub.model, "revision": hub.revision, "commit": snapshot.name,
                  "files": {p.name: sha256_file(tmp / p.name) for p in files}}
        write_json(tmp / RECORD, record)
    return record


def configure(p: argparse.ArgumentParser) -> None:
    add_arguments(p, HubModel)
    p.add_argument("--out", required=True, help="directory to write (the model's files and fetch.json)")


def run(args) -> int:
    r = fetch(from_args(HubModel, args), args.out)
    print(f"{r['model']} at {r['commit'][:12]}: {len(r['files'])} files -> {args.out}")
    return 0
