"""The study's claims judged by one declared rule: supported, contradicted or inconclusive, at the level of runs.

    python -m lorarank summarize ... --alpha 0.05 --min-accuracy 0.03 --min-share 0.05 --min-correlation 0.3 --power 0.8

Every interval here has the seed (the run) as its unit: a claim is about what another training run would
do, so the between-run variance must enter it. Accuracy claims use the per-seed paired differences on the
same questions (results.csv `per_seed_diff_strict`); the SFT-vs-GRPO top-30% share uses a Welch interval
over the two regimes' seeds (different runs, unpaired); correlations are combined across seeds on Fisher's z.
With m claims judged the intervals are Bonferroni-adjusted (level 1 − alpha/m), which holds for any
dependence between the claims. An inconclusive claim says how many seeds the observed between-seed
spread implies for the configured minimum effect (noncentral t). `record` is what `summarize` writes as
verdicts.json (each claim with its per-seed values), and `base_level` turns several base models' records
into claims whose unit is the base model (`lorarank combine-bases`). Plain data in, plain data out.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import asdict, dataclass, field

from lorarank.errors import UserError
from lorarank.options import opt
from lorarank.report.stats import seed_level

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive", "not run"
MAX_SEEDS = 10000  # "seeds needed" beyond this is reported as more than this
FEW_STEPS = "too few informative steps: not interpreted"  # analysis flags such statistics `few_steps`
FORMAT = "lorarank-verdicts/1"
# the unit an interval is taken over: (one, several, why a lone one has no interval), as the report words it
UNITS = {"seed": ("seed", "seeds", "no run-level interval"),
         "base": ("base model", "base models", "no interval across base models")}

RULE = ("With m claims judged, each claim's seed-level interval is taken at level 1 − α/m (Bonferroni). "
        "**Supported** if it excludes 0 in the claimed direction and |estimate| ≥ the claim's minimum; "
        "**contradicted** if it excludes 0 in the opposite direction, or lies entirely inside (−minimum, +minimum); "
        "otherwise **inconclusive** (fewer than 2 seeds: inconclusive, no run-level interval).")


@dataclass
class VerdictSettings:
    """How claims are judged: the flags of `lorarank summarize` (config `report`)."""

    alpha: float = opt(0.05, "family-wise error rate of the verdicts: each claim's interval is taken at level "
                             "1 − alpha/m over the m claims judged (Bonferroni); also the accuracy tables' test level")
    min_accuracy: float = opt(0.03, "smallest accuracy difference that counts as an effect, as a fraction of "
                                    "questions (0.03 = 3 points)")
    min_share: float = opt(0.05, "smallest SFT-minus-GRPO difference in the gradient share of the top 30 percent "
                                 "of layers that counts as 'peaked', as a fraction (0.05 = 5 points)")
    min_correlation: float = opt(0.3, "smallest |r| of allocated rank vs share shift (weight metric) that counts "
                                      "as the relation surviving")
    power: float = opt(0.8, "power at which 'seeds needed' would detect the minimum effect at the adjusted level")

    def check(self) -> None:
        if not 0 < self.alpha <= 0.5:
            raise UserError(f"--alpha {self.alpha} is outside (0, 0.5]")
        for name, value, top in (("min-accuracy", self.min_accuracy, 1), ("min-share", self.min_share, 1)):
            if not 0 < value <= top:
                raise UserError(f"--{name} {value} is outside (0, 1] (a fraction: 0.03 = 3 points)")
        if not 0 < self.min_correlation < 1:
            raise UserError(f"--min-correlation {self.min_correlation} is outside (0, 1)")
        if not 0 < self.power < 1:
            raise UserError(f"--power {self.power} is outside (0, 1)")


@dataclass
class Claim:
    """One claim the report judges. `values`: seed -> per-seed estimate (paired accuracy difference, top-30%
    share of the first group, or Pearson r); `other`: the subtracted group's per-seed values (kind 'welch')."""

    claim: str
    compared: str
    kind: str  # "paired" | "welch" | "correlation"
    direction: int  # +1: claimed above 0; -1: claimed below 0
    minimum: float
    values: dict = field(default_factory=dict)
    other: dict = field(default_factory=dict)
    missing: str | None = None  # why it cannot be judged (not run, no per-seed data)

    def seeds(self) -> int:
        return min(len(self.values), len(self.other)) if self.kind == "welch" else len(self.values)


