"""The study's figures (matplotlib, PNG): readable without the text, layers in order, labelled axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lorarank.io import atomic_path
from lorarank.training.gradmetrics import METRICS
from lorarank.training.regimes import REGIMES, WARMUP, title


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.dpi": 120})
    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    fig.clear()


def heatmap(per_step: pd.DataFrame, title: str, path: Path) -> None:
    """Layer share over training steps (the study's first figure): layer 0 at the bottom."""
    plt = _plt()
    if per_step.empty:  # a run with no non-zero gradient at any step: the figure says so
        fig, ax = plt.subplots(figsize=(7, 2))
        ax.text(0.5, 0.5, "no step with a non-zero gradient", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title)
        _save(fig, path)
        plt.close(fig)
        return
    fig, ax = plt.subplots(figsize=(7, 0.18 * per_step.shape[1] + 2))
    data = 100 * per_step.to_numpy().T
    im = ax.imshow(data, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                   extent=(per_step.index.min() - 0.5, per_step.index.max() + 0.5, -0.5, data.shape[0] - 0.5))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("layer")
    ax.set_yticks(range(0, data.shape[0], max(1, data.shape[0] // 14)))
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="share of gradient norm (%)")
    _save(fig, path)
    plt.close(fig)


def rank_trajectories(tables: dict[str, pd.DataFrame], path: Path) -> None:
    """AdaLoRA's ranks over training, one panel per arm (its first seed): the mean rank of each layer's
    adapted matrices at step 0 and at every reallocation, held until the next (layer 0 at the bottom)."""
    plt = _plt()
    height = max(2.6, 0.18 * max(t.shape[1] for t in tables.values()) + 2)
    fig, axes = plt.subplots(len(tables), 1, figsize=(7, height * len(tables)), squeeze=False)
    vmax = max(float(t.to_numpy().max()) for t in tables.values())
    for ax, (arm, table) in zip(axes[:, 0], tables.items()):
        steps = table.index.to_numpy()
        edges = np.append(steps, steps[-1] + 1) - 0.5  # each reallocation holds until the next
        im = ax.pcolormesh(edges, np.arange(table.shape[1] + 1) - 0.5, table.to_numpy().T, cmap="magma",
                           vmin=0, vmax=vmax, shading="flat")
        ax.set_xlabel("optimizer step (last column: the final, frozen ranks)")
        ax.set_ylabel("layer")
        ax.set_yticks(range(0, table.shape[1], max(1, table.shape[1] // 14)))
        ax.set_title(f"AdaLoRA rank per layer (mean over its matrices): {arm}")
        fig.colorbar(im, ax=ax, label="rank")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def amplification(arms: dict, path: Path) -> None:
    """Allocated rank vs share shift against uniform, one panel per metric, one colour per arm (its first
    seed), with a fitted line and the seed-mean r and its bootstrap CI in the legend."""
    plt = _plt()
    metrics = [m for m in METRICS if any(m in a.get("metrics", {}) for a in arms.values())] or ["lora"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.4), squeeze=False, sharey=False)
    compared = [(name, a) for name, a in arms.items() if a.get("metrics")]
    for ax, metric in zip(axes[0], metrics):
        for (name, arm), color in zip(compared, plt.cm.tab10.colors):
            m = arm["metrics"].get(metric)
            if not m:
                continue
            first = next(iter(m["per_seed"].values()))
            layers = sorted(first["shift"], key=int)
            x = np.asarray([first["ranks"][l] for l in layers], float)
            y = 100 * np.asarray([first["shift"][l] for l in layers], float)
            r, ci = m["rank_vs_shift_pearson"], m["pearson_ci95"]
            label = f"{name}: r = {r:.2f}" if r is not None else f"{name}: r undefined"
            label += f" [{ci[0]:.2f}, {ci[1]:.2f}] across seeds" if ci else " (one seed)"
            ax.scatter(x, y, color=color, label=label, s=24, alpha=0.85)
            if r is not None:
                slope, icpt = np.polyfit(x, y, 1)
                xs = np.linspace(x.min(), x.max(), 2)
                ax.plot(xs, slope * xs + icpt, color=color, lw=1.1)
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("allocated LoRA rank of the layer")
        ax.set_ylabel("share shift vs uniform (percentage points)")
        ax.set_title(METRICS[metric].title, fontsize=10)
        if ax.get_legend_handles_labels()[0]:  # no arm compared with uniform: nothing to label
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Do gradients follow the allocated rank? (mechanics: lora; learning: weight)")
    _save(fig, path)
    plt.close(fig)


def shares(panels: dict[str, dict[str, dict]], path: Path) -> None:
    """Per-layer shares, one panel per metric, one line per run."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    if not panels:  # no run had a non-zero gradient at any step
        panels = {"lora": {}}
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (metric, runs) in zip(axes[0], panels.items()):
        if not runs:
            ax.text(0.5, 0.5, "no step with a non-zero gradient", ha="center", va="center", transform=ax.transAxes)
            continue
        for (label, s), marker in zip(runs.items(), "osD^v<>p*hx+"):
            layers = sorted(s, key=int)
            ax.plot([int(l) for l in layers], [100 * s[l] for l in layers], marker=marker, ms=3, lw=1.1, label=label)
        n = len(next(iter(runs.values())))
        ax.axhline(100 / n, color="grey", lw=0.8, ls=":", label="equal share")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel("mean share of gradient norm (%)")
        ax.set_title(METRICS[metric].title, fontsize=10)
        ax.legend(fontsize=7, frameon=False, ncol=2)
    _save(fig, path)
    plt.close(fig)


def contrast(doc: dict, path: Path) -> None:
    """SFT vs GRPO: the uniform arm's per-layer shares in each regime (and the full-weight warm-up), one
    panel per metric, top-30% share with its CI in the legend."""
    plt = _plt()
    metrics = [m for m in METRICS if any(m in r for r in doc["regimes"].values())] or ["weight"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    names = {WARMUP: "full-weight SFT warm-up", **{r: f"{title(r)} uniform" for r in REGIMES}}
    for ax, metric in zip(axes[0], metrics):
        for regime, by_metric in doc["regimes"].items():
            m = by_metric.get(metric)
            if not m:
                continue
            layers = sorted(m["shares"], key=int)
            ci = m["top_30pct_share_ci95"]  # across seeds: none with one seed
            span = f" [{ci[0]:.0%}, {ci[1]:.0%}] across seeds" if ci else " (one seed)"
            ax.plot([int(l) for l in layers], [100 * m["shares"][l] for l in layers], marker="o", ms=3, lw=1.3,
                    label=f"{names.get(regime, regime)}: top-30% {m['top_30pct_share']:.0%}{span}")
        ax.set_xlabel("layer")
        ax.set_ylabel("mean share of gradient norm (%)")
        ax.set_title(METRICS[metric].title, fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Peaked under SFT, flat under GRPO? (uniform arms, seed means)")
    _save(fig, path)
    plt.close(fig)


def accuracies(df: pd.DataFrame, path: Path) -> None:
    """Accuracy per arm with 95% CI bars, strict and flexible grading (the base model once)."""
    plt = _plt()
    df = df.drop_duplicates("arm").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(df)), 4))
    x = np.arange(len(df))
    for off, mode, color in ((-0.17, "strict", "#1f77b4"), (0.17, "flexible", "#ff7f0e")):
        acc = 100 * df[f"acc_{mode}"].to_numpy(float)
        # a t interval across seeds can reach below 0: the bar shows the interval, clipped to what exists
        low = np.clip(100 * df[f"ci_low_{mode}"].to_numpy(float), 0, None)
        high = np.clip(100 * df[f"ci_high_{mode}"].to_numpy(float), None, 100)
        err = [np.clip(acc - low, 0, None), np.clip(high - acc, 0, None)]
        ax.bar(x + off, acc, width=0.34, color=color, label=f"{mode} grading", yerr=err, capsize=3)
    ax.set_xticks(x, df["arm"], rotation=30, ha="right")
    ax.set_ylabel("GSM8K accuracy (%) with 95% CI")
    ax.set_title(f"Accuracy by arm (n = {int(df['n'].iloc[0])} questions)")
    ax.legend(frameon=False)
    _save(fig, path)
    plt.close(fig)


def rate_curves(docs: list[dict], path: Path) -> None:
    """Validation accuracy against learning rate, one line per arm (`lorarank select-rate` records), the chosen
    rate marked: how sharply each arm's accuracy depends on its rate, and where it was tested."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for d, color in zip(docs, plt.cm.tab10.colors * 4):
        lrs = [p["lr"] for p in d["curve"]]
        acc = [100 * p["mean"] for p in d["curve"]]
        ax.plot(lrs, acc, marker="o", ms=4, lw=1.3, color=color, label=d["arm"])
        chosen = next(p for p in d["curve"] if p["lr"] == d["chosen"])
        ax.scatter([chosen["lr"]], [100 * chosen["mean"]], s=90, facecolors="none", edgecolors=color, linewidths=1.6)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    grading = ", ".join(sorted({f"{d['metric']}, n = {d['n']}" for d in docs}))
    ax.set_ylabel(f"validation accuracy (%) ({grading})")
    ax.set_title("Rate selection on the validation split (circle: the chosen rate)")
    ax.legend(fontsize=7, frameon=False)
    _save(fig, path)
    plt.close(fig)
