"""Hydra plugin entry: the stock Optuna sweeper's config keys, plus the project's settings.

    defaults:
      - override hydra/sweeper: mlp_sweep

Hydra imports this module whenever it scans plugins, so it stays light: Optuna and the
implementation (mlp_sweep.sweeper) load only when a sweep starts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import MISSING, DictConfig


# The pruner group, chosen like the sampler: hydra/sweeper/pruner=median (keys as Optuna's own).
@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # trials that run to the end before any is pruned
    n_warmup_steps: int = 0  # epochs a trial runs before it may be pruned
    interval_steps: int = 1
    n_min_trials: int = 1  # trials that must have reported an epoch before it is compared


@dataclass
class PercentilePrunerConf(MedianPrunerConf):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0  # keep trials in the best 25 % at each epoch


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"  # epochs of the first rung
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"  # epochs of a full trial ("auto": the most any trial reported)
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class MlpSweepSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.mlp_sweep_sweeper.mlp_sweep_sweeper.MlpSweepSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    pruner: Any = MISSING  # hydra/sweeper/pruner=none|median|percentile|successive_halving|hyperband
    n_jobs: int = 1  # trials launched at once; >1 only pays with a parallel launcher (joblib)
    max_failure_rate: float = 0.5  # share of this run's trials allowed to fail before the sweep stops
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats (RDB storages)
    grace_period: int | None = None  # seconds without a heartbeat before a trial is stale; None = 2 intervals
    # parameter sets to try first (each once per study), e.g. a known good recipe: [{optimizer.lr: 1e-3, ...}]
    enqueue_trials: list[dict[str, Any]] = field(default_factory=list)
    # names of the values the task returns, one per direction (shown in logs, summaries, the dashboard)
    metric_names: Any = None
    # dotted path of `problems(cfg) -> list[str]`: the app's own config checks, run on every
    # choice and range end of the space before the first trial (mlp_sweep.checks.problems)
    config_check: str | None = None
    # config keys that do not change an experiment (devices, threads): a rerun may differ in them
    identity_ignore: list[str] = field(default_factory=list)
    # where each finished trial's curves.png, metrics.json and .hydra/config.yaml are uploaded
    # (an Optuna artifact store for the dashboard); null: none
    artifact_dir: str | None = None
    # the course's staged search: [{data_size: 1k, n_trials: 16, keep: 0.25}, ...]; each stage is a
    # study of its own whose space the previous stage's best `keep` share narrowed
    stages: list[Any] = field(default_factory=list)


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="mlp_sweep", node=MlpSweepSweeperConf, provider="mlp_sweep")
for _name, _node in {
    "none": NopPrunerConf,
    "median": MedianPrunerConf,
    "percentile": PercentilePrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf,
    "hyperband": HyperbandPrunerConf,
}.items():
    _store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="mlp_sweep")


class MlpSweepSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from mlp_sweep.sweeper import StudySweeper

        self.sweeper = StudySweeper(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        from mlp_sweep.errors import SweepExit, UserError

        try:
            return self.sweeper.sweep(arguments)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except SweepExit as err:
            if err.message:
                print(f"error: {err.message}", file=sys.stderr)
            sys.exit(err.code)
