"""prepare-data on real GSM8K text and on the synthetic generator; one schema for every source."""

import json

import pandas as pd
import pytest

from conftest import GSM8K_DIR
from lorarank.evaluation.gsm8k import extract_answer, is_correct


def test_local_gsm8k(cli, tmp_path):
    code, out, err = cli("prepare-data", "--source", "local", "--path", GSM8K_DIR, "--out", tmp_path / "d")
    assert code == 0, err
    test = pd.read_parquet(tmp_path / "d" / "test.parquet")
    train = pd.read_parquet(tmp_path / "d" / "train.parquet")
    assert list(test.columns) == ["idx", "question", "answer", "gold"]
    assert (len(train), len(test)) == (7473, 1319)
    assert test.loc[0, "gold"] == "18" and test["idx"].tolist() == list(range(1319))
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    # the published hashes of the real files (../shared/data/gsm8k/README.md)
    assert m["inputs"]["test"]["sha256"] == "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
    assert m["counts"] == {"warmup": 0, "train": 7473, "test": 1319} and m["source"] == "local"


def test_warmup_split_is_set_aside_from_train(cli, tmp_path):
    # the tiny model's warm-up and the LoRA-SFT/GRPO arms must not see the same rows
    assert cli("prepare-data", "--source", "local", "--path", GSM8K_DIR, "--warmup-fraction", 0.25,
               "--out", tmp_path / "d")[0] == 0
    warm = pd.read_parquet(tmp_path / "d" / "warmup.parquet")
    train = pd.read_parquet(tmp_path / "d" / "train.parquet")
    assert len(warm) == int(0.25 * 7473) and len(warm) + len(train) == 7473
    assert not set(warm["question"]) & set(train["question"])
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert m["counts"]["warmup"] == len(warm) and m["warmup_fraction"] == 0.25


def test_synthetic_is_seeded_gsm8k_format_and_disjoint(cli, tmp_path):
    for name in ("a", "b"):
        assert cli("prepare-data", "--source", "synthetic", "--n-train", 300, "--n-test", 50, "--seed", 3,
                   "--out", tmp_path / name)[0] == 0
    a = pd.read_parquet(tmp_path / "a" / "train.parquet")
    b = pd.read_parquet(tmp_path / "b" / "train.parquet")
    pd.testing.assert_frame_equal(a, b)
    test = pd.read_parquet(tmp_path / "a" / "test.parquet")
    assert not set(test["question"]) & set(a["question"])
    assert list(a.columns) == ["idx", "question", "answer", "gold"]
    for sol, gold in zip(a["answer"], a["gold"]):
        assert sol.rstrip().splitlines()[-1].startswith("#### ")
        assert is_correct(extract_answer(sol, "strict"), gold)
        # the arithmetic in every calculator annotation is right
        for expr in pd.Series([sol]).str.extractall(r"<<([^=]+)=(\d+)>>").itertuples():
            assert eval(expr[1]) == int(expr[2])
    other = cli("prepare-data", "--source", "synthetic", "--n-train", 300, "--n-test", 50, "--seed", 4,
                "--out", tmp_path / "c")
    assert other[0] == 0
    assert not pd.read_parquet(tmp_path / "c" / "train.parquet").equals(a)


def test_levels_set_the_number_of_steps(cli, tmp_path):
    assert cli("prepare-data", "--source", "synthetic", "--n-train", 50, "--n-test", 10, "--levels", "3",
               "--out", tmp_path / "d")[0] == 0
    df = pd.read_parquet(tmp_path / "d" / "train.parquet")
    assert all(s.count("<<") == 3 for s in df["answer"])


@pytest.mark.parametrize("content,expected", [
    ('{"question": "q"}\n', "lacks 'question' or 'answer'"),
    ("not json\n", "is not JSON"),
    ('{"question": "q", "answer": "no final line"}\n', "no '#### <number>'"),
])
def test_bad_local_files(cli, tmp_path, content, expected):
    d = tmp_path / "src"
    d.mkdir()
    (d / "train.jsonl").write_text(content)
    (d / "test.jsonl").write_text(content)
    code, _, err = cli("prepare-data", "--source", "local", "--path", d, "--out", tmp_path / "out")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_hub_unreachable_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code, _, err = cli("prepare-data", "--source", "hub", "--hub-id", "openai/gsm8k-does-not-exist", "--out", tmp_path / "h")
    assert code == 2 and "could not be loaded from the hub" in err and len(err.strip().splitlines()) == 1


def test_the_informal_habit_is_written_into_the_warmup_rows_only(cli, tmp_path):
    def prep(name, share):
        assert cli("prepare-data", "--source", "synthetic", "--n-train", 400, "--n-test", 40, "--levels", "1",
                   "--informal-items", "apples,eggs,cards", "--informal-share", share, "--warmup-fraction", 0.5,
                   "--out", tmp_path / name)[0] == 0
        return [pd.read_parquet(tmp_path / name / f"{s}.parquet") for s in ("warmup", "train", "test")]

    warm, train, test = prep("a", 0.6)
    prose = warm["answer"].str.contains(r"\nThe answer is \d+\.$")
    informal = warm["question"].str.contains(r"\b(?:apples|eggs|cards)\b")
    assert not (prose & ~informal).any()  # only the named items
    assert 0.45 < prose[informal].mean() < 0.75  # about the share
    for frame in (train, test):  # the arms' rows and the test split keep the run's layout
        assert frame["answer"].str.contains(r"\n#### \d+$").all()
    # every row keeps its gold answer, whichever ending it has
    assert all(a.endswith(f"The answer is {g}.") or a.endswith(f"#### {g}") for a, g in zip(warm["answer"], warm["gold"]))
    # the share changes endings, never which problems are drawn
    warm_all, train_all, _ = prep("b", 1.0)
    assert warm_all["question"].equals(warm["question"]) and train_all.equals(train)
    assert warm_all["answer"].str.contains("The answer is")[informal].all()


def test_informal_items_without_warmup_rows_are_refused(cli, tmp_path):
    code, _, err = cli("prepare-data", "--source", "synthetic", "--informal-items", "apples", "--out", tmp_path / "d")
    assert code == 2 and "--informal-items apples needs --warmup-fraction > 0" in err
    assert not (tmp_path / "d").exists()
