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
from omegaconf import DictConfig


@dataclass
class MlpSweepSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.mlp_sweep_sweeper.mlp_sweep_sweeper.MlpSweepSweeper"
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


ConfigStore.instance().store(group="hydra/sweeper", name="mlp_sweep", node=MlpSweepSweeperConf, provider="mlp_sweep")


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
