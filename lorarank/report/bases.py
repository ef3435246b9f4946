"""`lorarank combine-bases`: the study's verdicts and accuracies across base models (warm-up seeds).

    python -m lorarank combine-bases --base default results/default/summary/{verdicts.json,results.csv} \
        --base default.warmup1 results/default.warmup1/summary/{verdicts.json,results.csv} --out results/default/bases

Every arm of the tiny study inherits one base model (the tiny model built and SFT-warmed here), so a
verdict from one study is a verdict about one draw of it: on another machine, before the numerics profile,
the warm-up came out differently and GRPO uniform scored 25.5 and 28.5 strict there against 31.5 and 37.0
here, more than any arm effect. With
`warmup.seeds` listing several, the workflow runs the whole study once per base model and this command
puts them together. The base model is the outer level and the seed the inner: each base model trains at
seeds of its own (`lorarank.workflow_config.training_seed`), each base's value of a claim or an accuracy
is its seed mean, and every interval here is a t interval across base models (df = bases − 1). For a
balanced nested design that is the exact interval of the grand mean under the normal model with base and
seed effects, so both levels of variance enter; with one base model there is no such interval. Shared by
every base, and so held fixed (conditioned on), as within one study: the data, the test questions and the
random arm's one draw of ranks (`allocation.random.seed`, part of that arm's definition).
The claims and their rule are each base's (`lorarank.report.verdicts`, the settings its summarize used).
Outputs: results.md, results.csv (one row per arm), verdicts.json (with the sha256 of every input).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lorarank import names
from lorarank.errors import UserError
from lorarank.io import atomic_path, sha256_file
from lorarank.report import verdicts
from lorarank.report.stats import holm, seed_level

MODES = ("strict", "flexible")
# the declared rule, its unit the base model
BASE_RULE = (verdicts.RULE.replace("seed-level", "base-model-level").replace("2 seeds", "2 base models")
             .replace("no run-level interval", "no interval across base models"))
COLUMNS = ["regime", "arm", "versus", "seeds", *(f"acc_{m}" for m in MODES), *(f"diff_{m}" for m in MODES)]


def load(bases: list[list[str]]) -> tuple[dict, pd.DataFrame]:
    """(base name -> verdicts record, the bases' accuracy rows with a `base` column), each base checked to be
    the same study: the same verdict settings and the same arms."""
    if len(bases) < 2:
        raise UserError(f"--base given {len(bases)} time(s): combining needs at least 2 base models")
    records, tables = {}, []
    for name, verdicts_json, results_csv in bases:
        if names.experiment_problem(name):
            raise UserError(f"--base {name!r}: not a base model's name (allowed: {names.EXPERIMENT_RULE})")
        if name in records:
            raise UserError(f"--base {name} is given twice (allowed: each base model once)")
        records[name] = verdicts.read_record(verdicts_json)
        try:
            df = pd.read_csv(results_csv)
        except (OSError, ValueError) as e:
            raise UserError(f"results {results_csv!r} cannot be read as a results.csv: {e}") from None
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise UserError(f"results {results_csv!r} lacks the columns {missing} (written by `lorarank summarize`?)")
        tables.append(df[COLUMNS].assign(base=name))
    first = next(iter(records))
    for name, rec in records.items():
        if rec["settings"] != records[first]["settings"]:
            raise UserError(f"base {name} was judged with other settings than base {first} ({rec['settings']} vs "
                            f"{records[first]['settings']}): the bases must be one config's")
    df = pd.concat(tables, ignore_index=True)
    arms = {b: sorted(zip(g["regime"], g["arm"])) for b, g in df.groupby("base", sort=False)}
    for name, a in arms.items():
        if a != arms[first]:
            raise UserError(f"base {name} has other arms than base {first}: the bases must be one config's")
    return records, df


def across(df: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: its per-base seed means and their mean with a t interval across base models; the
    difference against its reference likewise, with a t-test across bases, Holm-adjusted within the regime."""
    rows = []
    for (regime, arm), g in df.groupby(["regime", "arm"], sort=False):
        row = {"regime": regime, "arm": arm, "versus": g["versus"].iloc[0], "bases": len(g),
               "seeds_per_base": ";".join(f"{b}={int(s)}" for b, s in zip(g["base"], g["seeds"]))}
        for mode in MODES:
            for what in ("acc", "diff"):
                values = g[f"{what}_{mode}"].dropna().astype(float).tolist()
                sl = seed_level(values) if values else {"mean": None, "low": None, "high": None, "p": None}
                if what == "acc" and sl["low"] is not None:  # an accuracy lies in [0, 1], whatever a t interval says
                    sl = sl | {"low": max(0.0, sl["low"]), "high": min(1.0, sl["high"])}
                per_base = {b: float(v) for b, v in zip(g["base"], g[f"{what}_{mode}"]) if not pd.isna(v)}
                row |= {f"{what}_{mode}": sl["mean"], f"{what}_low_{mode}": sl["low"], f"{what}_high_{mode}": sl["high"],
                        f"{what}_per_base_{mode}": verdicts.per_seed_text(per_base)}
                if what == "diff":
                    row[f"p_base_{mode}"] = sl["p"]
        rows.append(row)
    out = pd.DataFrame(rows)
    for mode in MODES:
        out[f"p_holm_{mode}"] = None
        for regime in out["regime"].unique():
            tested = (out["regime"] == regime) & out[f"p_base_{mode}"].notna()
            if tested.any():
                out.loc[tested, f"p_holm_{mode}"] = holm([float(x) for x in out.loc[tested, f"p_base_{mode}"]])
    return out


def _interval(mean, low, high, signed: bool = False) -> str:
    if mean is None or pd.isna(mean):
        return "—"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    text = fmt.format(100 * float(mean))
    if low is None or pd.isna(low):
        return text + " (no spread across base models)"
    return f"{text} [{fmt.format(100 * float(low))}, {fmt.format(100 * float(high))}]"


def markdown(names: list[str], rows: list[dict], m: int, settings: verdicts.VerdictSettings,
             table: pd.DataFrame) -> str:
    level = 1 - settings.alpha / max(1, m)

    def per_base(text, fmt="{:.1f}"):
        return ", ".join(fmt.format(100 * v) for v in verdicts.parse_per_seed(text).values()) or "—"

    lines = ["# Across base models", "",
             f"{len(names)} base models ({', '.join(f'`{n}`' for n in names)}: the tiny model built and warmed up "
             "with each of `warmup.seeds`), each a complete study with its own seeds. A base model's value is its "
             "seed mean; every interval is a t interval across base models (the unit is the base model: what "
             "another warm-up would change), so a claim about a regime is checked across base models, not one draw. "
             "Each base's own report (results/<base>/summary/results.md) has the intervals across its seeds.", "",
             "## Verdicts across base models", "", f"Rule (each base's): {BASE_RULE}",
             "", f"Here m = {m} (the claims with at least 2 base models), α = {settings.alpha}: intervals at "
             f"{100 * level:.4g}%. Minimums as in each base's report. Base models needed (inconclusive claims): base "
             f"models at which a true effect equal to the minimum, with the observed spread between base models, "
             f"excludes 0 at the adjusted level with probability {settings.power:.0%} (noncentral t).", ""]
    lines += verdicts.table(rows, "base")
    lines += ["", "## Accuracy across base models", "",
              "Strict accuracy (%), per base model its seed mean; the mean across base models with a 95% t interval; "
              "the difference against the arm's reference, per base model its seed-mean paired difference, and "
              "across base models a t interval and t-test (Holm within the regime).", "",
              "| regime | arm | strict, per base | mean [95% t CI] | Δ vs | Δ per base | Δ mean [95% t CI] (Holm p) |",
              "|" + "---|" * 7]
    for r in table.to_dict("records"):
        holm_p = r["p_holm_strict"]
        delta = _interval(r["diff_strict"], r["diff_low_strict"], r["diff_high_strict"], signed=True)
        if holm_p is not None and not pd.isna(holm_p):
            delta += f" ({float(holm_p):.3g})"
        lines.append(f"| {r['regime']} | {r['arm']} | {per_base(r['acc_per_base_strict'])} | "
                     f"{_interval(r['acc_strict'], r['acc_low_strict'], r['acc_high_strict'])} | "
                     f"{r['versus'] if isinstance(r['versus'], str) else '—'} | "
                     f"{per_base(r['diff_per_base_strict'], '{:+.1f}')} | {delta if isinstance(r['versus'], str) else '—'} |")
    return "\n".join(lines) + "\n"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", nargs=3, action="append", required=True, dest="bases",
                   metavar=("NAME", "VERDICTS", "RESULTS"),
                   help="one base model's study: its name, its summary's verdicts.json and results.csv; once per base")
    p.add_argument("--out", required=True, help="output directory")


def run(args) -> int:
    records, df = load(args.bases)
    settings = verdicts.VerdictSettings(**next(iter(records.values()))["settings"])
    claims = verdicts.base_level(records)
    rows, m = verdicts.judge(claims, settings, unit="base")
    table = across(df)
    record = verdicts.record(claims, rows, m, settings, unit="base") | {
        # what was combined, pinned: each base's files are in its own archive
        "inputs": {name: {"verdicts": sha256_file(v), "results": sha256_file(r)} for name, v, r in args.bases}}
    text = markdown(list(records), rows, m, settings, table)  # everything built before anything is written
    out = Path(args.out)
    with atomic_path(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out / "verdicts.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(json.dumps({r["claim"]: r["verdict"] for r in rows}))
    return 0