def per_seed_text(values: dict, fmt: str = "{:.10g}") -> str:
    """results.csv's per-seed form: 'seed=value;seed=value'."""
    return ";".join(f"{s}={fmt.format(v)}" for s, v in values.items())


def parse_per_seed(text) -> dict[str, float]:
    """The inverse of `per_seed_text`; {} for an empty or missing cell."""
    if not isinstance(text, str) or not text:
        return {}
    return {s: float(v) for s, v in (part.split("=", 1) for part in text.split(";"))}


def _z(values) -> list[float]:
    """Fisher z of correlations, clipped as the report's Fisher intervals clip them."""
    from lorarank.report.stats import R_CLIP

    return [math.atanh(max(-R_CLIP, min(R_CLIP, v))) for v in values]


def estimate(c: Claim) -> float:
    """The claim's point estimate across seeds (any number of seeds)."""
    v = list(c.values.values())
    if c.kind == "welch":
        return sum(v) / len(v) - sum(c.other.values()) / len(c.other)
    if c.kind == "correlation":
        return math.tanh(sum(_z(v)) / len(v))
    return sum(v) / len(v)


def interval(c: Claim, level: float) -> dict:
    """The claim's estimate and seed-level interval at `level`; low/high None with fewer than 2 seeds or where
    the seeds agree exactly (a tie among a few runs, not a measured variance of zero)."""
    from lorarank.report.stats import fisher_ci, welch_ci

    values = list(c.values.values())
    if c.kind == "welch":
        ci = welch_ci(values, list(c.other.values()), level)
    elif c.kind == "correlation":
        ci = fisher_ci(values, level)[1]
    else:
        s = seed_level(values, level)
        ci = None if s["low"] is None else [s["low"], s["high"]]
    if ci is None or ci[1] - ci[0] <= 1e-12:
        return {"mean": estimate(c), "low": None, "high": None}
    return {"mean": estimate(c), "low": ci[0], "high": ci[1]}


def decide(est: float, low: float, high: float, direction: int, minimum: float) -> str:
    """The declared rule on one interval (RULE)."""
    lo, hi = sorted((direction * low, direction * high))  # in the claimed direction's units
    if lo > 0 and direction * est >= minimum:
        return SUPPORTED
    if hi < 0 or (-minimum < low and high < minimum):
        return CONTRADICTED
    return INCONCLUSIVE


def _power(n, sds, effect: float, alpha: float):
    """Two-sided t-test power with n seeds per group (array), for one group (one sd) or two (Welch df)."""
    import numpy as np
    from scipy.stats import nct, t

    var = sum(s * s for s in sds)
    df = (n - 1) * var ** 2 / sum(s ** 4 for s in sds) if len(sds) == 2 else n - 1
    ncp = effect / np.sqrt(var / n)
    crit = t.ppf(1 - alpha / 2, df)
    return nct.sf(crit, df, ncp) + nct.cdf(-crit, df, ncp)


def seeds_needed(c: Claim, settings: VerdictSettings, alpha: float) -> int | None:
    """Seeds per arm (per regime for 'welch') for which a true effect equal to the minimum, with the observed
    between-seed sd, excludes 0 at `alpha` (two-sided) with probability settings.power; None where no
    spread was observed or more than MAX_SEEDS would be needed."""
    import numpy as np

    if c.kind == "correlation":
        groups, effect = [_z(c.values.values())], math.atanh(c.minimum)
    elif c.kind == "welch":
        groups, effect = [list(c.values.values()), list(c.other.values())], c.minimum
    else:
        groups, effect = [list(c.values.values())], c.minimum
    sds = [float(np.std(g, ddof=1)) for g in groups]
    if max(sds) <= 1e-12:
        return None
    sds = [max(s, 1e-12) for s in sds]
    n = np.arange(2, MAX_SEEDS + 1, dtype=float)
    ok = np.flatnonzero(_power(n, sds, effect, alpha) >= settings.power)
    return int(n[ok[0]]) if len(ok) else None


