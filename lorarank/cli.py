"""Command-line entry point: `python -m lorarank <command> ...` (also installed as `lorarank`).

Each command lives in its own module with `configure(parser)` and `run(args)`; modules are
imported only when their command runs, so `lorarank allocate` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lorarank import numerics
from lorarank.errors import UserError
from lorarank.numerics import Numerics
from lorarank.options import add_arguments, from_args
from lorarank.training.regimes import REGIMES

# command -> (module, one-line help), in pipeline order (as `--help` lists them)
COMMANDS = {
    "prepare-data": ("lorarank.data.prepare", "GSM8K (hub, local jsonl or synthetic) as parquet splits + manifest"),
    "build-model": ("lorarank.models.build_model", "a tiny Qwen2 with a locally trained tokenizer (offline runs, tests)"),
    "fetch-model": ("lorarank.models.fetch_model", "a hub model fetched once at a pinned revision into a local directory"),
    "import-model": ("lorarank.models.import_model", "a pretrained model from a GGUF file (or an installed package's) as a model directory"),
    "allocate": ("lorarank.allocation.allocate", "turn an allocation spec into per-layer ranks at an exact budget"),
    "lora-config": ("lorarank.allocation.lora", "write the exact, verified PEFT LoraConfig for an allocation"),
    **{r.command: (r.module, r.help) for r in REGIMES.values()},  # one command per training regime
    "progress": ("lorarank.report.progress", "every training run of an experiment: state, step / total, reward or loss, s/step, ETA"),
    "evaluate": ("lorarank.evaluation.evaluate", "greedy GSM8K evaluation graded strict and flexible"),
    "select-rate": ("lorarank.report.selection", "an arm's learning rate, chosen on the validation split by a named rule"),
    "analyze": ("lorarank.report.analysis", "gradient statistics (shares, amplification, SFT vs GRPO) and figures"),
    "summarize": ("lorarank.report.summary", "results table: accuracies with CIs and paired tests against uniform"),
    "combine-bases": ("lorarank.report.bases", "verdicts and accuracies across base models (warm-up seeds): the base model as the unit"),
    "archive": ("lorarank.provenance.archive", "deterministic tarball + MANIFEST.json of an experiment's results"),
    "verify-archive": ("lorarank.provenance.verify_archive", "recompute an archive's hashes; name every file that changed"),
    "check-run": ("lorarank.provenance.published", "a run's scientific outputs against the published run's digests (or an archive)"),
    "check-pattern": ("lorarank.allocation.patterns", "lint a hand-written rank_pattern/alpha_pattern against a model"),
    "fingerprint": ("lorarank.provenance.fingerprint", "what each command's code fingerprint (its rerun trigger) is made of"),
}
# commands that run torch kernels: they take the numerics profile (`lorarank.numerics`), applied before they run
COMPUTE = ("build-model", "import-model", *(r.command for r in REGIMES.values()), "evaluate")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(names=None) -> Parser:
    """The parser with the given commands (all by default); only their modules get imported."""
    parser = Parser(prog="lorarank", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in names or COMMANDS:
        module, help_ = COMMANDS[name]
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module, _compute=name in COMPUTE)
        importlib.import_module(module).configure(p)
        if name in COMPUTE:
            add_arguments(p.add_argument_group("numerics (the same bits on every x86-64 CPU)"), Numerics)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 findings, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else argv
    # Library chatter (weight-loading bars, info logs) would bury the one line that matters in a
    # Snakemake log; users can turn it back on with the same variables.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # Build only the requested command's parser, so that unrelated heavy imports stay out.
    name = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser([name] if name in COMMANDS else None).parse_args(argv)
    try:
        if args._compute:
            numerics.apply(from_args(Numerics, args))
        return int(importlib.import_module(args._module).run(args) or 0)
    except UserError as e:
        print(f"lorarank {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # torch's refusal under use_deterministic_algorithms: an op with no such kernel
        if "deterministic" not in str(e) or not getattr(args, "deterministic", False):
            raise
        first = str(e).strip().splitlines()[0]
        print(f"lorarank {args.command}: error: {first} (--deterministic; numerics.deterministic: false runs it "
              f"without the guarantee)", file=sys.stderr)
        return 2
