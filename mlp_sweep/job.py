"""What a job launched by the project's sweeper knows of its trial, whatever the app, and the job's
side of the per-epoch channel to its Optuna trial.

The sweeper passes the study name, trial number, storage URL and pruner to each job through
Hydra's `hydra.job.env_set` (a URL with a password through the sweeper's own environment instead,
so it is never written to a job's files): an app needs no keys of its own. A task reads them with
`current_trial()` and reports each epoch with `EpochReporter`.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TRIAL_ENV = "MLP_SWEEP_TRIAL"
STUDY_ENV = "MLP_SWEEP_STUDY"
STORAGE_ENV = "MLP_SWEEP_STORAGE"  # absolute storage URL; unset for an in-memory study
PRUNER_ENV = "MLP_SWEEP_PRUNER"  # the pruner's config as JSON
IN_PROCESS: dict[str, Any] = {}  # in-memory studies, for jobs run in the sweeper's own process
PENDING_SIGNALS: list[int] = []  # Ctrl-C / SIGTERM the sweeper received and has not yet acted on


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, `timeout`, preemption), handled like Ctrl-C."""


def cores() -> int:
    """The cores this process may use (a SLURM allocation or `taskset` give fewer than the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def raise_pending_interrupt() -> None:
    """Raise a Ctrl-C or SIGTERM the sweeper received but that got lost: Python drops an exception
    raised inside a garbage-collector callback or `__del__` ("Exception ignored in ..."), so the
    signal handler also records it, and a job running in the sweeper's process checks each epoch."""
    if PENDING_SIGNALS:
        import signal

        raise Terminated() if PENDING_SIGNALS[-1] == signal.SIGTERM else KeyboardInterrupt()


@dataclass(frozen=True)
class SweepTrial:
    study: str
    number: int


def current_trial() -> SweepTrial | None:
    """The Optuna trial this job runs for, or None outside a sweep of the project's sweeper."""
    number = os.environ.get(TRIAL_ENV)
    if number is None or not number.isdigit():
        return None
    return SweepTrial(study=os.environ.get(STUDY_ENV, ""), number=int(number))


def job_overrides(study: str, number: int, storage: str | None, pruner: str | None) -> tuple[str, ...]:
    """The Hydra overrides that hand a job its trial (`++`: adds the keys or replaces them)."""
    values = {STUDY_ENV: study, TRIAL_ENV: str(number), STORAGE_ENV: storage, PRUNER_ENV: pruner}
    return tuple(f"++hydra.job.env_set.{k}={_quoted(v)}" for k, v in values.items() if v is not None)


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class EpochReporter:
    """report(epoch, metrics) -> keep going? Each epoch's metric goes to the trial as an
    intermediate value (epoch counted from 1), and the study's pruner decides whether to go on."""

    def __init__(self, trial: SweepTrial, metric: str) -> None:
        import optuna

        from .recovery import live_trial

        self.metric, self.reason = metric, ""
        url = os.environ.get(STORAGE_ENV)
        if url:
            from hydra.utils import instantiate

            from .storage import open_storage

            pruner_cfg = json.loads(os.environ.get(PRUNER_ENV) or '{"_target_": "optuna.pruners.NopPruner"}')
            pruner = instantiate(pruner_cfg, _execution_whitelist_=("optuna.pruners.*",))
            study = optuna.load_study(
                study_name=trial.study, storage=open_storage(url, None, None, quiet=True), pruner=pruner
            )
        else:
            study = IN_PROCESS[trial.study]
        self.study = study
        self.trial = live_trial(study, trial.number)
        self.single = len(study.directions) == 1  # Optuna keeps intermediate values for one objective only

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        if not self.single:
            return True
        value = float(metrics[self.metric])
        self.trial.report(value, epoch)
        if not self.trial.should_prune():
            return True
        pruner = type(self.study.pruner).__name__
        import optuna

        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        others = [t.intermediate_values[epoch] for t in done if epoch in t.intermediate_values]
        compared = ""
        if others:  # what median and percentile pruners compare with: the completed trials at this epoch
            compared = f"; median of {len(others)} completed trial(s) at this epoch {statistics.median(others):.4f}"
        self.reason = f"pruned by {pruner} at epoch {epoch}: {self.metric} {value:.4f}{compared}"
        return False


def reporter_for(metric: str) -> EpochReporter | None:
    """The channel to this job's trial, or None outside a sweep (or for an unreachable study)."""
    trial = current_trial()
    if trial is None or not (os.environ.get(STORAGE_ENV) or trial.study in IN_PROCESS):
        return None
    return EpochReporter(trial, metric)
