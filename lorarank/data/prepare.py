"""`lorarank prepare-data`: GSM8K splits as parquet with one schema, whatever the source.

    python -m lorarank prepare-data --source local --path ../shared/data/gsm8k --out data/gsm8k
    python -m lorarank prepare-data --source hub --out data/gsm8k            # openai/gsm8k, main
    python -m lorarank prepare-data --source synthetic --n-train 4000 --n-test 500 --seed 0 --out data/synth

Columns: idx (int32, position in the split), question, answer (the full solution, ending in
`#### N`), gold (the final answer as written after `####`; the grader normalises it when comparing,
so data preparation does not depend on grading rules). `manifest.json` records the source,
the sha256 of every input file (or the hub revision), counts and the seed.

The source's training split is cut three ways: its first rows are the tiny model's warm-up
(`--warmup-fraction`), its last `--validation` rows the validation split on which the workflow makes
every choice (learning rate, ...), and the arms train on the rows between. The test split is read only
to report. A validation question that another split repeats is dropped (manifest: validation_dropped),
as a choice made on it would reward memorising it; GSM8K has none (its 7,473 training questions are
distinct and none is in test) and the generator draws distinct questions (asserted).

The synthetic source writes GSM8K-format arithmetic word problems (add, subtract, multiply; level
k chains k operations) with `<<a+b=c>>` calculator annotations, so that a tiny model can learn the
format and some arithmetic on a CPU and GRPO has a signal to work with.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from lorarank.argtypes import csv_list, positive_int
from lorarank.errors import UserError
from lorarank.io import atomic_path, sha256_file, write_json
from lorarank.options import add_arguments, from_args, opt

SPLITS = ("train", "test")  # as the sources have them
WRITTEN = ("warmup", "train", "validation", "test")  # as prepare-data writes them: warmup, validation from train
COLUMNS = ("idx", "question", "answer", "gold")
FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)

NAMES = [("Ava", "she"), ("Ben", "he"), ("Cara", "she"), ("Dan", "he"), ("Eli", "he"), ("Fay", "she"),
         ("Gus", "he"), ("Hana", "she"), ("Ivan", "he"), ("Jade", "she"), ("Kofi", "he"), ("Lena", "she")]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells", "cards", "eggs"]


def _step(rng: random.Random, value: int, item: str, pron: str) -> tuple[str, str, int]:
    """One operation on the running value: (question sentence, solution line, new value)."""
    # small operands: a 1M-parameter model learns single-digit tables within a 2-minute warm-up
    op = rng.choice(["add", "sub", "mul"] if value <= 5 else ["add", "sub"])
    if op == "add":
        b = rng.randint(1, 9)
        return f"Then {pron} gets {b} more {item}.", f"{value} + {b} = <<{value}+{b}={value + b}>>{value + b}", value + b
    if op == "sub" and value > 1:
        b = rng.randint(1, min(value - 1, 9))
        return f"Then {pron} gives away {b} {item}.", f"{value} - {b} = <<{value}-{b}={value - b}>>{value - b}", value - b
    b = rng.randint(2, 3)
    return (f"Then the number of {item} {pron} has becomes {b} times as large.",
            f"{value} * {b} = <<{value}*{b}={value * b}>>{value * b}", value * b)


def synthetic_problem(rng: random.Random, level: int) -> dict:
    name, pron = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    if rng.random() < 0.25:
        a, b = rng.randint(2, 4), rng.randint(2, 5)
        sentences = [f"{name} buys {a} bags with {b} {item} in each bag."]
        lines = [f"{a} * {b} = <<{a}*{b}={a * b}>>{a * b}"]
        value = a * b
    else:
        value = rng.randint(2, 12)
        sentences, lines = [f"{name} has {value} {item}."], []
    while len(lines) < level:
        q, line, value = _step(rng, value, item, pron)
        sentences.append(q)
        lines.append(line)
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    return {"question": question, "answer": "\n".join(lines) + f"\n#### {value}", "item": item}


def synthetic(n_train: int, n_test: int, levels: list[int], seed: int, informal_items: list[str] = (),
              informal_share: float = 1.0, habit_rows: int = 0) -> dict:
    """Train and test problems (distinct questions, none shared). Among the first `habit_rows` training
    rows (the warm-up's), a share `informal_share` of the solutions about an item in `informal_items` end
    in prose, 'The answer is N.', instead of the '#### N' line: a habit the base model learns from its
    data (as instruct models bring theirs to GSM8K) that the strict grader, like the study's, does not
    accept. Below 1 the habit is a majority, not a rule: greedy decoding follows it, sampling sometimes
    does not, and those samples are what a reward can reinforce. Every other solution, the arms' training
    rows (LoRA-SFT's targets) and the test split, ends in '#### N', the run's layout."""
    import pandas as pd

    rng = random.Random(seed)
    habit = random.Random(seed + 1)  # its own stream: the share does not change which problems are drawn
    seen: set[str] = set()
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        while len(rows) < n:  # distinct questions, and no test question seen in training
            p = synthetic_problem(rng, rng.choice(levels))
            if p["question"] not in seen:
                seen.add(p["question"])
                body, _, gold = p["answer"].rpartition("\n#### ")
                item = p.pop("item")
                if split == "train" and len(rows) < habit_rows and item in informal_items \
                        and habit.random() < informal_share:
                    p["answer"] = f"{body}\nThe answer is {gold}."
                rows.append({**p, "gold": gold})
        out[split] = pd.DataFrame(rows)
    return out


def jsonl_text(path: Path) -> str:
    """A GSM8K jsonl file's text; one UserError line if it is missing or not UTF-8."""
    if not path.is_file():
        raise UserError(f"GSM8K file {str(path)!r} does not exist (a directory with train.jsonl and test.jsonl is needed)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"GSM8K file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None


def read_jsonl(path: Path):
    import pandas as pd

    rows = []
    for n, line in enumerate(jsonl_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise UserError(f"line {n} of {str(path)!r} is not JSON: {e}") from None
        if not isinstance(row, dict) or not {"question", "answer"} <= set(row):
            raise UserError(f"line {n} of {str(path)!r} lacks 'question' or 'answer' (GSM8K rows have both)")
        if not (isinstance(row["question"], str) and isinstance(row["answer"], str)):
            raise UserError(f"line {n} of {str(path)!r}: 'question' and 'answer' must be text")
        rows.append({"question": row["question"], "answer": row["answer"]})
    return pd.DataFrame(rows, columns=["question", "answer"])


def from_hub(hub_id: str, hub_config: str, revision: str | None = None) -> tuple[dict, dict]:
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, hub_config, revision=revision)
    except Exception as e:  # network, auth, missing dataset: all mean the same to the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"dataset {hub_id!r} ({hub_config}) could not be loaded from the hub: {first}") from None
    frames = {s: ds[s].to_pandas()[["question", "answer"]] for s in SPLITS}
    return frames, {s: ds[s]._fingerprint for s in SPLITS}


def with_gold(frame, split: str):
    """The split in the contract's columns: idx (position), question, answer, gold (as written after
    '####', or as the source gives it: the synthetic source knows its answers, informal ones included)."""
    import pandas as pd

    frame = frame.reset_index(drop=True)
    if "gold" not in frame.columns:
        golds = []
        for i, sol in enumerate(frame["answer"]):
            m = FINAL.search(sol.rsplit("\n", 1)[-1])
            if not m:
                raise UserError(f"{split} row {i} has no '#### <number>' final answer line")
            golds.append(m.group(1))  # as written; the grader (lorarank.evaluation.gsm8k) normalises when it compares
        frame["gold"] = golds
    frame.insert(0, "idx", pd.Series(range(len(frame)), dtype="int32"))
    return frame[list(COLUMNS)]


def levels_list(text: str) -> list[int]:
    try:
        levels = [int(x) for x in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of levels 1-4") from None
    if not all(1 <= x <= 4 for x in levels):
        raise argparse.ArgumentTypeError(f"levels {levels} must each be 1-4")
    return levels


@dataclass
class DataSettings:
    """Where the splits come from: the flags of `lorarank prepare-data`, config `data`."""

    source: str = opt("synthetic", "synthetic problems, a local directory of GSM8K jsonl, or the hub dataset",
                      choices=("synthetic", "local", "hub"))
    path: str | None = opt(None, "local: directory with train.jsonl and test.jsonl", when={"source": ("local",)})
    hub_id: str = opt("openai/gsm8k", "hub: dataset id", when={"source": ("hub",)})
    hub_config: str = opt("main", "hub: dataset config", when={"source": ("hub",)})
    revision: str | None = opt(None, "hub: dataset revision (branch, tag or commit)", when={"source": ("hub",)})
    n_train: int = opt(4000, "synthetic: training problems", type=positive_int, when={"source": ("synthetic",)})
    n_test: int = opt(500, "synthetic: test problems", type=positive_int, when={"source": ("synthetic",)})
    levels: list[int] = opt([1, 2], "synthetic: operations per problem, drawn from this list", type=levels_list,
                            when={"source": ("synthetic",)})
    seed: int = opt(0, "synthetic: generator seed", when={"source": ("synthetic",)})
    informal_items: list[str] = opt([], "synthetic: items whose warm-up solutions end in 'The answer is N.' "
                                        "instead of '#### N' (a data habit the strict grader rejects)",
                                    type=csv_list, when={"source": ("synthetic",)})
    informal_share: float = opt(1.0, "synthetic: share of those items' warm-up solutions that end in prose "
                                      "(below 1, sampling sometimes writes '#### N' for them)",
                                when={"source": ("synthetic",)})
    warmup_fraction: float = opt(0.0, "share of the training split set aside (its first rows) for the tiny model's "
                                      "warm-up: the arms train on the rest, which the warm-up never saw")
    validation: int = opt(200, "rows set aside (the training split's last) as the validation split: every choice "
                               "the workflow makes reads them, never test, and no arm trains on them",
                          type=positive_int)

    def check(self) -> None:
        unknown = [i for i in self.informal_items if i not in ITEMS]
        if unknown:
            raise UserError(f"--informal-items {unknown[0]!r} is not an item of the generator (allowed: {', '.join(ITEMS)})")
        if not 0 <= self.informal_share <= 1:
            raise UserError(f"--informal-share {self.informal_share} is outside [0, 1]")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"--warmup-fraction {self.warmup_fraction} is outside [0, 1)")
        if self.informal_items and self.source == "synthetic" and not self.warmup_fraction:
            raise UserError(f"--informal-items {','.join(self.informal_items)} needs --warmup-fraction > 0: the habit "
                            "is written into the warm-up's rows only (the arms train on the run's layout)")
        if self.validation < 1:
            raise UserError(f"--validation {self.validation} is below 1 (a positive number of rows is required)")
        if self.source == "local":
            if not self.path:
                raise UserError("--source local needs --path (a directory with train.jsonl and test.jsonl)")
            for s in SPLITS:
                if not (Path(self.path) / f"{s}.jsonl").is_file():
                    raise UserError(f"--path {self.path!r} has no {s}.jsonl (local GSM8K needs train.jsonl and test.jsonl)")
        n = self.train_rows()
        if n is not None:  # the hub's split is counted once loaded (prepare)
            set_aside(self, n)

    def train_rows(self) -> int | None:
        """The source's training split size where it is known before reading the split (the workflow's
        config check refuses a validation split that leaves the arms nothing before any job runs)."""
        if self.source == "synthetic":
            return self.n_train
        if self.source == "local":  # the rows read_jsonl keeps: blank lines are skipped
            return sum(1 for line in jsonl_text(Path(self.path) / "train.jsonl").splitlines() if line.strip())
        return None


def warmup_rows(settings: DataSettings, n_train: int) -> int:
    """How many of the first training rows are set aside for the warm-up."""
    return int(settings.warmup_fraction * n_train)


def set_aside(settings: DataSettings, n_train: int) -> tuple[int, int]:
    """(warm-up rows, validation rows) taken from a training split of `n_train` rows; refused when the
    arms would have no row left to train on."""
    k, v = warmup_rows(settings, n_train), settings.validation
    if n_train - k - v < 1:
        most = n_train - k - 1
        allowed = f"at most {most}" if most >= 1 else "none: the split is too small for a validation split"
        source = " (--n-train)" if settings.source == "synthetic" else ""
        raise UserError(f"--validation {v} leaves no training rows for the arms: the train split has {n_train} rows"
                        f"{source}, the warm-up takes {k} (--warmup-fraction {settings.warmup_fraction}), validation "
                        f"{v} ({allowed})")
    return k, v


def unseen(frame, *others):
    """The rows of `frame` whose question no frame in `others` holds."""
    seen = set().union(*(set(o["question"]) for o in others))
    return frame[~frame["question"].isin(seen)]


def prepare(settings: DataSettings, out: str | Path) -> dict:
    """Write the parquet splits and manifest.json (last: its presence means the splits are complete)."""
    settings.check()
    inputs: dict = {}
    if settings.source == "synthetic":
        frames = synthetic(settings.n_train, settings.n_test, settings.levels, settings.seed, settings.informal_items,
                           settings.informal_share, habit_rows=warmup_rows(settings, settings.n_train))
    elif settings.source == "local":
        frames = {}
        for s in SPLITS:
            f = Path(settings.path) / f"{s}.jsonl"
            frames[s] = read_jsonl(f)
            inputs[s] = {"path": str(f), "sha256": sha256_file(f)}
    else:
        frames, fingerprints = from_hub(settings.hub_id, settings.hub_config, settings.revision)
        inputs = {s: {"hub_id": settings.hub_id, "config": settings.hub_config, "revision": settings.revision,
                      "fingerprint": fingerprints[s]} for s in SPLITS}
    out = Path(out)
    train, n = frames["train"], len(frames["train"])
    k, v = set_aside(settings, n)  # before anything is written
    # the warm-up keeps its first rows (the synthetic habit is written there), validation takes the last
    validation = unseen(train.iloc[n - v:], train.iloc[:n - v], frames["test"])
    assert settings.source != "synthetic" or len(validation) == v, "the generator draws distinct questions"
    frames = {"warmup": train.iloc[:k], "train": train.iloc[k:n - v], "validation": validation, "test": frames["test"]}
    counts = {}
    for s in WRITTEN:
        frame = with_gold(frames[s], s)
        counts[s] = len(frame)
        with atomic_path(out / f"{s}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    manifest = {
        "source": settings.source, "inputs": inputs, "counts": counts, "seed": settings.seed,
        "levels": settings.levels if settings.source == "synthetic" else None,
        "informal_items": settings.informal_items if settings.source == "synthetic" else None,
        "informal_share": settings.informal_share if settings.source == "synthetic" else None,
        "columns": list(COLUMNS),
        "warmup_fraction": settings.warmup_fraction,
        # rows asked for; counts.validation is what was written, less any question another split repeats
        "validation": settings.validation, "validation_dropped": v - len(validation),
        "sha256": {s: sha256_file(out / f"{s}.parquet") for s in WRITTEN},
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def load_split(path: str | Path, need=("question", "answer")):
    """Read a prepared split (or any parquet with GSM8K columns) as a DataFrame, naming missing columns."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {str(path)!r} does not exist")
    try:
        df = pd.read_parquet(path)
    except Exception as e:
        raise UserError(f"data file {str(path)!r} is not a readable parquet file: {e}") from None
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UserError(f"data file {str(path)!r} lacks column(s) {', '.join(missing)} (needs {', '.join(need)})")
    if "gold" not in df.columns:
        df = with_gold(df[["question", "answer"]], path.name)
    if "idx" not in df.columns:
        df.insert(0, "idx", range(len(df)))
    return df


def configure(p: argparse.ArgumentParser) -> None:
    add_arguments(p, DataSettings)
    p.add_argument("--out", required=True, help="output directory ({warmup,train,validation,test}.parquet, manifest.json)")


def run(args) -> int:
    m = prepare(from_args(DataSettings, args), args.out)
    print(f"{m['source']}: " + ", ".join(f"{s} {m['counts'][s]}" for s in WRITTEN) + f" -> {args.out}")
    return 0
