"""`lorarank select-rate`: an arm's learning rate, chosen on the validation split by a rule the config names.

    python -m lorarank select-rate --manifest results/x/data/manifest.json \
        --eval results/x/eval/validation/grpo/uniform/ratio/lr0.001/seed0/metrics.json \
        --eval results/x/eval/validation/grpo/uniform/ratio/lr0.003/seed0/metrics.json \
        --metric strict --rule best --out results/x/selection/grpo/uniform/ratio.json

Learning rate is the largest confound of an adapter comparison: once each method's rate is tuned, LoRA
variants land close together (README: "Learning rate as a study axis"). So every arm runs at each rate of
its list on the selection seed(s), each run is evaluated on the validation split, and the rate this command
chooses is the one the arm's seeds are trained and tested at. What each evaluation is (arm, seed, rate,
split) comes from its metrics.json, never its path; an evaluation of any split other than the manifest's
validation split is refused, so test accuracy can never choose anything.

Rules: `best`, the highest mean validation accuracy over the selection seeds (a tie goes to the smaller
rate: the gentler update, and a deterministic answer); `one-se`, the smallest rate whose mean is within one
standard error (binomial, over the questions of every selection seed) of the best: a rate that is not
distinguishably worse, preferred when the curve is flat.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lorarank.errors import UserError
from lorarank.io import read_json, write_json
from lorarank.study import arm_key, read_record

RULES = ("best", "one-se")
METRICS = ("strict", "flexible")


def rate_name(lr: float) -> str:
    """A rate as its run directory names it (`lr0.001`), and as the workflow's lists give it: 6 significant digits."""
    return f"{float(lr):g}"


def curve(evaluations: list[dict], metric: str) -> list[dict]:
    """Per rate (ascending): the validation accuracy of each selection seed and their mean."""
    by_rate: dict[float, dict] = {}
    for m in evaluations:
        by_rate.setdefault(m["learning_rate"], {})[str(m["identity"]["seed"])] = m[f"accuracy_{metric}"]
    return [{"lr": lr, "name": rate_name(lr), "seeds": dict(sorted(accs.items())),
             "mean": sum(accs.values()) / len(accs)} for lr, accs in sorted(by_rate.items())]


def choose(points: list[dict], rule: str, n_questions: int) -> dict:
    """The point (of `curve`) the rule picks."""
    best = max(points, key=lambda p: (p["mean"], -p["lr"]))  # a tie: the smaller rate
    if rule == "best":
        return best
    k = len(best["seeds"])
    se = math.sqrt(best["mean"] * (1 - best["mean"]) / (n_questions * k))
    return min((p for p in points if p["mean"] >= best["mean"] - se), key=lambda p: p["lr"])


def load(paths: list[str], manifest: dict) -> list[dict]:
    """The evaluations, checked: one arm, the validation split of this manifest, the same questions, a
    recorded rate, no (rate, seed) twice."""
    hashes = manifest.get("sha256") if isinstance(manifest, dict) else None
    want = hashes.get("validation") if isinstance(hashes, dict) else None
    if not isinstance(want, str):
        raise UserError("--manifest has no validation split (prepared before lorarank 0.3: rerun prepare-data)")
    out, seen = [], set()
    for p in paths:
        m = read_record(p, "metrics file")
        for key in ("learning_rate", "data", "subset_sha256", "accuracy_strict", "accuracy_flexible", "n"):
            if m.get(key) is None:
                raise UserError(f"metrics file {p!r} has no {key!r} (an evaluation of a training run, by lorarank 0.3+)")
        numbers = [m[k] for k in ("learning_rate", "accuracy_strict", "accuracy_flexible", "n")]
        if not (isinstance(m["data"], dict) and isinstance(m["data"].get("sha256"), str)
                and isinstance(m["subset_sha256"], str) and isinstance(m["n"], int)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)):
            raise UserError(f"metrics file {p!r} is malformed: data.sha256 and subset_sha256 must be text, "
                            f"learning_rate and the accuracies numbers, n a whole number")
        if m["data"]["sha256"] != want:
            split = next((s for s, h in hashes.items() if h == m["data"]["sha256"]), "an unknown file")
            raise UserError(f"metrics file {p!r} evaluated {split}, not the validation split: rates are chosen "
                            f"on validation only")
        point = (m["learning_rate"], m["identity"]["seed"])
        if point in seen:
            raise UserError(f"two evaluations are rate {rate_name(point[0])} seed {point[1]}: {p!r} and another")
        seen.add(point)
        out.append(m)
    arms = {arm_key(m["identity"]).name for m in out}
    if len(arms) != 1:
        raise UserError(f"--eval files are of several arms ({', '.join(sorted(arms))}): one arm per selection")
    if len({m["subset_sha256"] for m in out}) != 1:
        raise UserError("--eval files were evaluated on different questions: a rate comparison needs the same ones")
    seeds = {}
    for m in out:
        seeds.setdefault(m["learning_rate"], set()).add(m["identity"]["seed"])
    if len({frozenset(s) for s in seeds.values()}) != 1:
        raise UserError("--eval files cover different seeds at different rates: every rate needs every selection seed")
    return out


