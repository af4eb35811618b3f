"""Hydra plugin entry: the stock Optuna sweeper's config keys, plus this sweeper's settings.

    defaults:
      - override hydra/sweeper: study

Hydra imports this module whenever it scans plugins, so it stays light: Optuna and the
implementation (hydra_study_sweeper.sweeper) load only when a sweep starts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig

from hydra_study_sweeper.stock import SweeperConf


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
class StudySweeperConf(SweeperConf):
    _target_: str = "hydra_plugins.hydra_study_sweeper.study_sweeper.StudySweeperPlugin"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    pruner: Any = MISSING  # hydra/sweeper/pruner=none|median|percentile|successive_halving|hyperband
    n_jobs: int = 1  # jobs launched at once; >1 only pays with a parallel launcher (joblib)
    # trials per job: up to `stack` trials handed to one job that trains them together (an app that
    # supports it: hydra_study_sweeper.job.stack()); 1 = one trial a job
    stack: int = 1
    # each trial's configuration run with `repeats` seeds (the config's seed_key value, +1, +2, ...),
    # each a job of its own in the trial's folder; the trial's value is their mean
    repeats: int = 1
    seed_key: str | None = None  # e.g. trainer.seed
    # GPUs handed to jobs side by side in local processes (joblib, submitit_local), one slot each as
    # CUDA_VISIBLE_DEVICES: auto = the GPUs this machine shows; null = none; or a list, e.g. [0, 1].
    # trials_per_gpu: jobs sharing one GPU (null: n_jobs spread evenly over the GPUs)
    gpus: Any = "auto"
    trials_per_gpu: int | None = None
    # time limits in seconds: no trial starts after `timeout` (those running finish, exit 0 with the
    # summary); a trial whose job reports a step after `trial_timeout` is stopped, FAIL `timeout`
    timeout: float | None = None
    trial_timeout: float | None = None
    # a job in a process of its own (joblib, submitit, ray) that reports no step for stall_timeout
    # seconds, or runs stop_grace seconds past trial_timeout, is hung: its processes are stopped,
    # its trials FAIL `hung: ...` with their last value (the in-process basic launcher cannot)
    stall_timeout: float | None = None
    # until its first step a job's start-up (imports, data) is not silence: it gets start_timeout
    # seconds (null: stall_timeout + 60)
    start_timeout: float | None = None
    stop_grace: float = 30
    max_failure_rate: float = 0.5  # share of this run's trials allowed to fail before the sweep stops
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats (RDB storages)
    grace_period: int | None = None  # seconds without a heartbeat before a trial is stale; None = 2 intervals
    # seconds a database server (PostgreSQL, MySQL / MariaDB, Redis) that went away mid-sweep is waited for,
    # retrying with backoff; longer ends the worker with exit 2, all stored kept; 0 = not at all
    outage_timeout: float = 600
    # parameters that exist only when others take certain values: {optimizer.momentum: optimizer=sgd,
    # model.dropout: model.norm!=batch}; a list must all hold (hydra_study_sweeper.conditions). On the
    # command line: '+hydra.sweeper.conditions.optimizer.momentum="optimizer=sgd"'
    conditions: dict[str, Any] = field(default_factory=dict)
    # parameter sets to try first (each once per study), e.g. a known good recipe: [{optimizer.lr: 1e-3, ...}]
    enqueue_trials: list[dict[str, Any]] = field(default_factory=list)
    # names of the values the task returns, one per direction (shown in logs, summaries, the dashboard)
    metric_names: Any = None
    # dotted path of `problems(cfg) -> list[str]`: the app's own config checks, run on every
    # choice and range end of the space before the first trial
    config_check: str | None = None
    # config keys that do not change an experiment (devices, threads): a rerun may differ in them
    identity_ignore: list[str] = field(default_factory=list)
    # a rerun may widen a range or add choices (recorded in the study); any other change is refused
    allow_widening: bool = False
    # a JSON file a job may leave in its folder: `record` keys become user attributes, `status`
    # other than ok fails the trial (pruned prunes it); e.g. metrics.json
    results_file: str | None = None
    record: list[str] = field(default_factory=list)
    # job files uploaded to artifact_dir as each trial ends (an Optuna artifact store for the dashboard)
    artifacts: list[str] = field(default_factory=list)
    artifact_dir: str | None = None
    # config groups whose choice is kept in the study's user attributes (e.g. [data, data_size])
    context: list[str] = field(default_factory=list)
    # an ad-hoc sweep (typed on the command line) gets a study named PREFIX-DIGEST
    adhoc_prefix: str = "adhoc-${hydra.job.name}"
    # user attributes shown as summary columns, formats of values (name: format spec, e.g. .2%), and
    # a hook `fn(rows, ranked, out_dir, layout) -> markdown` that adds the app's own section and plots
    summary_columns: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    summary_hook: str | None = None
    # the best trial (each Pareto trial) as a config file GROUP/NAME.yaml under rerun_dir, a folder of
    # the app's config search path, so that `APP GROUP=NAME` reruns it (e.g. experiment, outputs/configs)
    rerun_group: str | None = None
    rerun_dir: str | None = None
    rerun_skip: list[str] = field(default_factory=list)  # groups they do not select again (sweep presets)
    # MLflow: each trial a run nested under the study's (hydra_study_sweeper.tracking); any tracking URI
    mlflow: bool = False
    mlflow_uri: str = "sqlite:///outputs/mlflow.db"
    # TensorBoard: each trial's steps and hyperparameters in TENSORBOARD_DIR/STUDY/TRIAL/
    tensorboard: bool = False
    tensorboard_dir: str = "outputs/tensorboard"
    # a staged search: [{data_size: 1k, n_trials: 16, keep: 0.25}, ...]; each stage is a study of its
    # own whose space the previous stage's best `keep` share narrowed
    stages: list[Any] = field(default_factory=list)
    # multi-fidelity search (asynchronous successive halving): {key: data_size.train, rungs: [1000,
    # 4000, 16000], eta: 3} (or min and max instead of rungs; brackets: B for Hyperband-style starts);
    # each trial runs at the lowest rung, and goes on to the next only in the best 1/eta there
    fidelity: Any = None


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="study", node=StudySweeperConf, provider="hydra-study-sweeper")
for _name, _node in {
    "none": NopPrunerConf,
    "median": MedianPrunerConf,
    "percentile": PercentilePrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf,
    "hyperband": HyperbandPrunerConf,
}.items():
    _store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="hydra-study-sweeper")


class StudySweeperPlugin(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from hydra_study_sweeper.sweeper import StudySweeper

        self.sweeper = StudySweeper(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        from hydra_study_sweeper.errors import SweepExit, UserError

        try:
            return self.sweeper.sweep(arguments)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except SweepExit as err:
            if err.message:
                print(f"error: {err.message}", file=sys.stderr)
            sys.exit(err.code)