def judge(claims: list[Claim], settings: VerdictSettings, unit: str = "seed") -> tuple[list[dict], int]:
    """(one row per claim, m): each claim with at least 2 units (seeds, or base models) is judged at level
    1 − alpha/m."""
    one, many, lone = UNITS[unit]
    judged = [c for c in claims if c.missing is None and c.seeds() >= 2]
    m = max(1, len(judged))
    alpha = settings.alpha / m
    rows = []
    for c in claims:
        row = {"claim": c.claim, "compared": c.compared, "kind": c.kind, "direction": c.direction,
               "minimum": c.minimum, "seeds": c.seeds(), "estimate": None, "low": None, "high": None,
               "verdict": NOT_RUN if c.missing else INCONCLUSIVE, "seeds_needed": None, "note": c.missing}
        if c.missing is None and c.seeds() >= 1:
            row["estimate"] = estimate(c)
        if c.missing is None and c.seeds() < 2:
            row["note"] = f"one {one}: {lone}"
        elif c.missing is None:
            iv = interval(c, 1 - alpha)
            row.update(low=iv["low"], high=iv["high"])
            if iv["low"] is None:
                row["note"] = f"no spread between {many}: no t interval"
            else:
                row["verdict"] = decide(iv["mean"], iv["low"], iv["high"], c.direction, c.minimum)
                if row["verdict"] == INCONCLUSIVE:
                    row["seeds_needed"] = seeds_needed(c, settings, alpha)
                    if row["seeds_needed"] is None:
                        row["note"] = f"more than {MAX_SEEDS} {many}"
        rows.append(row)
    return rows, len(judged)


def _row(acc: list[dict], regime: str, strategy: str, policy: str | None) -> dict | None:
    rows = [r for r in acc if r["regime"] == regime and r["strategy"] == strategy and r["alpha_policy"] == policy]
    return rows[0] if rows else None


def _accuracy_claim(words: str, row: dict | None, direction: int, settings: VerdictSettings, why: str) -> Claim:
    if row is None or not parse_per_seed(row.get("per_seed_diff_strict")):
        return Claim(words, "—", "paired", direction, settings.min_accuracy, missing=why)
    return Claim(words, f"{row['arm']} − {row['versus']}, strict accuracy (paired per seed)", "paired", direction,
                 settings.min_accuracy, parse_per_seed(row["per_seed_diff_strict"]))


def peaked_claim(grads: dict | None, settings: VerdictSettings) -> Claim:
    """SFT's uniform arm concentrates its gradient more than GRPO's: top-30% share, SFT minus GRPO, per seed
    from gradient_stats.json (`contrast.regimes[regime][metric].top_30pct_share_per_seed`)."""
    words = "peaked under SFT, flat under GRPO"
    regimes = ((grads or {}).get("contrast") or {}).get("regimes") or {}
    if grads is None:
        return Claim(words, "—", "welch", 1, settings.min_share, missing="not run: no gradient statistics given")
    if not {"sft", "grpo"} <= set(regimes):
        return Claim(words, "—", "welch", 1, settings.min_share, missing="not run: needs a uniform arm in both regimes")
    both = [m for m in ("weight", "lora") if m in regimes["sft"] and m in regimes["grpo"]]
    metric = both[0] if both else None
    per = {r: (regimes[r].get(metric) or {}).get("top_30pct_share_per_seed") for r in ("sft", "grpo")}
    if metric is None or not all(per.values()):
        return Claim(words, "—", "welch", 1, settings.min_share,
                     missing="no per-seed top-30% shares in gradient_stats.json (rerun `lorarank analyze`)")
    if any(regimes[r][metric].get("few_steps") for r in ("sft", "grpo")):
        return Claim(words, f"top-30% share ({metric} metric)", "welch", 1, settings.min_share,
                     missing=FEW_STEPS)
    policy = grads["contrast"].get("alpha_policy")
    return Claim(words, f"top-30% share ({metric} metric), sft/uniform/{policy} − grpo/uniform/{policy} "
                        "(Welch, unpaired runs)", "welch", 1, settings.min_share, per["sft"], per["grpo"])


