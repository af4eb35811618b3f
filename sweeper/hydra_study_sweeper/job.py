"""The job's side of the sweeper: what a task launched by it may know and do. This is the whole
contract between the sweeper and an app.

A task returns its objective: one number, or one per direction of a multi-objective study. Anything
else ends its trial FAIL with the reason (an exception, NaN, the wrong count). Beyond that, a task
may, from whatever process its launcher runs it in:

    from hydra_study_sweeper import job

    trial = job.current_trial()          # study name and trial number, or None outside a sweep
    report = job.reporter()              # None outside a sweep
    for step in range(1, epochs + 1):
        value = train_one_epoch()
        if report is not None and not report(step, value):
            break                        # the pruner said stop: the trial ends PRUNED
    return value

With the sweeper's `trial_timeout`, a report made after that many seconds (counted from the
reporter's start) returns False and the trial ends FAIL `timeout`, its last value kept as the user
attribute `last_value` (`report.timed_out` says so to the task).

`report(step, value) -> keep going?` records the value as the trial's intermediate value at that
step and asks the study's pruner. Once it says stop, the trial is PRUNED whatever the task returns
afterwards (raising `optuna.TrialPruned` does the same). `report.reason` says why, in one line.
`report(step, value, metrics)` also logs the app's own numbers of that step (a dict) where the
sweeper tracks trials in MLflow or TensorBoard.
For a task that runs inside the sweeper's own process (Hydra's basic launcher), each report is
also where a Ctrl-C or SIGTERM the sweeper received is raised, should Python have swallowed it.

With the sweeper's `fidelity` (multi-fidelity search), each rung of a trial is a job of its own
with the fidelity key set in its config; its reports are stored from step rung * 1000 on (rung 0:
steps as given), so a pruner compares only values of the same rung and step.

A multi-objective study has no intermediate values in Optuna: there `report` never stops a trial
and only passes interrupts on.

The sweeper hands a job its trial through environment variables it sets with Hydra's
`hydra.job.env_set` (a storage URL with a password through the sweeper's own environment instead,
so that it is never written to a job's files): a task needs no config keys of the sweeper's.

With the sweeper's `repeats: N` (and `seed_key`), each trial runs as N jobs, one per seed, each
with its own folder; only the first seed's reporter records values and asks the pruner, the
others' return False once the trial is pruned. Nothing changes for the task.

With the sweeper's `stack: K` setting (K > 1), one job trains up to K trials together, for an app
that can (many small models as one batched network):

    members = job.stack()                # None unless this job is a stack
    if members is not None:
        results = {}
        for m in members:                # m.trial, m.output_dir, m.config(), m.reporter(...)
            ...                          # train them together; write each one's files in m.output_dir
            results[m.trial.number] = value
        return results                   # one result per trial number

The first member's folder is the job's own; each other member's folder holds its
`.hydra/config.yaml` (its whole config, as a single job of that trial would get it) before the
job starts. Each member is an ordinary trial: its reporter prunes it alone, its results file in its
folder is read as a single job's, and a member missing from the returned dict fails alone.

An app may also leave a JSON file in its job folder (the sweeper's `results_file` setting): the
keys named in `record` become the trial's user attributes, a `status` other than `ok` fails the
trial with that reason (`pruned`, with `pruned_reason`, prunes it), and the values named in
`metric_names` are what an interrupt that lands after the job ended still records.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .signals import raise_pending
from .watchdog import stepped
from .wire import (
    LAST_VALUE_ATTR,
    OUTAGE_ENV,
    PRUNED_ATTR,
    PRUNER_ENV,
    REPEAT_ENV,
    RUNG_ENV,
    RUNG_STEPS,
    STACK_ENV,
    STORAGE_ENV,
    STUDY_ENV,
    TIMEOUT_ATTR,
    TIMEOUT_ENV,
    TRIAL_ENV,
)

PRUNER_TARGETS = ("optuna.pruners.*", "hydra_study_sweeper.pruners.*")  # what a pruner config may name
# the sweeper's open studies, for jobs run in its own process (the basic launcher): an in-memory
# study, or one in a database, reported to without a second connection per job; with the pid that
# opened it (a forked worker's copy of an engine must not be used)
IN_PROCESS: dict[str, tuple[int, Any]] = {}


def in_process(study: str) -> Any:
    """The sweeper's own study object, when this job runs in the sweeper's process; else None."""
    pid, found = IN_PROCESS.get(study, (None, None))
    return found if pid == os.getpid() else None


@dataclass(frozen=True)
class SweepTrial:
    study: str
    number: int


def current_trial() -> SweepTrial | None:
    """The Optuna trial this job runs for, or None outside a sweep of this sweeper."""
    number = os.environ.get(TRIAL_ENV)
    if number is None or not number.isdigit():
        return None
    return SweepTrial(study=os.environ.get(STUDY_ENV, ""), number=int(number))


@dataclass(frozen=True)
class Member:
    """One trial of a stacked job."""

    trial: SweepTrial
    output_dir: Path  # its job folder: results, curves, weights go here

    def config(self) -> Any:
        """The member's whole task config (unresolved, as Hydra saved it for the trial)."""
        from omegaconf import OmegaConf

        return OmegaConf.load(self.output_dir / ".hydra" / "config.yaml")

    def reporter(self, name: str = "value", unit: str = "step") -> Reporter | None:
        return reporter(name, unit, trial=self.trial)


