"""The study's figures (matplotlib, PNG): readable without the text, layers in order, labelled axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lorarank.io import atomic_path


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


def amplification(points: dict[str, tuple[list, list, float | None]], path: Path) -> None:
    """Allocated rank vs share shift against uniform, per arm, with a fitted line and r."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (arm, (ranks, shift, r)), color in zip(points.items(), plt.cm.tab10.colors):
        x, y = np.asarray(ranks, float), 100 * np.asarray(shift, float)
        label = f"{arm} (r = {r:.3f})" if r is not None else f"{arm} (r undefined)"
        ax.scatter(x, y, color=color, label=label, s=28, alpha=0.85)
        if r is not None:
            slope, icpt = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 2)
            ax.plot(xs, slope * xs + icpt, color=color, lw=1.2)
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("allocated LoRA rank of the layer")
    ax.set_ylabel("share shift vs uniform run (percentage points)")
    ax.set_title("Do gradients follow the allocated rank?")
    ax.legend(fontsize=8, frameon=False)
    _save(fig, path)
    plt.close(fig)


def shares(arms: dict[str, dict], path: Path) -> None:
    """Per-layer shares of every arm (and SFT), side by side."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (arm, s), marker in zip(arms.items(), "osD^v<>p*h"):
        layers = sorted(s, key=int)
        ax.plot([int(l) for l in layers], [100 * s[l] for l in layers], marker=marker, ms=4, lw=1.2, label=arm)
    n = len(next(iter(arms.values())))
    ax.axhline(100 / n, color="grey", lw=0.8, ls=":", label="equal share")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean share of gradient norm (%)")
    ax.set_title("Per-layer gradient share by arm")
    ax.legend(fontsize=8, frameon=False, ncol=2)
    _save(fig, path)
    plt.close(fig)


def accuracies(df: pd.DataFrame, path: Path) -> None:
    """Accuracy per arm with 95% CI bars, strict and flexible grading."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(df))
    for off, mode, color in ((-0.17, "strict", "#1f77b4"), (0.17, "flexible", "#ff7f0e")):
        acc = 100 * df[f"acc_{mode}"].to_numpy(float)
        err = [acc - 100 * df[f"ci_low_{mode}"].to_numpy(float), 100 * df[f"ci_high_{mode}"].to_numpy(float) - acc]
        ax.bar(x + off, acc, width=0.34, color=color, label=f"{mode} grading", yerr=err, capsize=3)
    ax.set_xticks(x, df["strategy"], rotation=20)
    ax.set_ylabel("GSM8K accuracy (%) with 95% CI")
    ax.set_title(f"Accuracy by arm (n = {int(df['n'].iloc[0])} questions)")
    ax.legend(frameon=False)
    _save(fig, path)
    plt.close(fig)
