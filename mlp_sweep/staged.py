"""The course's staged search: small data first, then a space narrowed by what it showed.

Each stage of `hydra.sweeper.stages` is `{n_trials: N, keep: SHARE, KEY: VALUE, ...}`: the other
keys are overrides for every trial of the stage (`data_size: 1k`). After a stage, the best `keep`
share of its complete trials shape the next stage's space: numeric ranges shrink to cover them
(on the log scale where the dimension is log, with a margin), choices keep the values they used;
their parameters are queued first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from .errors import UserError
from .space import show

MARGIN = 0.25  # of the kept range, added on each side (on the log scale for log dimensions)


@dataclass(frozen=True)
class Stage:
    overrides: dict[str, Any]
    n_trials: int
    keep: float

    @property
    def suffix(self) -> str:
        return "-".join(str(v) for v in self.overrides.values())


def parse_stages(stages: Any) -> list[Stage]:
    found, bad = [], []
    for i, raw in enumerate(stages or ()):
        raw = dict(raw)
        n, keep = raw.pop("n_trials", None), raw.pop("keep", 0.25)
        if not (isinstance(n, int) and n >= 1):
            bad.append(f"hydra.sweeper.stages[{i}].n_trials={n!r}: use an integer >= 1")
        if not (isinstance(keep, (int, float)) and 0 < keep <= 1):
            bad.append(f"hydra.sweeper.stages[{i}].keep={keep!r}: use a share in (0, 1]")
        if not raw:
            bad.append(f"hydra.sweeper.stages[{i}]: give what the stage changes, e.g. data_size: 1k")
        found.append(Stage(raw, n if isinstance(n, int) else 1, float(keep) if isinstance(keep, (int, float)) else 1))
    if bad:
        raise UserError("invalid stages:\n  " + "\n  ".join(bad))
    return found


def kept_trials(study: optuna.Study, keep: float) -> list[optuna.trial.FrozenTrial]:
    """The best `keep` share of a stage's complete trials (at least one), best first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    ranked = sorted(complete, key=lambda t: sign * t.value)
    return ranked[: max(1, math.ceil(keep * len(ranked)))]


def narrow(dists: dict[str, BaseDistribution], kept: list[optuna.trial.FrozenTrial]) -> dict[str, BaseDistribution]:
    """The space that covers the kept trials, with a margin, inside the original one."""
    out = {}
    for name, dist in dists.items():
        values = [t.params[name] for t in kept if name in t.params]
        if not values:
            out[name] = dist
        elif isinstance(dist, CategoricalDistribution):
            out[name] = CategoricalDistribution([c for c in dist.choices if c in values])
        else:
            out[name] = _range(dist, min(values), max(values))
    return out


def _range(dist: FloatDistribution | IntDistribution, low: float, high: float) -> BaseDistribution:
    if dist.log:
        a, b = math.log(low), math.log(high)
        pad = max(MARGIN * (b - a), math.log(1.25))
        low, high = math.exp(a - pad), math.exp(b + pad)
    else:
        pad = max(MARGIN * (high - low), 0.05 * (dist.high - dist.low))
        low, high = low - pad, high + pad
    low, high = max(low, dist.low), min(high, dist.high)
    if isinstance(dist, IntDistribution):
        return IntDistribution(math.floor(low), math.ceil(high), log=dist.log)
    return FloatDistribution(low, high, log=dist.log)


def space_attrs(dists: dict[str, BaseDistribution]) -> dict[str, str]:
    """The space a stage searched, as study user attributes (one short value each)."""
    return {f"space.{k}": _short(d) for k, d in dists.items()}


def _short(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return show(dist)
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    return f"{kind}{' log' if dist.log else ''} [{dist.low:.4g}, {dist.high:.4g}]"


def report(rows: list[dict[str, Any]], out: Path) -> str:
    """The course report's table for each stage, stages.md and stages.png; returns the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Staged search",
        "",
        "| stage | study | complete trials | best trial | train | validation | test | space searched |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        b = r["best"]
        space_text = "; ".join(f"{k.removeprefix('space.')} {v}" for k, v in r["space"].items())
        if b is None:
            lines.append(f"| {r['stage']} | {r['study']} | {r['trials']} | - | - | - | - | {space_text} |")
            continue
        acc = [b.user_attrs.get(k) for k in ("train_acc", "val_acc", "test_acc")]
        shown = " | ".join(f"{a:.2%}" if isinstance(a, (int, float)) else "-" for a in acc)
        lines.append(f"| {r['stage']} | {r['study']} | {r['trials']} | {b.number} | {shown} | {space_text} |")
    md = "\n".join(lines) + "\n\nPlot: stages.png\n"
    (out / "stages.md").write_text(md)
    done = [r for r in rows if r["best"] is not None and "val_acc" in r["best"].user_attrs]
    if done:
        fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
        sizes = [r["train_images"] or i for i, r in enumerate(done)]
        for key, style in (("val_acc", "o-"), ("test_acc", "s--")):
            ax.plot(sizes, [r["best"].user_attrs.get(key) for r in done], style, label=key.replace("_acc", ""))
        for r, x in zip(done, sizes, strict=True):
            ax.annotate(r["stage"], (x, r["best"].user_attrs["val_acc"]), textcoords="offset points", xytext=(4, -12))
        if all(r["train_images"] for r in done):
            ax.set_xscale("log")
        ax.set_xlabel("training images")
        ax.set_ylabel("accuracy of the stage's best trial")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_title("staged search: best trial of each stage")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(out / "stages.png", dpi=100)
        plt.close(fig)
    return md
