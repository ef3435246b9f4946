"""Every reader of a file another job (or a user, or an archive) wrote turns malformed input into one line:
truncated, mistyped and random variants of each file, fed through the real command that reads it, end in
exit 0 (the input happened to be valid) or exit 2 with one line on stderr and nothing written; never a
traceback. Hypothesis draws the variants, derandomised so that CI sees the same ones every run.

Readers covered (7): gradient log (allocate), rank log (allocate, adalora-final), run.json (analyze),
metrics.json and predictions.parquet (summarize, select-rate), GSM8K jsonl (prepare-data --source local),
GGUF header (import-model), archive manifest (verify-archive, also with --rerun; its hostile archives:
tests/unit/test_archive_hostile.py). Where hypothesis samples, an exhaustive test also gives every field
(columns of the logs, keys of metrics.json, present or not) every kind of wrong value."""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_grad_log, write_run
from lorarank.training import ranklog

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
                           | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3), max_leaves=8)
column_values = st.one_of(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=1),
                          st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=1),
                          st.lists(st.text(max_size=5), min_size=1, max_size=1),
                          st.lists(st.booleans(), min_size=1, max_size=1),
                          st.lists(st.none(), min_size=1, max_size=1))


def checked(cli, out: Path, *argv):
    """Run a command on the fuzzed input: valid (exit 0) or refused in one line with nothing at `out`."""
    code, _, err = cli(*argv, "--out", out)
    if code != 0:
        assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
        assert not out.exists(), out


def mutate_frame(df: pd.DataFrame, data) -> pd.DataFrame:
    """A column dropped, one column's values replaced by another type, or rows cut."""
    kind = data.draw(st.sampled_from(["drop", "retype", "rows"]))
    col = data.draw(st.sampled_from(list(df.columns)))
    if kind == "drop":
        return df.drop(columns=col)
    if kind == "rows":
        return df.iloc[:data.draw(st.integers(0, len(df)))]
    value = data.draw(column_values)[0]
    return df.assign(**{col: [value] * len(df)})


def write_mutated(path: Path, df: pd.DataFrame, data) -> None:
    try:
        mutate_frame(df, data).to_parquet(path)
    except Exception:  # pyarrow cannot store this mix: the reader then sees a truncated file instead
        df.to_parquet(path)
    if data.draw(st.booleans()):
        raw = path.read_bytes()
        path.write_bytes(raw[:data.draw(st.integers(0, len(raw)))])


@FUZZ
@given(data=st.data())
def test_gradient_logs(cli, data):
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        good = pd.read_parquet(write_grad_log(t / "good.parquet", np.ones((2, 2)) + 0.5))
        write_mutated(t / "g.parquet", good, data)
        checked(cli, t / "a.json", "allocate", "--strategy", "proportional", "--budget", 16, "--num-layers", 2,
                "--grad-log", t / "g.parquet")


@FUZZ
@given(data=st.data())
def test_rank_logs(cli, data):
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        good = ranklog.frame([(s, layer, m, 4, 56) for s in (0, 5) for layer in range(2) for m in MODULES])
        write_mutated(t / "r.parquet", good, data)
        checked(cli, t / "a.json", "allocate", "--strategy", "adalora-final", "--budget", 16, "--num-layers", 2,
                "--rank-log", t / "r.parquet")


BAD_VALUES = ["text", True, None, float("nan"), float("inf"), 2**40, -1, 1.5]


@pytest.mark.parametrize("reader", ["gradient log", "rank log"])
def test_every_column_of_a_log_given_every_wrong_type(cli, tmp_path, reader):
    # exhaustive where hypothesis samples: each column of the contract, each kind of wrong value
    if reader == "gradient log":
        good = pd.read_parquet(write_grad_log(tmp_path / "good.parquet", np.ones((2, 2)) + 0.5))
        flag = ["--strategy", "proportional", "--grad-log"]
    else:
        good = ranklog.frame([(s, layer, m, 4, 56) for s in (0, 5) for layer in range(2) for m in MODULES])
        flag = ["--strategy", "adalora-final", "--rank-log"]
    refused = 0
    for col in good.columns:
        for value in BAD_VALUES:
            path, out = tmp_path / f"{col}-{value}.parquet", tmp_path / "a.json"
            good.assign(**{col: [value] * len(good)}).to_parquet(path)
            code, _, err = cli("allocate", *flag[:2], "--budget", 16, "--num-layers", 2, flag[2], path, "--out", out)
            assert code in (0, 2) and (code == 0 or len(err.strip().splitlines()) == 1), (col, value, err)
            refused += code == 2
            out.unlink(missing_ok=True)
    assert refused >= len(good.columns) * 3  # text, booleans and None are wrong in every column


def mutate_doc(doc: dict, data) -> dict:
    """One key of `doc` (or of its identity) removed or given a random JSON value, or the whole replaced."""
    if data.draw(st.integers(0, 9)) == 0:
        return data.draw(json_values)
    doc = json.loads(json.dumps(doc))
    target = doc["identity"] if data.draw(st.booleans()) else doc
    key = data.draw(st.sampled_from(sorted(target)))
    if data.draw(st.booleans()):
        del target[key]
    else:
        target[key] = data.draw(json_values)
    return doc