def stack() -> list[Member] | None:
    """The trials this job trains together (the first is the job's own trial), or None when the
    job is a single trial or not in a sweep."""
    numbers, trial = os.environ.get(STACK_ENV), current_trial()
    if not numbers or trial is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    own = Path(HydraConfig.get().runtime.output_dir)
    return [
        Member(SweepTrial(trial.study, int(n)), own if int(n) == trial.number else own.parent / n)
        for n in numbers.split(",")
    ]


def reporter(name: str = "value", unit: str = "step", trial: SweepTrial | None = None) -> Reporter | None:
    """The channel to this job's trial (or to `trial`, a member of a stack), or None outside a sweep
    (or for an unreachable study). `name` and `unit` are what the value and the step are called in
    a pruned trial's reason."""
    trial = trial or current_trial()
    if trial is None or not (os.environ.get(STORAGE_ENV) or in_process(trial.study) is not None):
        return None
    return Reporter(trial, name, unit)


class Reporter:
    """report(step, value) -> keep going? Each value becomes the trial's intermediate value at that
    step, and the study's pruner decides whether the trial goes on."""

    def __init__(self, trial: SweepTrial, name: str = "value", unit: str = "step") -> None:
        import optuna

        from .recovery import live_trial

        self.name, self.unit, self.reason = name, unit, ""
        url = os.environ.get(STORAGE_ENV)
        self.study = in_process(trial.study)
        if self.study is None:
            from .storage import open_storage

            pruner = instantiate_pruner(os.environ.get(PRUNER_ENV))
            outage = float(os.environ.get(OUTAGE_ENV) or 0) or None
            storage = open_storage(url, None, None, quiet=True, outage_timeout=outage, patient_open=True)
            self.study = optuna.load_study(study_name=trial.study, storage=storage, pruner=pruner)
        self.trial = live_trial(self.study, trial.number)
        self.single = len(self.study.directions) == 1  # Optuna keeps intermediate values for one objective only
        # a rung of a multi-fidelity search: its steps follow the earlier rungs' in the trial
        rung = os.environ.get(RUNG_ENV)
        self.rung = None if rung is None else int(rung)
        self.offset = (self.rung or 0) * RUNG_STEPS
        limit = os.environ.get(TIMEOUT_ENV)
        self.limit = float(limit) if limit else None
        self.started = time.monotonic()
        self.timed_out = False
        # a repeated trial's later seeds: the first seed's job reports and is judged; these follow it
        self.follower = not os.environ.get(REPEAT_ENV, "0/1").startswith("0/")
        from .tracking import JobTracker

        self.tracker = None if self.follower else JobTracker.of(trial.number)  # MLflow, TensorBoard

    def __call__(self, step: int, value: float | None = None, metrics: dict[str, Any] | None = None) -> bool:
        step += self.offset
        raise_pending()
        stepped()  # the sweeper's watchdog: this job is alive
        if self.tracker is not None:
            self.tracker.log(step, {**(metrics or {}), **({} if value is None else {self.name: value})})
        if self.limit is not None and time.monotonic() - self.started > self.limit:
            return self._time_up(step, value)
        if self.follower:
            return self._follow()
        if not self.single or value is None:  # None: a step without a value, only for interrupts
            return True
        value = float(value)
        self.trial.report(value, step)
        if not self._should_prune():
            return True
        from .pruners import inner

        self.reason = (
            f"pruned by {type(inner(self.study.pruner)).__name__} at {self.unit} {step}: {self.name} {value:.4g}"
        )
        self.reason += self._compared(step)
        self.trial.set_user_attr(PRUNED_ATTR, self.reason)
        return False

    def _should_prune(self) -> bool:
        """The study's pruner's word; in a rung of a multi-fidelity trial, as it sees that rung alone."""
        if self.rung is None:
            return self.trial.should_prune()
        from .pruners import InRung
        from .recovery import stored_trial

        return InRung(self.study.pruner, self.rung, RUNG_STEPS).prune(self.study, stored_trial(self.study, self.trial))

    def _follow(self) -> bool:
        """A later seed goes on until its trial is pruned (on its first seed)."""
        from .recovery import stored_user_attrs

        pruned = stored_user_attrs(self.study, self.trial).get(PRUNED_ATTR)
        if pruned:
            self.reason = f"its trial was pruned on its first seed ({pruned})"
        return not pruned

    def _time_up(self, step: int, value: float | None) -> bool:
        """Past trial_timeout: stop, and make the trial FAIL `timeout` with its last value kept."""
        self.timed_out = True
        last = "" if value is None else f", {self.name} {float(value):.4g}"
        self.reason = f"timeout: past hydra.sweeper.trial_timeout={self.limit:g} s at {self.unit} {step}{last}"
        if value is not None and self.single:
            self.trial.report(float(value), step)
        if value is not None:
            self.trial.set_user_attr(LAST_VALUE_ATTR, float(value))
        self.trial.set_user_attr(TIMEOUT_ATTR, self.reason)
        return False

    def _compared(self, step: int) -> str:
        """What the pruner compared with, in its own terms."""
        import optuna

        from .compat import reduction_factor
        from .pruners import inner, reached

        pruner = inner(self.study.pruner)
        if isinstance(pruner, (optuna.pruners.MedianPruner, optuna.pruners.PercentilePruner)):
            done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            others = [t.intermediate_values[step] for t in done if step in t.intermediate_values]
            if not others:
                return ""
            what = "median" if isinstance(pruner, optuna.pruners.MedianPruner) else "percentile"
            middle = statistics.median(others)
            return f"; {what} pruner, {len(others)} completed trial(s) at this {self.unit}, their median {middle:.4g}"
        if isinstance(pruner, (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.HyperbandPruner)):
            n = reached(self.study, step, self.trial.number)
            eta = reduction_factor(pruner)
            share = f"the best 1/{eta} of " if eta else "the best of "
            return f"; not in {share}the {n + 1} trials that reached this rung ({self.unit} {step})"
        return ""


def job_overrides(
    study: str,
    number: int,
    storage: str | None,
    pruner: str | None,
    stack: list[int] | None = None,
    trial_timeout: float | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[str, ...]:
    """The Hydra overrides that hand a job its trial (`++`: adds the keys or replaces them); `extra`:
    more environment variables (tracking)."""
    values = {STUDY_ENV: study, TRIAL_ENV: str(number), STORAGE_ENV: storage, PRUNER_ENV: pruner, **(extra or {})}
    if trial_timeout:
        values[TIMEOUT_ENV] = repr(float(trial_timeout))
    if stack:
        values[STACK_ENV] = ",".join(map(str, stack))
    return tuple(f"++hydra.job.env_set.{k}={quoted(v)}" for k, v in values.items() if v is not None)


def quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def instantiate_pruner(config: str | None) -> Any:
    from hydra.utils import instantiate

    cfg = json.loads(config or '{"_target_": "optuna.pruners.NopPruner"}')
    return instantiate(cfg, _execution_whitelist_=PRUNER_TARGETS)
