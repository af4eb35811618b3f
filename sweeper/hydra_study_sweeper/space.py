"""The sweeper's search space: parsing, value checks, queued trials, and what defines a
study (its directions, metric names and fixed configuration) compared with the stored study.

Everything here runs before the first trial is asked and raises UserError; nothing is stored.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)

from . import conditions, stock
from .errors import UserError
from .settings import as_list

FIXED_PREFIX = "fixed."  # study user attributes that hold the fixed configuration, one key each
MAX_ATTR = 1000  # longer values are stored as a digest: the dashboard cuts attributes at 1024 characters


@dataclass(frozen=True)
class Space:
    distributions: dict[str, BaseDistribution]  # what Optuna samples
    fixed: dict[str, Any]  # fixed parameters, as the stock plugin passes them
    fixed_overrides: tuple[str, ...]  # deletions (~key)
    adhoc: bool  # swept on the command line: replaces the preset's params
    grid: dict[str, list] | None  # an ad-hoc sweep of explicit value lists only: its full grid
    conditions: dict[str, tuple] = field(default_factory=dict)  # parameter -> when it exists (conditions.py)

    def digest(self) -> str:
        text = json.dumps({k: repr(v) for k, v in sorted(self.distributions.items())})
        return hashlib.sha1(text.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """What defines a study: a rerun that differs in any of it is another experiment."""

    directions: tuple[str, ...]
    metric_names: tuple[str, ...] | None
    fixed: dict[str, str]  # flattened task config minus the searched keys

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(sorted(self.fixed.items())).encode()).hexdigest()

    def attrs(self) -> dict[str, str]:
        return {f"{FIXED_PREFIX}{k}": v for k, v in self.fixed.items()}


def parse(preset: list[str], arguments: list[str], when: Any = None) -> Space:
    """The search space from the preset's params and the command line, with the conditions `when`
    of the parameters that exist only sometimes. Sweeps on the command line replace the preset's
    params (what you type is what varies, as in Hydra's multirun)."""
    parsed_args = parse_overrides(arguments, "command line")
    adhoc = any(o.is_sweep_override() for o in parsed_args)
    lines = arguments if adhoc else [*preset, *arguments]
    parsed = parse_overrides(lines, "sweep")
    for line, override in zip(lines, parsed, strict=True):  # one at a time, so an error names its key
        _check_int_interval(line, override)
        try:
            stock.params_from_overrides([line])
        except (ValueError, AssertionError) as err:
            raise UserError(f"invalid search space, nothing was run:\n  {line}: {err}") from None
    space, fixed, deletions = stock.params_from_overrides(lines)
    for name in fixed:
        space.pop(name, None)
    if not space:
        raise UserError(
            "the search space is empty: give hydra.sweeper.params (a preset) or sweeps on the command line, "
            "e.g. optimizer.lr=1e-3,1e-4"
        )
    sweeps = [o for o in parsed if o.is_sweep_override() and o.get_key_element() in space]
    explicit = all(isinstance(o.value(), (ChoiceSweep, RangeSweep)) for o in sweeps)
    grid = None
    if adhoc and explicit:  # value lists only: the full grid, as Hydra's basic sweeper would run
        grid = {k: stock.grid_choices(d) for k, d in space.items()}
    kept = {k: v for k, v in (when or {}).items() if k in space or not adhoc}  # an ad-hoc space has its own keys
    found = conditions.parse(kept, space, fixed)
    if found and grid is not None:
        raise UserError(
            "conditional parameters (hydra.sweeper.conditions) cannot be walked as a grid, which runs every "
            "combination: sweep a range (interval(...)) or use another sampler"
        )
    return Space(space, fixed, tuple(deletions), adhoc, grid, found)


def _check_int_interval(line: str, override: Any) -> None:
    """`int(interval(1.5, 3))` would silently become [1, 3]: integer intervals need integer bounds."""
    if not isinstance(override.value(), IntervalSweep):
        return
    text = override.get_value_string()
    found = re.search(r"int\(\s*interval\(\s*([^,()]+),\s*([^,()]+)\)", text.replace(" ", ""))
    if not found:
        return
    for bound in found.groups():
        try:
            number = float(bound)
        except ValueError:
            continue
        if not number.is_integer():
            raise UserError(
                f"invalid search space, nothing was run:\n  {line}: bound {bound} of an integer interval is not an "
                "integer; use whole numbers, or interval(...) for a float"
            )


def check_values(
    space: Space,
    config: DictConfig,
    group_options: Callable[[str], list[str]],
    config_check: Any = None,
    compose: Callable[[list[str]], DictConfig] | None = None,
) -> None:
    """Every key exists, every group option exists, and (with the app's config_check) every choice
    and range end passes the app's own config checks. A conditional parameter is checked in the
    config its conditions select (`optimizer.momentum` where `optimizer=sgd`: `compose` builds it)."""
    found: list[str] = []
    task = OmegaConf.create({k: v for k, v in OmegaConf.to_container(config).items() if k != "hydra"})
    groups = dict(config.hydra.runtime.choices)
    candidates = [
        *((k, candidate_values(d)) for k, d in space.distributions.items()),
        *((k, [v]) for k, v in space.fixed.items()),
    ]
    for name, values in candidates:
        key = name.lstrip("+~")
        if key in groups:
            options = group_options(key)
            found += [
                f"{key}={v!r}: not an option of group {key} ({', '.join(options)})"
                for v in values
                if str(v) not in options
            ]
            continue
        if name.startswith("+"):
            continue
        where = _where(name, space, groups, group_options)
        if where:
            picked = {w.split("=", 1)[0] for w in where}
            fixed = [f"{k}={v}" for k, v in space.fixed.items() if k not in picked]  # as a job gets them
            task_of = _task(compose([*fixed, *where])) if compose else task
            if OmegaConf.select(task_of, key, default=_ABSENT) is _ABSENT:
                found.append(f"{key}: not a key of the config where {' '.join(where)} (see the app's --cfg job)")
            continue  # its values are checked in the job's config, where its conditions hold
        if OmegaConf.select(task, key, default=_ABSENT) is _ABSENT:
            found.append(f"{key}: not a key of the config (see the app's --cfg job)")
            continue
        if config_check is None:
            continue
        for value in values:
            trial_cfg = task.copy()
            OmegaConf.update(trial_cfg, key, _typed(value), merge=False, force_add=True)
            found += [f"in the search space, {p}" for p in config_check(trial_cfg) if p.startswith(f"{key}=")]
    if found:
        raise UserError("invalid search space, nothing was run:\n  " + "\n  ".join(dict.fromkeys(found)))


def _task(config: DictConfig) -> DictConfig:
    return OmegaConf.create({k: v for k, v in OmegaConf.to_container(config).items() if k != "hydra"})


def _where(name: str, space: Space, groups: dict, group_options: Callable) -> list[str]:
    """The config group choices under which a conditional parameter exists (one value satisfying
    each of its conditions on a group); [] when it names no group."""
    picks = []
    for cond in space.conditions.get(name, ()):
        if cond.key not in groups:
            continue
        dist = space.distributions.get(cond.key)
        options = (
            [str(c) for c in dist.choices] if isinstance(dist, CategoricalDistribution) else group_options(cond.key)
        )
        fitting = [o for o in options if (o in cond.values) != cond.negated]
        if fitting:
            picks.append(f"{cond.key}={fitting[0]}")
    return picks


def _typed(value: Any) -> Any:
    """A fixed parameter arrives as the string the user typed; the checks want its YAML value."""
    if not isinstance(value, str):
        return value
    try:
        return OverridesParser.create().parse_override(f"k={value}").value()
    except Exception:
        return value


def check_enqueued(trials: list[dict[str, Any]], space: Space) -> list[dict[str, Any]]:
    """Each queued parameter set names keys of the space, with values inside their distributions.
    Keys fixed on the command line are dropped (they are not searched). Returns the sets to queue."""
    found, kept = [], []
    for i, params in enumerate(trials):
        params = {k: v for k, v in params.items() if k not in space.fixed}
        for key, value in params.items():
            dist = space.distributions.get(key)
            if dist is None:
                found.append(f"hydra.sweeper.enqueue_trials[{i}].{key}: not a parameter of the search space")
            elif not contains(dist, value):
                found.append(f"hydra.sweeper.enqueue_trials[{i}].{key}={value!r} is outside {show(dist)}")
        kept.append(params)
    if found:
        raise UserError("invalid queued trials, nothing was run:\n  " + "\n  ".join(found))
    return kept


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether a value lies inside a distribution, from its public bounds and choices."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dist, IntDistribution) and not float(value).is_integer():
        return False
    return dist.low <= value <= dist.high


def check_against_stored(study: optuna.Study | None, space: Space, allow_widening: bool = False) -> dict[str, str]:
    """A space must be the one the study searched: a changed kind would fail mid-sweep, a changed
    range or choice list is another experiment. With allow_widening, a range or choice list that
    holds the stored one is accepted; returns those widenings (parameter -> what changed) for the
    study's record. Compared with each parameter's distribution in the study's latest trial."""
    if study is None:
        return {}
    stored: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        stored.update(trial.distributions)
    found, widened = {}, {}
    for param, old in stored.items():
        new = space.distributions.get(param)
        if new is None or new == old:
            continue
        both_choices = isinstance(old, CategoricalDistribution) and isinstance(new, CategoricalDistribution)
        try:
            if not both_choices:  # Optuna refuses other choices too; those are a change like a range's
                check_distribution_compatibility(old, new)
        except ValueError:
            found[param] = f"{param}: {show(new)} conflicts with {show(old)} stored in the study"
            continue
        change = f"{show(old)} in the study, {show(new)} now"
        if allow_widening and covers(new, old):
            widened[param] = change
        else:
            found[param] = f"{param}: {change}"
    if found:
        hint = "" if allow_widening else "; hydra.sweeper.allow_widening=true accepts a range that holds the stored one"
        raise UserError(
            f"the search space conflicts with study {study.study_name!r}, nothing was run:\n  "
            + "\n  ".join(found.values())
            + f"\n  keep the stored space, or start another study with hydra.sweeper.study_name=...{hint}"
        )
    return widened


def covers(new: BaseDistribution, old: BaseDistribution) -> bool:
    """Whether every value of `old` lies in `new` (same kind, log scale and step)."""
    if isinstance(old, CategoricalDistribution):
        return isinstance(new, CategoricalDistribution) and all(c in new.choices for c in old.choices)
    same = type(new) is type(old) and new.log == old.log and new.step == old.step
    return same and new.low <= old.low and old.high <= new.high


def identity(config: DictConfig, space: Space, directions: list[str], metric_names: Any, ignore: list[str]) -> Identity:
    """What defines this run's study: directions, metric names, and every config value not searched."""
    task = {k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}
    skip = [*(k.lstrip("+~") for k in space.distributions), *ignore]  # fixed overrides are in the config
    fixed = {}
    for key, value in _flatten(task):
        if any(key == s or key.startswith(f"{s}.") for s in skip):
            continue
        text = json.dumps(value) if not isinstance(value, str) else value
        fixed[key] = text if len(text) <= MAX_ATTR else "sha1:" + hashlib.sha1(text.encode()).hexdigest()
    names = None if metric_names is None else tuple(as_list(metric_names))
    return Identity(tuple(directions), names, fixed)


def check_identity(study: optuna.Study | None, wanted: Identity, storage_name: str) -> bool:
    """Refuse a run whose experiment differs from the stored study's. Returns whether the study
    already records its identity (a study made before this check existed does not)."""
    if study is None:
        return False
    found = []
    stored_dirs = tuple(directions_of_study(study))
    if stored_dirs != wanted.directions:
        found.append(f"directions: {list(stored_dirs)} in the study, {list(wanted.directions)} now")
    stored_names = tuple(study.metric_names) if study.metric_names else None
    if stored_names and wanted.metric_names and stored_names != wanted.metric_names:
        found.append(f"metrics: {list(stored_names)} in the study, {list(wanted.metric_names)} now")
    attrs = study.user_attrs
    recorded = any(k.startswith(FIXED_PREFIX) for k in attrs)
    if recorded:
        for key, value in attrs.items():
            if not key.startswith(FIXED_PREFIX):
                continue
            name = key.removeprefix(FIXED_PREFIX)
            now = wanted.fixed.get(name, "(absent)")
            if now != value:  # keys the study never recorded (added by a newer version) do not block
                found.append(f"{name}: {value} in the study, {now} now")
    if found:
        raise UserError(
            f"study {study.study_name!r} in {storage_name} was made by another experiment, nothing was run:\n  "
            + "\n  ".join(found[:12])
            + ("\n  ..." if len(found) > 12 else "")
            + "\n  run with the study's values, or start another study with hydra.sweeper.study_name=NAME"
        )
    return recorded


def directions_of_study(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        if not node:
            return [(prefix, {})] if prefix else []
        return [kv for k, v in node.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, node)]


def parse_overrides(lines: list[str], where: str) -> list:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except Exception as err:
        raise UserError(f"cannot parse the {where} sweep: {err}") from None


def candidate_values(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        return [dist.low, dist.high]
    return []


def show(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice{tuple(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    return f"{kind} interval [{dist.low}, {dist.high}]{' log' if dist.log else ''}"


_ABSENT = object()
