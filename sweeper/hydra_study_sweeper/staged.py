"""A staged search: cheap stages first (small data, few epochs), then a space narrowed by what they showed.

Each stage of `hydra.sweeper.stages` is `{n_trials: N, keep: SHARE, KEY: VALUE, ...}`: the other
keys are overrides for every trial of the stage (`data_size: 1k`). After a stage, the best `keep`
share of its complete trials shape the next stage's space: numeric ranges shrink to cover them
(on the log scale where the dimension is log, with a margin), choices keep the values they used;
their parameters are queued first.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from .errors import UserError
from .space import Space, parse_overrides, show
from .summary import fmt

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


def stage_space(
    sp: Space, stage: Stage, kept: Any, arguments: list[str], loader: Any, config: Any
) -> tuple[Space, Any]:
    """A stage's space (narrowed by the previous stage's kept trials) and the config that defines
    its study: the stage's overrides go to every trial."""
    dists = sp.distributions if kept is None else narrow(sp.distributions, kept)
    staged_space = dataclasses.replace(sp, distributions=dists, fixed={**sp.fixed, **stage.overrides}, grid=None)
    parsed = parse_overrides(arguments, "command line")
    overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
    overrides += [f"{k}={v}" for k, v in stage.overrides.items()]
    return staged_space, loader.load_sweep_config(config, overrides)


def report(rows: list[dict[str, Any]], out: Path, name: str, columns: list[str], formats: dict[str, str]) -> str:
    """Each stage's best trial (its value and the summary columns) and the space it searched, as
    stages.md and (with matplotlib) stages.png; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    columns = [c for c in columns if c != name]  # the objective has its own column
    head = ["stage", "study", "complete trials", "best trial", name, *columns, "space searched"]
    lines = ["# Staged search", "", "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 3) + "---|"]
    for r in rows:
        b = r["best"]
        space_text = "; ".join(f"{k.removeprefix('space.')} {v}" for k, v in r["space"].items())
        shown = ["-"] * (2 + len(columns))
        if b is not None:
            extra = [fmt(c, b.user_attrs.get(c), formats) for c in columns]
            shown = [str(b.number), fmt(name, b.value, formats), *extra]
        lines.append("| " + " | ".join([r["stage"], r["study"], str(r["trials"]), *shown, space_text]) + " |")
    md = "\n".join(lines) + "\n"
    from . import plots

    if plots.stages([(r["stage"], r["best"]) for r in rows], out / "stages.png", name, formats):
        md += "\nPlot: stages.png\n"
    (out / "stages.md").write_text(md)
    return md
