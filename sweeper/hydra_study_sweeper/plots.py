"""PNG plots of a sweep, drawn only where matplotlib is installed (the `plots` extra)."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MIN_TRIALS_FOR_IMPORTANCE = 5
MISSING = "No plots: matplotlib is not installed (pip install 'hydra-study-sweeper[plots]').\n"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def summary(rows: list, ranked: list, front: list, out: Path, study: Any, layout: Any) -> list[str]:
    """history.png, pareto.png (several objectives), importances.png (five complete trials)."""
    if not available() or not ranked:
        return []
    written = ["history.png"]
    history(rows, out / "history.png", layout)
    if len(layout.names) > 1:
        pareto(ranked, front, out / "pareto.png", layout)
        written.append("pareto.png")
    enough = study is not None and len(layout.names) == 1 and len(ranked) >= MIN_TRIALS_FOR_IMPORTANCE
    if enough and importances(study, out / "importances.png"):
        written.append("importances.png")
    return written


def percent_axis(axis: Any, name: str, formats: dict[str, str]) -> None:
    if formats.get(name, "").endswith("%"):
        import matplotlib.ticker

        axis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))


def history(rows: list, path: Path, layout: Any) -> None:
    fig = history_figure(rows, layout)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def history_figure(rows: list, layout: Any) -> Any:
    """Each trial's first objective by trial number, with the best so far; a pruned trial at the
    last value it reported (where the pruner stopped it), a failed one as a cross."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    done = sorted((r for r in rows if r["state"] == "COMPLETE" and r["values"]), key=lambda r: r["number"])
    xs, ys = [r["number"] for r in done], [r["values"][0] for r in done]
    pick = min if layout.directions[0] == "minimize" else max
    best = [pick(ys[: i + 1]) for i in range(len(ys))]
    ax.plot(xs, ys, "o", alpha=0.7, label="completed")
    ax.step(xs, best, where="post", color="C1", label="best so far")
    pruned = sorted((r["number"], last_value(r)) for r in rows if r["state"] == "PRUNED")
    pruned = [(n, v) for n, v in pruned if v is not None and math.isfinite(v)]
    if pruned:
        ax.plot(*zip(*pruned, strict=True), "v", color="0.55", alpha=0.6, label="pruned (its last value)")
    failed = [r["number"] for r in rows if r["state"] == "FAIL"]
    if failed and ys:
        ax.plot(failed, [min(ys)] * len(failed), "x", color="C3", label="failed")
    import matplotlib.ticker

    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # trial numbers, not 2.5
    ax.set_xlabel("trial")
    ax.set_ylabel(layout.names[0])
    percent_axis(ax.yaxis, layout.names[0], layout.formats)
    ax.set_title("optimization history")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def last_value(row: dict) -> float | None:
    """A pruned trial's value: the one stored with it, else the last step it reported."""
    if row["values"]:
        return row["values"][0]
    steps = row.get("steps") or {}
    return steps[max(steps)] if steps else None


def pareto(ranked: list, front: list, path: Path, layout: Any) -> None:
    """The first two objectives of every complete trial, the Pareto front joined."""
    plt = pyplot()
    names = layout.names
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    ax.plot([r["values"][0] for r in ranked], [r["values"][1] for r in ranked], "o", alpha=0.4, label="trial")
    pts = sorted((r["values"][0], r["values"][1], r["number"]) for r in front)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="C3", label="Pareto front")
    for x, y, n in pts:
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    percent_axis(ax.xaxis, names[0], layout.formats)
    percent_axis(ax.yaxis, names[1], layout.formats)
    ax.set_title("Pareto front" + (f" (of {len(names)} objectives: the first two)" if len(names) > 2 else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def importances(study: Any, path: Path) -> bool:
    import optuna

    try:
        found = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as err:  # e.g. a single-valued space
        log.info("no parameter importances: %s", err)
        return False
    if not found:
        return False
    plt = pyplot()
    names = list(found)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5), constrained_layout=True)
    ax.barh(names, [found[n] for n in names], color="C0")
    ax.set_xlabel("importance (fANOVA share of the objective's variance)")
    ax.set_title("parameter importances")
    ax.grid(alpha=0.3, axis="x")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def stages(best: list[tuple[str, Any]], path: Path, name: str, formats: dict[str, str]) -> bool:
    """The best value of each stage of a staged search, stage by stage."""
    done = [(label, t) for label, t in best if t is not None]
    if not available() or not done:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.plot(range(len(done)), [t.value for _, t in done], "o-", label=name)
    ax.set_xticks(range(len(done)), [label for label, _ in done])
    ax.set_xlabel("stage")
    ax.set_ylabel(f"{name} of the stage's best trial")
    percent_axis(ax.yaxis, name, formats)
    ax.set_title("staged search: best trial of each stage")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
