"""`lorarank evaluate`: greedy GSM8K evaluation with per-question records, graded both ways.

    python -m lorarank evaluate --model warmup/final --adapter runs/uniform/seed0/final \
        --data data/gsm8k/test.parquet --n 200 --seed 0 --out eval/uniform/seed0
    python -m lorarank evaluate --model Qwen/Qwen2.5-1.5B-Instruct --data data/gsm8k/test.parquet --n all --out eval/base/seed0

Prompts use the training chat template and system prompt (`lorarank.data.prompts`), generation is
greedy and batched with left padding. The evaluated questions are drawn by `--seed` from the split
(sorted positions), so every arm evaluated with one seed sees the same questions and arms can be
compared question by question; `--n all` takes every question of the split (GSM8K test: 1,319), the
same as `--n` at the split's size. Grading: `lorarank.evaluation.gsm8k` strict and flexible.
Outputs: predictions.parquet (idx, question, gold, completion, pred_strict, pred_flexible,
correct_strict, correct_flexible) and metrics.json (n, accuracies with Wilson 95% CIs, tokens
generated, questions per second, model/adapter/data hashes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lorarank.argtypes import positive_int
from lorarank.data.prompts import LAYOUTS
from lorarank.errors import UserError
from lorarank.io import atomic_path, sha256_file, weights_sha256, write_json
from lorarank.options import add_arguments, from_args, identity, opt
from lorarank.provenance.environment import describe
from lorarank.study import read_record, run_identity

PRED_COLUMNS = ["idx", "question", "gold", "completion", "pred_strict", "pred_flexible",
                "correct_strict", "correct_flexible"]
ALL = "all"  # --n all: every question of the split
ALLOWED_N = "allowed: an integer >= 1, or all"


def questions(text: str) -> int | str:
    """`--n`: a number of questions, at least 1, or `all`.

    >>> questions("all"), questions("1319")
    ('all', 1319)
    >>> questions("al")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 'al' is not a number of questions (allowed: an integer >= 1, or all)
    """
    if text == ALL:
        return ALL
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of questions ({ALLOWED_N})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive ({ALLOWED_N})")
    return value


@dataclass
class EvalSettings:
    """The flags of `lorarank evaluate`, config `evaluation` (and `layout`)."""

    n: int | str = opt(200, "questions, drawn by --seed from the split (all: every question of the split)",
                       type=questions)
    seed: int = opt(0, "seed of the question draw (the same for every arm: paired comparisons)")
    layout: str = opt("hash", "answer layout the prompt asks for", choices=LAYOUTS)
    max_new_tokens: int = opt(256, "completion tokens at most", type=positive_int)
    batch_size: int = opt(32, "questions generated together (left padding; predictions do not depend on it)",
                          type=positive_int, operational=True)

    def check(self, split_size: int | None = None) -> None:
        if self.n != ALL and (type(self.n) is not int or self.n < 1):  # a library caller's value: no flag parsed it
            raise UserError(f"--n {self.n!r} is not a number of questions ({ALLOWED_N})")
        if self.n != ALL and split_size is not None and self.n > split_size:
            raise UserError(f"--n {self.n} is larger than the split ({split_size} questions)")


def subset(df, settings: EvalSettings):
    """The questions every arm is evaluated on: n drawn by the seed, in split order (all: the whole split, which
    is what the draw gives at n = the split's size)."""
    import numpy as np

    settings.check(len(df))
    if settings.n == ALL:
        return df.reset_index(drop=True)
    rows = np.sort(np.random.default_rng(settings.seed).choice(len(df), size=settings.n, replace=False))
    return df.iloc[rows].reset_index(drop=True)


def attach_adapter(model, adapter: str):
    """Load a PEFT adapter, refusing one whose tensors do not all land on this model."""
    from peft import PeftModel
    from safetensors import safe_open

    ad = Path(adapter)
    weights = ad / "adapter_model.safetensors"
    if not (ad / "adapter_config.json").is_file() or not weights.is_file():
        raise UserError(f"adapter {adapter!r} is not a PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
    try:
        peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"adapter {adapter!r} does not fit this model: {first}") from None
    with safe_open(weights, "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    from peft.utils import get_peft_model_state_dict

    loaded = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
    if saved != loaded:
        missing = sorted(set(saved) ^ set(loaded)) or sorted(k for k in saved if saved[k] != loaded.get(k))
        raise UserError(f"adapter {adapter!r} was built for another model: e.g. {missing[0]} does not match "
                        f"({len(saved)} saved tensors, {len(loaded)} on this model)")
    return peft_model


def generate(model, tokenizer, questions: list[str], layout: str, batch_size: int, max_new_tokens: int,
             progress: bool = True) -> tuple[list[str], int]:
    """Greedy completions, batched with left padding; returns (texts, tokens generated)."""
    import torch

    from lorarank.data.prompts import messages

    tokenizer.padding_side = "left"
    texts, n_tokens = [], 0
    eos = tokenizer.eos_token_id
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(questions), desc="evaluate", unit="q", file=sys.stderr)
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        prompts = [tokenizer.apply_chat_template(messages(q, layout), tokenize=False, add_generation_prompt=True)
                   for q in chunk]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
        new = out[:, enc["input_ids"].shape[1]:]
        for row in new:
            ids = row.tolist()
            if eos in ids:
                ids = ids[:ids.index(eos) + 1]
            else:
                ids = [t for t in ids if t != tokenizer.pad_token_id]
            n_tokens += len(ids)
            texts.append(tokenizer.decode(ids, skip_special_tokens=True))
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return texts, n_tokens


def grade(df, completions: list[str]):
    import pandas as pd

    from lorarank.evaluation.gsm8k import extract_answer, is_correct

    golds = df["gold"].tolist()
    strict = [extract_answer(c, "strict") for c in completions]
    flexible = [extract_answer(c, "flexible") for c in completions]
    # grade from the Python lists: a DataFrame column would turn a missing answer (None) into NaN
    return pd.DataFrame({
        "idx": df["idx"].astype("int64").to_numpy(), "question": df["question"].tolist(), "gold": golds,
        "completion": completions, "pred_strict": strict, "pred_flexible": flexible,
        "correct_strict": [is_correct(p, g) for p, g in zip(strict, golds)],
        "correct_flexible": [is_correct(p, g) for p, g in zip(flexible, golds)],
    })[PRED_COLUMNS]


def load_model(spec: str, adapter: str | None):
    import torch

    from lorarank.models.loading import load

    model, tokenizer = load(spec, bf16=True)
    if torch.cuda.is_available():
        model = model.to("cuda")
    if adapter:
        model = attach_adapter(model, adapter)
    model.eval()
    return model, tokenizer


def evaluated(model: str, adapter: str | None) -> tuple[dict, dict | None, float | None]:
    """What is evaluated: (identity, adapter ranks and parameters, the rate it was trained at) from the training
    run's run.json beside the adapter, or the base model's identity."""
    if adapter is None:
        return run_identity("base", None, None, None, weights_sha256(model)), None, None
    run = Path(adapter).parent / "run.json"
    if not run.is_file():
        return run_identity("adapter", None, None, None, weights_sha256(model)), None, None
    record = read_record(run, "run record")
    return record["identity"], record.get("adapter_info"), record.get("learning_rate")


def evaluate(model: str, adapter: str | None, data: str, out: str | Path, settings: EvalSettings,
             progress: bool = False) -> dict:
    """Generate, grade and write predictions.parquet and metrics.json; returns the metrics."""
    import torch

    from lorarank.data.prepare import load_split
    from lorarank.report.stats import wilson

    torch.manual_seed(settings.seed)
    df = subset(load_split(data), settings)
    if adapter and not Path(adapter).exists():
        raise UserError(f"adapter {adapter!r} does not exist")
    what, adapter_info, rate = evaluated(model, adapter)
    lm, tokenizer = load_model(model, adapter)
    t0 = time.perf_counter()
    completions, n_tokens = generate(lm, tokenizer, list(df["question"]), settings.layout, settings.batch_size,
                                     settings.max_new_tokens, progress=progress)
    seconds = time.perf_counter() - t0
    preds = grade(df, completions)
    n = len(preds)
    metrics = {"identity": what, "adapter_info": adapter_info, "learning_rate": rate, "settings": identity(settings),
               "n": n, "seed": settings.seed,
               "batch_size": settings.batch_size, "tokens_generated": n_tokens,
               "seconds": round(seconds, 3), "questions_per_second": round(n / seconds, 3) if seconds else None,
               "model": weights_sha256(model), "adapter": weights_sha256(adapter) if adapter else None,
               "data": {"path": str(data), "sha256": sha256_file(data)},
               "subset_sha256": hashlib.sha256(json.dumps(preds["idx"].tolist()).encode()).hexdigest(),
               "environment": describe()}
    for mode in ("strict", "flexible"):
        k = int(preds[f"correct_{mode}"].sum())
        lo, hi = wilson(k, n)
        metrics[f"accuracy_{mode}"] = k / n
        metrics[f"ci95_{mode}"] = [lo, hi]
    out = Path(out)
    with atomic_path(out / "predictions.parquet") as tmp:
        preds.to_parquet(tmp, index=False)
    write_json(out / "metrics.json", metrics)
    return metrics


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model: directory or hub id")
    p.add_argument("--adapter", help="PEFT adapter directory (omit to evaluate the base model)")
    p.add_argument("--data", required=True, help="test split (parquet with question, answer)")
    add_arguments(p, EvalSettings)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="directory for predictions.parquet and metrics.json")


def run(args) -> int:
    m = evaluate(args.model, args.adapter, args.data, args.out, from_args(EvalSettings, args), progress=not args.quiet)
    print(f"n={m['n']}: strict {m['accuracy_strict']:.1%} [{m['ci95_strict'][0]:.1%}, {m['ci95_strict'][1]:.1%}], "
          f"flexible {m['accuracy_flexible']:.1%}, {m['questions_per_second']} q/s -> {args.out}")
    return 0
