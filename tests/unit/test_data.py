"""prepare-data on real GSM8K text and on the synthetic generator; one schema for every source."""

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import GSM8K_DIR
from lorarank.data import prepare
from lorarank.evaluation.gsm8k import extract_answer, is_correct
from lorarank.io import sha256_file


def test_local_gsm8k(cli, tmp_path):
    code, out, err = cli("prepare-data", "--source", "local", "--path", GSM8K_DIR, "--out", tmp_path / "d")
    assert code == 0, err
    test = pd.read_parquet(tmp_path / "d" / "test.parquet")
    train = pd.read_parquet(tmp_path / "d" / "train.parquet")
    assert list(test.columns) == ["idx", "question", "answer", "gold"]
    assert (len(train), len(test)) == (7273, 1319)  # 200 training rows are validation, by default
    assert test.loc[0, "gold"] == "18" and test["idx"].tolist() == list(range(1319))
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    # the published hashes of the real files (../shared/data/gsm8k/README.md)
    assert m["inputs"]["test"]["sha256"] == "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
    assert m["counts"] == {"warmup": 0, "train": 7273, "validation": 200, "test": 1319} and m["source"] == "local"


def test_warmup_split_is_set_aside_from_train(cli, tmp_path):
    # the tiny model's warm-up and the LoRA-SFT/GRPO arms must not see the same rows
    assert cli("prepare-data", "--source", "local", "--path", GSM8K_DIR, "--warmup-fraction", 0.25,
               "--out", tmp_path / "d")[0] == 0
    warm = pd.read_parquet(tmp_path / "d" / "warmup.parquet")
    train = pd.read_parquet(tmp_path / "d" / "train.parquet")
    assert len(warm) == int(0.25 * 7473) and len(warm) + len(train) + 200 == 7473  # 200: validation, by default
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
               "--validation", 10, "--out", tmp_path / "d")[0] == 0
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
    (d / "train.jsonl").write_text(content * 3)  # rows enough for a validation row
    (d / "test.jsonl").write_text(content)
    code, _, err = cli("prepare-data", "--source", "local", "--path", d, "--validation", 1, "--out", tmp_path / "out")
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
                   "--validation", 40, "--out", tmp_path / name)[0] == 0
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


def _splits(d):
    return {s: pd.read_parquet(d / f"{s}.parquet") for s in ("warmup", "train", "validation", "test")}


def test_validation_is_the_training_splits_last_rows_and_no_other_split_holds_its_questions(cli, tmp_path):
    # GSM8K: the warm-up takes the first rows, validation the last, the arms train on the rows between
    assert cli("prepare-data", "--source", "local", "--path", GSM8K_DIR, "--warmup-fraction", 0.25, "--validation", 500,
               "--out", tmp_path / "g")[0] == 0
    source = [json.loads(line)["question"] for line in (Path(GSM8K_DIR) / "train.jsonl").read_text().splitlines()
              if line.strip()]
    f = _splits(tmp_path / "g")
    k = int(0.25 * 7473)
    assert f["warmup"]["question"].tolist() == source[:k]
    assert f["train"]["question"].tolist() == source[k:-500]
    assert f["validation"]["question"].tolist() == source[-500:]
    assert list(f["validation"].columns) == ["idx", "question", "answer", "gold"]
    assert f["validation"]["idx"].tolist() == list(range(500))
    m = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert m["counts"] == {"warmup": k, "train": 7473 - k - 500, "validation": 500, "test": 1319}
    assert (m["validation"], m["validation_dropped"]) == (500, 0)
    assert m["sha256"]["validation"] == sha256_file(tmp_path / "g" / "validation.parquet")
    # synthetic, with the warm-up's habit: validation keeps the run's layout, and is disjoint by question
    assert cli("prepare-data", "--source", "synthetic", "--n-train", 400, "--n-test", 40, "--warmup-fraction", 0.5,
               "--informal-items", "apples,eggs", "--validation", 60, "--out", tmp_path / "s")[0] == 0
    f = _splits(tmp_path / "s")
    assert [len(f[s]) for s in ("warmup", "train", "validation", "test")] == [200, 140, 60, 40]
    questions = set(f["validation"]["question"])
    assert len(questions) == 60 and not any(questions & set(f[s]["question"]) for s in ("warmup", "train", "test"))
    assert f["validation"]["answer"].str.contains(r"\n#### \d+$").all()


def test_a_validation_question_another_split_repeats_is_dropped(cli, tmp_path):
    # a source with repeats: a validation question the arms train on (or test holds) would reward memorising it
    d = tmp_path / "src"
    d.mkdir()
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(10)] + [{"question": "q3", "answer": "#### 3"}]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "test.jsonl").write_text(json.dumps({"question": "q9", "answer": "#### 9"}) + "\n")
    assert cli("prepare-data", "--source", "local", "--path", d, "--validation", 3, "--out", tmp_path / "o")[0] == 0
    f = _splits(tmp_path / "o")
    assert f["validation"]["question"].tolist() == ["q8"] and f["validation"]["idx"].tolist() == [0]
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["counts"]["validation"] == 1 and m["validation_dropped"] == 2


@pytest.mark.parametrize("argv,expected", [
    (["--validation", 0], "--validation: 0 is not positive (a positive integer is required)"),
    (["--n-train", 600, "--warmup-fraction", 0.5, "--validation", 300],
     "--validation 300 leaves no training rows for the arms: the train split has 600 rows (--n-train), "
     "the warm-up takes 300 (--warmup-fraction 0.5), validation 300 (at most 299)"),
    (["--source", "local", "--path", GSM8K_DIR, "--validation", 7473],
     "--validation 7473 leaves no training rows for the arms: the train split has 7473 rows, the warm-up takes 0"),
])
def test_a_validation_split_that_leaves_no_training_rows_is_refused_in_one_line(cli, tmp_path, argv, expected):
    code, _, err = cli("prepare-data", *argv, "--out", tmp_path / "d")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists()


def test_the_hubs_split_is_counted_once_loaded_and_refused_before_anything_is_written(cli, tmp_path, monkeypatch):
    frame = pd.DataFrame({"question": [f"q{i}" for i in range(50)], "answer": [f"#### {i}" for i in range(50)]})
    monkeypatch.setattr(prepare, "from_hub", lambda *a: ({"train": frame, "test": frame.iloc[:5]},
                                                         {"train": "f0", "test": "f1"}))
    code, _, err = cli("prepare-data", "--source", "hub", "--validation", 50, "--out", tmp_path / "h")
    assert code == 2 and "--validation 50 leaves no training rows for the arms: the train split has 50 rows" in err
    assert not (tmp_path / "h").exists()
