"""Bad input: one clear line on stderr naming the value, exit code 2, and no output file."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import write_grad_log


def log(tmp, layers=4, fn=None, name="g.parquet"):
    path = write_grad_log(tmp / name, np.ones((3, layers)))
    if fn:
        df = pd.read_parquet(path)
        fn(df).to_parquet(path)
    return str(path)


def alloc_file(tmp, doc):
    p = tmp / "alloc_in.json"
    base = {"strategy": "manual", "granularity": "layer", "budget": 16, "num_layers": 4, "ranks": [4] * 4,
            "modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "alpha_policy": {"name": "ratio", "value": 2.0}, "seed": 0, "profile": None}
    p.write_text(json.dumps({**base, **doc}))
    return str(p)


def rank_log(tmp, layers=2, steps=(0, 5)):
    """A rank log (ranklog contract) of an AdaLoRA run on a `layers`-layer model."""
    from lorarank.training import ranklog

    mods = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    path = tmp / "ranks.parquet"
    ranklog.frame([(s, layer, m, 4, 8 * len(mods)) for s in steps for layer in range(layers) for m in mods]
                  ).to_parquet(path)
    return str(path)


def nan_norm(df):
    df.loc[5, "grad_norm"] = np.nan
    return df


def _text(t, text):
    p = t / "input.json"
    p.write_text(text)
    return str(p)


A = ["allocate", "--num-layers", "4"]
CASES = {
    # allocate
    "budget below layers x min rank": (lambda t, m: A + ["--strategy", "random", "--budget", "3"], "below 4 layers"),
    "budget below layers x custom min": (lambda t, m: A + ["--strategy", "random", "--budget", "30", "--min-rank", "8"], "--min-rank 8"),
    "zero budget": (lambda t, m: A + ["--strategy", "uniform", "--budget", "0"], "0 is not positive"),
    "negative budget": (lambda t, m: A + ["--strategy", "uniform", "--budget", "-16"], "-16 is not positive"),
    "non-integer budget": (lambda t, m: A + ["--strategy", "uniform", "--budget", "16.5"], "'16.5' is not an integer"),
    "budget does not divide": (lambda t, m: A + ["--strategy", "uniform", "--budget", "18"], "remainder 2"),
    "negative manual rank": (lambda t, m: A + ["--strategy", "manual", "--ranks", "8,-1,4,4"], "'-1' at position 1"),
    "zero manual rank": (lambda t, m: A + ["--strategy", "manual", "--ranks", "8,0,4,4"], "'0' at position 1"),
    "non-integer manual rank": (lambda t, m: A + ["--strategy", "manual", "--ranks", "8,2.5,4,4"], "'2.5' at position 1"),
    "ranks list length mismatch": (lambda t, m: A + ["--strategy", "manual", "--ranks", "8,8,8"], "3 entries"),
    "fraction zero": (lambda t, m: A + ["--strategy", "reduced", "--budget", "16", "--fraction", "0", "--grad-log", log(t)], "--fraction 0.0"),
    "fraction above one": (lambda t, m: A + ["--strategy", "reduced", "--budget", "16", "--fraction", "1.5", "--grad-log", log(t)], "--fraction 1.5"),
    "unknown strategy": (lambda t, m: A + ["--strategy", "greedy", "--budget", "16"], "invalid choice: 'greedy'"),
    "bad module name": (lambda t, m: A + ["--strategy", "uniform", "--budget", "16", "--target-modules", "q.proj"], "'q.proj'"),
    "low above high": (lambda t, m: A + ["--strategy", "random", "--budget", "64", "--low", "20", "--high", "10"], "--low 20 is above --high 10"),
    "min above max": (lambda t, m: A + ["--strategy", "random", "--budget", "64", "--min-rank", "9", "--max-rank", "3"], "--max-rank 3 is below"),
    "adalora init_r at the target": (lambda t, m: A + ["--strategy", "adalora", "--budget", "16", "--init-r", "4"],
                                     "--init-r 4 is not above the mean target rank 4"),
    "adalora beta of 1": (lambda t, m: A + ["--strategy", "adalora", "--budget", "16", "--beta2", "1"], "--beta2 1.0 is outside (0, 1)"),
    "adalora-final without a rank log": (lambda t, m: A + ["--strategy", "adalora-final", "--budget", "16"], "needs --rank-log"),
    "adalora-final from another model's rank log": (lambda t, m: A + ["--strategy", "adalora-final", "--budget", "16",
                                                                     "--rank-log", rank_log(t)], "has no rank for layer 2"),
    "adalora-final from an unfinished run": (lambda t, m: A + ["--strategy", "adalora-final", "--budget", "16",
                                                              "--rank-log", rank_log(t, 4, (0,))], "holds only step 0"),
    "adalora-final from a missing rank log": (lambda t, m: A + ["--strategy", "adalora-final", "--budget", "16",
                                                               "--rank-log", str(t / "none.parquet")], "does not exist"),
    "grad log missing for proportional": (lambda t, m: A + ["--strategy", "proportional", "--budget", "16"], "needs --grad-log"),
    "grad log does not exist": (lambda t, m: A + ["--strategy", "proportional", "--budget", "16", "--grad-log", str(t / "nope.parquet")], "does not exist"),
    "grad log wrong layer count": (lambda t, m: ["allocate", "--num-layers", "28", "--strategy", "proportional", "--budget", "896", "--grad-log", log(t)], "covers 4 layers"),
    "grad log NaN norm": (lambda t, m: A + ["--strategy", "proportional", "--budget", "16", "--grad-log", log(t, fn=nan_norm)], "non-finite grad_norm (nan)"),
    "grad log all zero": (lambda t, m: A + ["--strategy", "proportional", "--budget", "16", "--grad-log", log(t, fn=lambda d: d.assign(grad_norm=np.float32(0)))], "all-zero"),
    "grad log missing column": (lambda t, m: A + ["--strategy", "proportional", "--budget", "16", "--grad-log", log(t, fn=lambda d: d.drop(columns="grad_norm"))], "lacks column(s) grad_norm"),
    "inverse with a zero share": (lambda t, m: A + ["--strategy", "inverse", "--budget", "16", "--grad-log", log(t, fn=lambda d: d.assign(grad_norm=np.where(d.layer == 2, 0, d.grad_norm).astype("float32")))], "share 0"),
    "model path does not exist (allocate)": (lambda t, m: ["allocate", "--strategy", "uniform", "--budget", "16", "--model", str(t / "missing" / "config.json")], "does not exist"),
    "target module the model lacks (allocate)": (lambda t, m: ["allocate", "--strategy", "uniform", "--budget", "16", "--target-modules", "q_proj,qkv_proj", "--model", m], "module(s) qkv_proj not in this model's layers"),
    "metric unknown": (lambda t, m: A + ["--strategy", "proportional", "--budget", "16", "--metric", "gradnorm", "--grad-log", log(t)], "invalid choice: 'gradnorm'"),
    "weight metric from a log without G rows": (lambda t, m: A + ["--strategy", "proportional", "--budget", "16", "--metric", "weight", "--grad-log", log(t)], "has no 'G' rows"),
    # train (refused while parsing, before anything loads)
    "weight-grad-every zero": (lambda t, m: ["train", "--model", m, "--lora", "l.json", "--data", "d.parquet", "--weight-grad-every", "0"], "--weight-grad-every: 0 is not positive"),
    # lora-config
    "model path does not exist": (lambda t, m: ["lora-config", "--allocation", alloc_file(t, {}), "--model", "./no/such/model"], "does not exist"),
    "rank above min(in, out)": (lambda t, m: ["lora-config", "--allocation", alloc_file(t, {"ranks": [4, 4, 300, 4]}), "--model", m], "rank 300 for model.layers.2.self_attn.q_proj exceeds min(in=256, out=256)"),
    "unknown module": (lambda t, m: ["lora-config", "--allocation", alloc_file(t, {"modules": ["q_proj", "qkv_proj"]}), "--model", m], "qkv_proj not in this model"),
    "allocation layer count differs from model": (lambda t, m: ["lora-config", "--allocation", alloc_file(t, {"num_layers": 3, "ranks": [4] * 3}), "--model", m], "has 3 layers but model"),
    "allocation ranks shorter than layers": (lambda t, m: ["lora-config", "--allocation", alloc_file(t, {"ranks": [4] * 3}), "--model", m], "3 rank entries for 4 layers"),
    "unknown alpha policy": (lambda t, m: ["lora-config", "--allocation", alloc_file(t, {"alpha_policy": {"name": "sqrt", "value": 1}}), "--model", m], "alpha policy 'sqrt'"),
    "dropout out of range": (lambda t, m: ["lora-config", "--allocation", alloc_file(t, {}), "--model", m, "--dropout", "1.5"], "--dropout 1.5"),
    "allocation is not JSON": (lambda t, m: ["lora-config", "--allocation", _text(t, "{ranks: [4, 4"), "--model", m], "is not valid JSON"),
    # check-pattern
    "pattern value not positive": (lambda t, m: ["check-pattern", "--model", m, "--pattern", _text(t, '{"q_proj": 0}')], "is not a positive number"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, cli, tmp_path, model_json):
    build, expected = CASES[case]
    argv = build(tmp_path, model_json("llama-tiny"))
    out = tmp_path / "out" / "result.json"
    if argv[0] != "check-pattern":
        argv = argv + ["--out", str(out)]
    before = set(tmp_path.rglob("*"))
    code, _, err = cli(*argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert not out.exists()
    assert set(tmp_path.rglob("*")) - before <= {tmp_path / "out"}  # no temp file left behind


def test_real_process_exit_code_and_single_line(tmp_path):
    """Through `python -m lorarank`, as a user or Snakemake calls it."""
    r = subprocess.run([sys.executable, "-m", "lorarank", "allocate", "--strategy", "uniform", "--budget", "18",
                        "--num-layers", "4", "--out", str(tmp_path / "a.json")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "remainder 2" in r.stderr
    assert not (tmp_path / "a.json").exists()
