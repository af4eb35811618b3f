"""Jobs: what a launcher runs for the sweep, and the one place that knows how trials and jobs map.

A job is one trial, one seed of a repeated trial (`repeats`), or a stack of trials (`stack`). The
loop asks trials, hands them to `Shape.jobs`, starts the jobs it gets back as places free up, and
hands each job's return to `Shape.ended`, which says which trials are now decided and how to
decide each (`Decision`). Nothing else in the sweeper branches on repeats or stacks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from . import outcome, recovery, repeats
from .job import OUTAGE_ENV, PRUNED_ATTR, REPEAT_ENV, TIMEOUT_ATTR, job_overrides, quoted
from .outcome import JobLost, Outcome
from .plan import Inputs, Plan
from .urls import absolute, has_password

Decide = Callable[[optuna.Trial], tuple[Outcome, dict]]  # records what a trial's jobs left; its outcome


@dataclass(frozen=True)
class Job:
    key: Any  # the first trial's number, or (trial number, seed index) with repeats
    numbers: tuple[int, ...]  # its trials
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """A trial whose jobs all ended: `decide` records what they left and gives its outcome; with
    `again`, it was caught up in another job's death and is queued again instead."""

    number: int
    decide: Decide | None = None
    again: bool = False


@dataclass
class Shape:
    """How this sweep's trials become jobs and their jobs' returns become outcomes. `env(numbers)`:
    what the extras add to a job's environment (tracking). Keeps, per trial in flight, the keys of
    its jobs not yet ended and the returns of those that did."""

    inputs: Inputs
    plan: Plan
    study: optuna.Study
    env: Callable[[list[int]], dict[str, str]] = lambda numbers: {}
    open: dict[int, set] = field(default_factory=dict)  # trial number -> keys of its jobs not yet ended
    rets: dict[int, dict[Any, Any]] = field(default_factory=dict)  # trial number -> job key (seed) -> return

    @property
    def settings(self) -> Any:
        return self.inputs.settings

    def configure(self, trial: optuna.Trial) -> tuple[str, ...]:
        """The trial's parameter overrides (from its suggested values)."""
        return self.inputs.trial_configurator.overrides(trial, self.plan.space, self.inputs.config)

    def jobs(self, members: list[tuple[optuna.Trial, tuple[str, ...]]]) -> list[Job]:
        """The jobs of freshly asked trials: one per trial, one per seed of a repeated trial, or one
        for a stack (whose other members' folders get their config first; that may raise)."""
        numbers = [trial.number for trial, _ in members]
        stack = numbers if self.settings.stack > 1 else None
        made = [self.member_job(trial.number, overrides, stack) for trial, overrides in members]
        for number, job in zip(numbers[1:], made[1:], strict=True):
            write_member(self.inputs, self.plan.sweep_dir, number, job)
        if self.plan.seeds:
            [(trial, overrides)] = members
            n = trial.number
            jobs = [Job((n, k), (n,), self.seed_job(n, overrides, k)) for k in range(len(self.plan.seeds))]
        else:
            jobs = [Job(numbers[0], tuple(numbers), made[0])]
        for job in jobs:
            for number in job.numbers:
                self.open.setdefault(number, set()).add(job.key)
                self.rets.setdefault(number, {})
        return jobs

    def folder(self, key: Any) -> Path:
        """A job's folder: its first trial's, or its seed's in its trial's folder."""
        if isinstance(key, tuple):
            return self.plan.sweep_dir / repeats.folder(key[0], self.plan.seeds[key[1]])
        return self.plan.sweep_dir / str(key)

    def ended(self, job: Job, ret: Any, trial: Callable[[int], optuna.Trial]) -> set:
        """Takes in a job's return; gives the keys of its trials' other jobs that are not to start
        any more: a seed that was pruned or failed ends its trial (`trial(number)`: the live trial)."""
        stacked = self.settings.stack > 1  # a stack's job returns one result per trial, even a stack of one
        parts = outcome.of_stack(ret, list(job.numbers)) if stacked else {job.numbers[0]: ret}
        for number in job.numbers:
            self.open[number].discard(job.key)
            self.rets[number][job.key] = parts[number]
        if not self.plan.seeds:
            return set()
        number = job.numbers[0]
        if self.judge(trial(number), self.folder(job.key), ret)[0].state != TrialState.COMPLETE:
            return set(self.open[number])
        return set()

    def dropped(self, job: Job) -> None:
        """A job that will not start after all."""
        for number in job.numbers:
            self.open[number].discard(job.key)

    def decided(self) -> list[Decision]:
        """The trials none of whose jobs runs or waits any more, in number order."""
        done = sorted(n for n, keys in self.open.items() if not keys)
        for number in done:
            del self.open[number]
        return [self.decision(n, self.rets.pop(n)) for n in done]

    def decision(self, number: int, rets: dict[Any, Any]) -> Decision:
        if self.plan.seeds:
            return Decision(number, lambda trial: self.repeated(trial, {k: r for (_, k), r in rets.items()}))
        [ret] = rets.values()
        if isinstance(ret, JobLost) and ret.again:
            return Decision(number, again=True)
        return Decision(number, lambda trial: self.single(trial, ret))

    def forget(self, number: int) -> None:
        """A trial told without its jobs (an interrupt, a failure to prepare them)."""
        self.open.pop(number, None)
        self.rets.pop(number, None)

    def seed_job(self, number: int, overrides: tuple[str, ...], k: int) -> tuple[str, ...]:
        """The overrides of one seed's job of a repeated trial: the seed, and a folder in the trial's."""
        key, seed = self.settings.seed_key, self.plan.seeds[k]
        own = tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key)  # a seed fixed on the command line
        env = self.env([number]) if k == 0 else {}  # the first seed's steps are the trial's
        return (
            *own,
            f"++{key}={seed}",  # adds the key or replaces it
            *handed(self.settings, self.study, number, None, env),
            f"++hydra.job.env_set.{REPEAT_ENV}={quoted(f'{k}/{len(self.plan.seeds)}')}",
            f"hydra.sweep.dir={self.plan.sweep_dir}",
            f"hydra.sweep.subdir={repeats.folder(number, seed)}",
        )

    def member_job(self, number: int, overrides: tuple[str, ...], stack: list[int] | None) -> tuple[str, ...]:
        """The overrides of one trial's job (a stack's first member's are the stack's)."""
        return (
            *overrides,
            *handed(self.settings, self.study, number, stack, self.env(stack or [number])),
            f"hydra.sweep.dir={self.plan.sweep_dir}",
            f"hydra.sweep.subdir={number}",
        )

    def judge(self, trial: optuna.Trial, job_dir: Path, ret: Any) -> tuple[Outcome, dict]:
        """One job's outcome (and its results file) from its return and what its reporter stored."""
        results = outcome.read_results(job_dir, self.settings.results_file)
        stored = recovery.stored_user_attrs(self.study, trial)
        n = len(self.settings.directions)
        return outcome.of_job(ret, results, n, stored.get(PRUNED_ATTR), stored.get(TIMEOUT_ATTR)), results

    def single(self, trial: optuna.Trial, ret: Any) -> tuple[Outcome, dict]:
        job_dir = self.plan.sweep_dir / str(trial.number)
        result, results = self.judge(trial, job_dir, ret)
        if isinstance(ret, JobLost) and ret.last:
            keep_last_value(self.study, trial)
        outcome.record(trial, results, self.settings.record, job_dir)
        outcome.upload(trial, job_dir, self.settings.artifact_dir, self.settings.artifacts)
        return result, results

    def repeated(self, trial: optuna.Trial, rets: dict[int, Any]) -> tuple[Outcome, dict]:
        """A repeated trial from its seeds' jobs: the mean of their values, their results files
        averaged, each seed's files uploaded; its folder (`dir`) is its first seed's."""
        s, seeds = self.settings, self.plan.seeds
        outcomes, found = [], []
        for k in range(len(seeds)):
            job_dir = self.folder((trial.number, k))
            if k not in rets:
                outcomes.append(None)
                continue
            result, results = self.judge(trial, job_dir, rets[k])
            outcomes.append(result)
            found.append(results)
            outcome.upload(trial, job_dir, s.artifact_dir, s.artifacts)
        result, attrs = repeats.combine(outcomes, seeds, s.names)
        merged = repeats.mean_results(found)
        outcome.record(trial, merged, s.record, self.folder((trial.number, 0)))
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return result, merged