@FUZZ
@given(data=st.data())
def test_run_records(cli, data):
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        runs = []
        for strategy in ("uniform", "proportional"):
            log = write_grad_log(write_run(t / strategy, strategy=strategy), np.ones((3, 2)) + 0.5)
            (t / strategy / "trainer_log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
            runs.append(["--run", t / strategy / "run.json", log, t / strategy / "trainer_log.jsonl"])
        record = t / "proportional/run.json"
        record.write_text(json.dumps(mutate_doc(json.loads(record.read_text()), data)))
        checked(cli, t / "stats", "analyze", *runs[0], *runs[1])


def summary_evals(t: Path) -> list[list]:
    """A base model's and a uniform arm's evaluation, valid for `summarize`."""
    from lorarank.study import run_identity

    evals = []
    for kind, strategy in (("base", None), ("grpo", "uniform")):
        ident = run_identity(kind, strategy, {"name": "ratio", "value": 2.0} if strategy else None,
                             0 if strategy else None, {"path": "m", "sha256": "0" * 64})
        (t / kind).mkdir(exist_ok=True)
        (t / kind / "metrics.json").write_text(json.dumps({"identity": ident, "seed": 0, "n": 4, "split": "test"}))
        pd.DataFrame({"idx": range(4), "correct_strict": [True, False] * 2,
                      "correct_flexible": [True] * 4}).to_parquet(t / kind / "predictions.parquet")
        evals.append(["--eval", t / kind / "metrics.json", t / kind / "predictions.parquet"])
    return evals


@FUZZ
@given(data=st.data())
def test_metrics_and_predictions(cli, data):
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        evals = summary_evals(t)
        if data.draw(st.booleans()):
            m = t / "grpo/metrics.json"
            m.write_text(json.dumps(mutate_doc(json.loads(m.read_text()), data)))
        else:
            p = t / "grpo/predictions.parquet"
            write_mutated(p, pd.read_parquet(p), data)
        checked(cli, t / "summary", "summarize", *evals[0], *evals[1])


WRONG_JSON = [None, True, 7, 1.5, "text", [], ["x"], {}, {"sha256": 7}, {"validation": []}]


def test_every_field_of_a_metrics_file_given_every_wrong_value(cli, tmp_path):
    # exhaustive over the fields the two readers of metrics.json use, including ones a valid file may lack
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_selection import SHA, metrics

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"sha256": SHA}))
    paths = [metrics(tmp_path, lr, 0, 0.3) for lr in (1e-3, 3e-3)]
    good = json.loads(Path(paths[1]).read_text())
    evals = summary_evals(tmp_path)
    arm = json.loads(Path(evals[1][1]).read_text())
    select = ["select-rate", "--manifest", manifest, *[x for p in paths for x in ("--eval", p)]]
    summarize = ["summarize", *evals[0], *evals[1]]
    assert cli(*select, "--out", tmp_path / "sel.json")[0] == 0  # the unmutated inputs are valid
    assert cli(*summarize, "--out", tmp_path / "summary")[0] == 0
    fields = ["learning_rate", "data", "subset_sha256", "accuracy_strict", "accuracy_flexible", "n", "identity",
              "adapter_info", "seed", "split"]
    for field in fields:
        for value in WRONG_JSON:
            (tmp_path / "sel.json").unlink(missing_ok=True)  # a value that happened to be valid wrote these
            shutil.rmtree(tmp_path / "summary", ignore_errors=True)
            Path(paths[1]).write_text(json.dumps({**good, field: value}))
            checked(cli, tmp_path / "sel.json", *select)
            Path(evals[1][1]).write_text(json.dumps({**arm, field: value}))
            checked(cli, tmp_path / "summary", *summarize)


@FUZZ
@given(data=st.data())
def test_gsm8k_jsonl(cli, data):
    good = "".join(json.dumps({"question": f"q{i}?", "answer": f"#### {i}"}) + "\n" for i in range(40)).encode()
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        (t / "gsm8k").mkdir()
        (t / "gsm8k/test.jsonl").write_bytes(good)
        kind = data.draw(st.sampled_from(["bytes", "cut", "line"]))
        if kind == "bytes":
            raw = data.draw(st.binary(max_size=200))
        elif kind == "cut":
            raw = good[:data.draw(st.integers(0, len(good)))]
        else:  # one line replaced by random JSON
            lines = good.decode().splitlines()
            lines[data.draw(st.integers(0, len(lines) - 1))] = json.dumps(data.draw(json_values))
            raw = ("\n".join(lines) + "\n").encode()
        (t / "gsm8k/train.jsonl").write_bytes(raw)
        checked(cli, t / "data", "prepare-data", "--source", "local", "--path", t / "gsm8k", "--validation", 2,
                "--warmup-fraction", 0.25)


@settings(FUZZ, max_examples=12)
@given(raw=st.binary(max_size=64).map(lambda b: b"GGUF" + b))
def test_gguf_headers(cli, raw):
    pytest.importorskip("gguf")
    with tempfile.TemporaryDirectory() as t:
        (Path(t) / "m.gguf").write_bytes(raw)
        checked(cli, Path(t) / "model", "import-model", "--path", Path(t) / "m.gguf")


@FUZZ
@given(data=st.data())
def test_archive_manifests(cli, data):
    body = b"0.5\n"
    import hashlib

    doc = {"format": "lorarank-archive/1", "experiment": "exp", "code": {"git_commit": None},
           "files": {"a.csv": {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}}}
    with tempfile.TemporaryDirectory() as t:
        tree = Path(t) / "exp"
        tree.mkdir()
        (tree / "a.csv").write_bytes(body)
        if data.draw(st.booleans()):
            mutated = dict(doc)
            key = data.draw(st.sampled_from(sorted(doc)))
            mutated[key] = data.draw(json_values)
            raw = json.dumps(mutated).encode()
        else:
            raw = json.dumps(doc).encode()[:data.draw(st.integers(0, 120))]
        (tree / "MANIFEST.json").write_bytes(raw)
        code, _, err = cli("verify-archive", tree)
        assert code in (0, 1, 2) and "Traceback" not in err, err
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in tree.iterdir()) == ["MANIFEST.json", "a.csv"]