def amplification_claims(grads: dict | None, settings: VerdictSettings) -> list[Claim]:
    """Per proportional arm: the rank -> share relation holds on the rank-neutral weight metric, with the sign
    it has on the lora metric (per-seed Pearson r, Fisher z)."""
    words = "amplification survives the rank-neutral metric"
    if grads is None:
        return [Claim(words, "—", "correlation", 1, settings.min_correlation,
                      missing="not run: no gradient statistics given")]
    out = []
    for name, arm in (grads.get("arms") or {}).items():
        if arm.get("strategy") != "proportional" or not arm.get("metrics"):
            continue
        lora, weight = arm["metrics"].get("lora") or {}, arm["metrics"].get("weight")
        r = lora.get("rank_vs_shift_pearson")
        claim = Claim(f"{words} ({name})", f"{name}: rank vs shift r, weight metric (Fisher z over seeds)",
                      "correlation", 1 if (r or 0) >= 0 else -1, settings.min_correlation)
        if not weight:
            claim.missing = "no weight metric (G rows) logged"
        elif weight.get("few_steps"):
            claim.missing = FEW_STEPS
        elif r is None:
            claim.missing = "the lora metric's correlation is undefined: no claimed sign"
        else:
            claim.values = {s: v["rank_vs_shift_pearson"] for s, v in weight.get("per_seed", {}).items()
                            if v.get("rank_vs_shift_pearson") is not None}
            claim.compared += f", claimed sign {'+' if claim.direction > 0 else '−'} (the lora metric's)"
            if not claim.values:
                claim.missing = "the weight metric's correlation is undefined in every seed"
        out.append(claim)
    return out or [Claim(words, "—", "correlation", 1, settings.min_correlation,
                         missing="not run: no proportional arm compared with its uniform arm")]


def claims(acc: list[dict], frozen: dict[str, dict], grads: dict | None, policy: str | None,
           settings: VerdictSettings) -> list[Claim]:
    """Every claim the report judges, in the report's order. `acc`: the accuracy table's rows (results.csv);
    `frozen`: adalora arm name -> its paired comparison with adalora-final; `policy`: the alpha policy whose
    arms carry the accuracy claims (the contrast's)."""
    out = [peaked_claim(grads, settings)]
    out.append(_accuracy_claim("allocation helps SFT", _row(acc, "sft", "proportional", policy), 1, settings,
                               f"not run: no sft proportional and uniform arms under policy {policy}"))
    out.append(_accuracy_claim("allocation hurts GRPO", _row(acc, "grpo", "proportional", policy), -1, settings,
                               f"not run: no grpo proportional and uniform arms under policy {policy}"))
    out += amplification_claims(grads, settings)
    regimes = list(dict.fromkeys(r["regime"] for r in acc if r["strategy"] == "adalora" and r["alpha_policy"] == policy))
    for regime in regimes:
        row = _row(acc, regime, "adalora", policy)
        out.append(_accuracy_claim(f"dynamic beats static ({regime})", row, 1, settings, "not run: no uniform arm"))
        if row["arm"] in frozen:
            out.append(_accuracy_claim(f"dynamic beats its frozen result ({regime})", frozen[row["arm"]] | {
                "arm": row["arm"]}, 1, settings, "not run"))
    if not regimes:
        out.append(Claim("dynamic beats static", "—", "paired", 1, settings.min_accuracy,
                         missing="not run: no adalora arm"))
    return out


def _fmt(x, kind: str) -> str:
    if x is None:
        return "—"
    return f"{x:+.2f}" if kind == "correlation" else f"{100 * x:+.1f}"


def markdown(rows: list[dict], m: int, settings: VerdictSettings) -> str:
    """results.md's "## Verdicts": the rule, its settings, and one line per claim."""
    level = 1 - settings.alpha / max(1, m)
    lines = ["## Verdicts", "", f"Rule: {RULE}", "",
             f"Here m = {m} (the claims with at least 2 seeds), α = {settings.alpha} (`--alpha`): intervals at "
             f"{100 * level:.4g}%. Minimums: accuracy {100 * settings.min_accuracy:.3g} points (`--min-accuracy`), "
             f"top-30% share {100 * settings.min_share:.3g} points (`--min-share`), correlation "
             f"{settings.min_correlation:.2f} (`--min-correlation`). The unit of every interval is the seed (the run): "
             "accuracy, a t interval over the per-seed paired differences on the same test questions; top-30% share, a "
             "Welch interval over the two regimes' seeds; correlation, a t interval over the per-seed Fisher z, "
             "back-transformed. Accuracy and share in points, correlation as r. Seeds needed (inconclusive claims "
             f"with ≥ 2 seeds): seeds per arm (per regime for the share) at which a true effect equal to the minimum, "
             f"with the observed between-seed sd, excludes 0 at the adjusted level with probability {settings.power:.0%} "
             "(noncentral t).", ""]
    return "\n".join(lines + table(rows)) + "\n"


