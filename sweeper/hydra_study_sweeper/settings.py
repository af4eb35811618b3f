"""The sweeper's settings (`hydra.sweeper.*`), checked once, before anything else happens."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from . import gpus
from .errors import UserError


def plain(value: Any) -> Any:
    """An OmegaConf node as plain Python (lists, dicts), anything else as it is."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def as_list(value: Any) -> list:
    value = plain(value)
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    return list(value)


@dataclass(frozen=True)
class Settings:
    """hydra.sweeper.* as the sweeper reads them. Their defaults are said once, in the plugin's
    StudySweeperConf (hydra_plugins/hydra_study_sweeper/study_sweeper.py): Hydra hands every key."""

    sampler: Any  # the sampler's config node (instantiated per seed offset)
    pruner: Any  # the pruner's config node, or None
    directions: tuple[str, ...]  # lower case: "minimize" / "maximize"
    storage: str | None
    study_name: str | None
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    custom_search_space: str | None
    params: Any
    heartbeat_interval: int
    stack: int
    repeats: int
    seed_key: str | None
    gpus: Any
    trials_per_gpu: int | None
    timeout: float | None
    trial_timeout: float | None
    stall_timeout: float | None
    start_timeout: float | None
    stop_grace: float
    grace_period: int | None
    outage_timeout: float
    enqueue_trials: tuple[dict, ...]
    conditions: dict[str, Any]
    metric_names: tuple[str, ...] | None
    config_check: str | None
    identity_ignore: tuple[str, ...]
    allow_widening: bool
    artifact_dir: str | None
    artifacts: tuple[str, ...]
    results_file: str | None
    record: tuple[str, ...]
    context: tuple[str, ...]
    adhoc_prefix: str
    summary_columns: tuple[str, ...]
    formats: dict[str, str]
    summary_hook: str | None
    rerun_group: str | None
    rerun_dir: str | None
    rerun_skip: tuple[str, ...]
    stages: tuple[dict, ...]
    fidelity: dict | None
    mlflow: bool
    mlflow_uri: str
    tensorboard: bool
    tensorboard_dir: str

    @property
    def names(self) -> list[str]:
        """What each returned value is called: metric_names, else value / value_0, value_1, ..."""
        if self.metric_names:
            return list(self.metric_names)
        return ["value"] if len(self.directions) == 1 else [f"value_{i}" for i in range(len(self.directions))]

    @property
    def secret_urls(self) -> dict[str, str]:
        """The settings that are URLs with a password (storage, mlflow_uri, any added later): shown
        and written masked only, and handed to jobs through the environment."""
        from dataclasses import fields

        from .urls import has_password

        found = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in found.items() if isinstance(v, str) and "://" in v and has_password(v)}

    @property
    def pruner_json(self) -> str | None:
        return None if self.pruner is None else json.dumps(plain(self.pruner))


def dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping with dotted keys ({optimizer: {momentum: x}}, as `+a.b=x` on the command line
    makes it) as one level: {optimizer.momentum: x}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat.update(dotted(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return flat


def directions_of(direction: Any) -> tuple[str, ...]:
    """`direction` as the stock plugin takes it (a name, an enum, or a list of them), in lower case."""
    items = as_list(direction) if not hasattr(direction, "name") else [direction]
    return tuple(str(getattr(d, "name", d)).lower() for d in items)


def parse(raw: dict[str, Any]) -> Settings:
    """The settings from the plugin's keyword arguments; `check` names every bad value."""
    values = {k: plain(v) for k, v in raw.items() if k not in ("sampler", "pruner", "params")}
    directions = directions_of(values.pop("direction"))
    metric_names = tuple(str(n) for n in as_list(values.pop("metric_names", None))) or None
    tuples = ("identity_ignore", "artifacts", "record", "context", "summary_columns", "stages", "rerun_skip")
    settings = Settings(
        sampler=raw.get("sampler"),
        pruner=raw.get("pruner"),
        params=raw.get("params"),
        directions=directions,
        metric_names=metric_names,
        enqueue_trials=tuple(dict(p) for p in as_list(values.pop("enqueue_trials", ()))),
        conditions=dotted(values.pop("conditions", None) or {}),
        formats={str(k): str(v) for k, v in (values.pop("formats", None) or {}).items()},
        **{k: tuple(as_list(v)) if k in tuples else v for k, v in values.items()},
    )
    return settings


def check(s: Settings) -> None:
    bad = []
    if not (isinstance(s.n_trials, int) and s.n_trials >= 1):
        bad.append(f"hydra.sweeper.n_trials={s.n_trials!r} is not allowed: use an integer >= 1")
    if not (isinstance(s.n_jobs, int) and s.n_jobs >= 1):
        bad.append(f"hydra.sweeper.n_jobs={s.n_jobs!r} is not allowed: use an integer >= 1")
    bad += gpus.check(s.gpus, s.trials_per_gpu)
    if not (isinstance(s.stack, int) and not isinstance(s.stack, bool) and s.stack >= 1):
        bad.append(f"hydra.sweeper.stack={s.stack!r} is not allowed: use an integer >= 1 (1 = one trial a job)")
    for key in ("timeout", "trial_timeout", "stall_timeout", "start_timeout"):
        value = getattr(s, key)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
            bad.append(f"hydra.sweeper.{key}={value!r} is not allowed: use seconds > 0, or null for no limit")
    grace = s.stop_grace
    if not (isinstance(grace, (int, float)) and not isinstance(grace, bool) and grace >= 0):
        bad.append(f"hydra.sweeper.stop_grace={grace!r} is not allowed: use seconds >= 0")
    outage = s.outage_timeout
    if not (isinstance(outage, (int, float)) and not isinstance(outage, bool) and outage >= 0):
        bad.append(f"hydra.sweeper.outage_timeout={outage!r} is not allowed: use seconds >= 0 (0: do not wait)")
    rate = s.max_failure_rate
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 <= rate <= 1):
        bad.append(f"hydra.sweeper.max_failure_rate={rate!r} is not allowed: use a number in [0, 1]")
    if not (isinstance(s.heartbeat_interval, int) and s.heartbeat_interval >= 1):
        bad.append(f"hydra.sweeper.heartbeat_interval={s.heartbeat_interval!r} is not allowed: use whole seconds >= 1")
    if not all(d in ("minimize", "maximize") for d in s.directions) or not s.directions:
        bad.append(f"hydra.sweeper.direction={list(s.directions)} is not allowed: use minimize or maximize, or a list")
    if s.metric_names and len(s.metric_names) != len(s.directions):
        bad.append(
            f"hydra.sweeper.metric_names={list(s.metric_names)} names {len(s.metric_names)} values but "
            f"hydra.sweeper.direction={list(s.directions)} has {len(s.directions)}: give one direction per metric"
        )
    if bad:
        raise UserError("invalid sweep settings:\n  " + "\n  ".join(bad))
