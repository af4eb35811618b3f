"""Repeated seeds per configuration: with `repeats: N` and `seed_key: trainer.seed`, one trial is
its configuration run N times, with the seeds S, S+1, ..., S+N-1 (S: the config's own value of
the seed key), each as a job of its own in the trial's folder (`NUMBER/seed-S`). The trial's value
is the mean over its seeds (per objective); the standard deviation and each seed's value are its
user attributes `NAME_std` and `NAME_seeds`, and the summary shows `mean ± std`.

Pruning decides on the first seed: its job reports each epoch to the trial, exactly as a job of an
unrepeated study does (its curve is comparable with theirs, and nothing waits for the slowest
seed); the other seeds' jobs report nothing and stop at their next step once the trial is pruned.
A seed that fails fails its trial (with that seed's reason); its queued seeds are not run.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from .errors import UserError
from .outcome import Outcome
from .settings import Settings
from .wire import SEEDS_ATTR


def seeds(settings: Settings, config: DictConfig, searched: dict[str, Any], grid: Any) -> tuple[int, ...]:
    """The seeds each trial runs; () without repeats. Refuses what cannot work, before any trial."""
    n, key = settings.repeats, settings.seed_key
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise UserError(f"hydra.sweeper.repeats={n!r} is not allowed: use an integer >= 1 (1 = one run a trial)")
    if n == 1:
        return ()
    if not key:
        raise UserError(
            f"hydra.sweeper.repeats={n} needs hydra.sweeper.seed_key, the config key that carries the seed "
            "(e.g. hydra.sweeper.seed_key=trainer.seed)"
        )
    if key in searched:
        what = "the grid already sweeps it" if grid is not None else "the sampler would tune it"
        raise UserError(
            f"hydra.sweeper.repeats={n} with seed_key={key}, which the search space sweeps ({what}): "
            f"take {key} out of the space, or set hydra.sweeper.repeats=1"
        )
    if settings.stack > 1:
        raise UserError(
            f"hydra.sweeper.repeats={n} with hydra.sweeper.stack={settings.stack}: a trial's seeds are jobs of "
            "their own, a stack is one job for several trials; use one of them"
        )
    task = {k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}
    base = OmegaConf.select(OmegaConf.create(task), key, default=None)
    if isinstance(base, bool) or not isinstance(base, int):
        raise UserError(
            f"hydra.sweeper.seed_key={key}: the config's value there is {base!r}, not an integer seed "
            "(see the app's --cfg job)"
        )
    return tuple(base + i for i in range(n))


def folder(number: int, seed: int) -> str:
    """A seed's job folder, inside its trial's."""
    return f"{number}/seed-{seed}"


def combine(outcomes: list[Outcome], seeds_run: tuple[int, ...], names: list[str]) -> tuple[Outcome, dict]:
    """The trial's outcome from its seeds' (in seed order; a seed not run is None), and its user
    attributes: each objective's standard deviation and per-seed values."""
    for seed, o in zip(seeds_run, outcomes, strict=True):
        if o is not None and o.state == TrialState.FAIL:
            return Outcome.failed(f"seed {seed}: {o.reason}"), {}
    for o in outcomes:
        if o is not None and o.state == TrialState.PRUNED:
            return o, {}
    columns = list(zip(*(o.values for o in outcomes), strict=True))
    attrs: dict[str, Any] = {SEEDS_ATTR: list(seeds_run)}
    for name, values in zip(names, columns, strict=True):
        attrs[f"{name}_std"] = statistics.stdev(values)
        attrs[f"{name}_seeds"] = list(values)
    return Outcome(TrialState.COMPLETE, [statistics.fmean(c) for c in columns]), attrs


def mean_results(found: list[dict[str, Any]]) -> dict[str, Any]:
    """The seeds' results files as one: numbers averaged, anything else as the first seed has it."""
    merged = dict(found[0]) if found else {}
    for key in list(merged):
        values = [r.get(key) for r in found]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        if numbers and len(set(values)) > 1:  # equal values keep their type (an epoch count stays whole)
            merged[key] = statistics.fmean(values)
    return merged