def table(rows: list[dict], unit: str = "seed") -> list[str]:
    """The verdict table's lines: one per claim, its units (seeds or base models) counted."""
    many = UNITS[unit][1]
    lines = [f"| claim | compared | {many} | estimate | adjusted interval | verdict | {many} needed |", "|" + "---|" * 7]
    for r in rows:
        iv = "—" if r["low"] is None else f"[{_fmt(r['low'], r['kind'])}, {_fmt(r['high'], r['kind'])}]"
        needed = "—" if r["seeds_needed"] is None else str(r["seeds_needed"])
        if r["verdict"] == NOT_RUN:  # a claim whose runs exist but lack its data is "not judged"
            verdict = r["note"] if r["note"].startswith(NOT_RUN) else f"not judged: {r['note']}"
        else:
            verdict = r["verdict"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {r['claim']} | {r['compared']} | {r['seeds'] if r['verdict'] != NOT_RUN else '—'} | "
                     f"{_fmt(r['estimate'], r['kind'])} | {iv} | {verdict} | {needed} |")
    return lines


def record(claims: list[Claim], rows: list[dict], m: int, settings: VerdictSettings, unit: str = "seed") -> dict:
    """verdicts.json: the settings, and each claim with its per-unit values and its verdict row, so that a level
    above (several base models) can be judged from the files alone."""
    return {"format": FORMAT, "unit": unit, "settings": asdict(settings), "m": m,
            "claims": [asdict(c) | {"row": r} for c, r in zip(claims, rows)]}


def read_record(path, unit: str = "seed") -> dict:
    """A verdicts.json as `record` wrote it, or one line saying what is wrong with it."""
    from lorarank.io import read_json

    rec = read_json(path, "verdicts")
    if not isinstance(rec, dict) or rec.get("format") != FORMAT or not isinstance(rec.get("claims"), list):
        raise UserError(f"verdicts {str(path)!r} is not a {FORMAT} file (written by `lorarank summarize`)")
    fields = {f.name for f in dataclasses.fields(VerdictSettings)}
    if not isinstance(rec.get("settings"), dict) or set(rec["settings"]) != fields:
        raise UserError(f"verdicts {str(path)!r}: its settings are not {sorted(fields)} (written by another version?)")
    if rec.get("unit") != unit:
        raise UserError(f"verdicts {str(path)!r} judges with the {rec.get('unit')!r} as the unit (allowed: {unit!r})")
    keys = {f.name for f in dataclasses.fields(Claim)}
    for c in rec["claims"]:
        if not isinstance(c, dict) or not keys <= set(c) or not isinstance(c["values"], dict) \
                or not isinstance(c["other"], dict):
            raise UserError(f"verdicts {str(path)!r}: a claim lacks {sorted(keys)} (written by another version?)")
    return rec


def _claim(c: dict) -> Claim:
    """A claim as its verdicts.json entry holds it."""
    return Claim(**{f.name: c[f.name] for f in dataclasses.fields(Claim)})


def base_level(records: dict[str, dict]) -> list[Claim]:
    """The claims again, one value per base model (base name -> its verdicts record): every base ran the same
    study on another base model, so a claim's interval across them has the base model as its unit. Each
    base's value is its estimate across its seeds (`estimate`: the seed mean; a Welch claim's difference of
    its two groups' means, so that it becomes paired by base, both groups starting from that base model;
    correlations averaged on Fisher's z). A claim missing in any base is missing here, saying which."""
    names = {b: [c["claim"] for c in rec["claims"]] for b, rec in records.items()}
    first = next(iter(records))
    for b, claimed in names.items():
        if claimed != names[first]:
            raise UserError(f"base {b} judged other claims than base {first} ({claimed} vs {names[first]}): the "
                            f"bases must be one config's")
    out = []
    for i, words in enumerate(names[first]):
        per = {b: rec["claims"][i] for b, rec in records.items()}
        c0 = per[first]
        kind = "correlation" if c0["kind"] == "correlation" else "paired"
        compared = c0["compared"].replace("(Welch, unpaired runs)", "(SFT − GRPO within each base model)")
        claim = Claim(words, f"per base model, its seed mean of: {compared}", kind, c0["direction"], c0["minimum"])
        missing = [(b, c["missing"]) for b, c in per.items()
                   if c["missing"] or not c["values"] or (c["kind"] == "welch" and not c["other"])]
        if missing:
            b, why = missing[0]
            claim.compared = c0["compared"]
            claim.missing = why if why and len(missing) == len(per) else f"base {b}: {why or 'no per-seed values'}"
        elif len({c["direction"] for c in per.values()}) > 1:
            claim.missing = "the base models' lora metric disagrees on the claimed sign"
        else:
            claim.values = {b: estimate(_claim(c)) for b, c in per.items()}
        out.append(claim)
    return out