def select(paths: list[str], manifest_path: str, metric: str, rule: str) -> dict:
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r} is not a grading (allowed: {', '.join(METRICS)})")
    if rule not in RULES:
        raise UserError(f"--rule {rule!r} is not a selection rule (allowed: {', '.join(RULES)})")
    evaluations = load(paths, read_json(manifest_path, "data manifest"))
    points = curve(evaluations, metric)
    n = evaluations[0]["n"]
    chosen = choose(points, rule, n)
    return {"arm": arm_key(evaluations[0]["identity"]).name, "split": "validation", "metric": metric, "rule": rule,
            "n": n, "curve": points, "chosen": chosen["lr"], "chosen_name": chosen["name"]}


def read(path: str | Path) -> dict:
    doc = read_json(path, "rate selection")
    for key in ("arm", "curve", "chosen", "rule", "metric", "n"):
        if key not in doc:
            raise UserError(f"rate selection {str(path)!r} lacks field {key!r}")
    return doc


def markdown(docs: list[dict]) -> str:
    """The report's section: each arm's validation curve and the rate its seeds were trained and tested at."""
    if not docs:
        return ""
    lines = ["## Learning rates (chosen on the validation split)", "",
             "Each arm ran at every rate of its list on the selection seed(s); the table gives the validation "
             "accuracy at each rate (mean over those seeds) and the rate chosen by the configured rule. Every test "
             "number in this report is at the chosen rate; no test number chose anything.", "",
             "| arm | rule (grading) | validation accuracy % by rate | chosen rate |", "|---|---|---|---|"]
    for d in docs:
        pts = ", ".join(f"{p['name']}: {100 * p['mean']:.1f}" for p in d["curve"])
        lines.append(f"| {d['arm']} | {d['rule']} ({d['metric']}, n = {d['n']}) | {pts} | {rate_name(d['chosen'])} |")
    return "\n".join(lines) + "\n"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval", action="append", required=True, dest="evaluations", metavar="METRICS",
                   help="metrics.json of one run of the arm evaluated on the validation split; once per rate and seed")
    p.add_argument("--manifest", required=True, help="the data manifest (which file is the validation split)")
    p.add_argument("--metric", default="strict", help=f"the grading that decides ({', '.join(METRICS)})")
    p.add_argument("--rule", default="best", help=f"the selection rule ({', '.join(RULES)})")
    p.add_argument("--out", required=True, help="the selection record (JSON)")


def run(args) -> int:
    doc = select(args.evaluations, args.manifest, args.metric, args.rule)
    write_json(args.out, doc)
    print(f"{doc['arm']}: rate {doc['chosen_name']} ({doc['rule']}, validation {doc['metric']}) -> {args.out}")
    return 0
