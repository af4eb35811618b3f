"""PNG plots of learning curves: one run's, and the best trials of a sweep."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curves(history: Sequence[dict], path: Path, title: str = "", best_epoch: int = 0) -> None:
    """Loss and accuracy per epoch, train and validation, side by side."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric, label in ((ax_loss, "loss", "cross-entropy"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "-"), ("val", "--")):
            ax.plot(epochs, [row[f"{split}_{metric}"] for row in history], style, marker=".", label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="gray", lw=0.8, ls=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    if title:
        fig.suptitle(textwrap.shorten(title, 160), fontsize="medium")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def best_curves(curves: list[tuple[int, float, list[dict]]], path: Path, metric: str) -> None:
    """Validation (solid) and training (dashed) accuracy per epoch of the best trials of a sweep:
    (trial number, its objective, its history) each."""
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    for i, (number, value, history) in enumerate(curves):
        epochs = [row["epoch"] for row in history]
        shown = f"{value:.2%}" if metric.endswith("acc") else f"{value:.4g}"
        ax.plot(
            epochs, [row["val_acc"] for row in history], "-", color=f"C{i}", label=f"trial {number} ({metric} {shown})"
        )
        ax.plot(epochs, [row["train_acc"] for row in history], "--", color=f"C{i}", alpha=0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (solid: validation, dashed: training)")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title(f"learning curves of the {len(curves)} best trials")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