def keep_last_value(study: optuna.Study, trial: optuna.Trial) -> None:
    """A stopped trial's last reported value, as the user attribute `last_value`."""
    steps = recovery.stored_trial(study, trial).intermediate_values
    if steps:
        trial.set_user_attr("last_value", steps[max(steps)])


def handed(s: Any, study: optuna.Study, number: int, stack: list[int] | None, env: dict[str, str]) -> tuple:
    """What every job gets of its trial: the study, the storage URL (unless it holds a password,
    which travels in the environment instead), the pruner, limits, and `env` (the extras')."""
    storage = None if has_password(s.storage) else absolute(s.storage)
    env = {OUTAGE_ENV: repr(float(s.outage_timeout)), **env}
    return job_overrides(study.study_name, number, storage, s.pruner_json, stack, s.trial_timeout, env)


def write_member(inputs: Inputs, sweep_dir: Path, number: int, job: tuple[str, ...]) -> None:
    """A stack member's .hydra files, as Hydra writes them for a job of its own: its whole task
    config (what the stacked job trains it with) and its overrides."""
    composed = inputs.loader.load_sweep_config(inputs.config, list(job))
    folder = sweep_dir / str(number) / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    task = copy.deepcopy(composed)
    with read_write(task), open_dict(task):
        del task["hydra"]
    OmegaConf.save(task, folder / "config.yaml")
    OmegaConf.save(composed.hydra.overrides.task, folder / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": composed.hydra}), folder / "hydra.yaml")
