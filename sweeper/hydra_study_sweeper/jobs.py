"""Jobs: what a launcher runs for the sweep, and the one place that knows how trials and jobs map.

A job is one trial, one seed of a repeated trial (`repeats`), or a stack of trials (`stack`). The
loop asks trials, hands them to `Shape.jobs`, starts the jobs it gets back as places free up, and
hands each job's return to `Shape.ended`, which reads the job's answer for each of its trials once
(wire.py: its return, its reporter's stored word, its results file) and judges it. `Shape.decided`
then says which trials are decided and how to decide each (`Decision`). Nothing else in the sweeper
branches on repeats or stacks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from . import outcome, recovery, repeats
from .errors import StorageFailure
from .job import job_overrides, quoted
from .outcome import JobLost, Outcome
from .plan import Inputs, Plan
from .rungs import Fidelity
from .urls import absolute, has_password
from .wire import LAST_VALUE_ATTR, OUTAGE_ENV, PRUNED_ATTR, REPEAT_ENV, TIMEOUT_ATTR

Decide = Callable[[optuna.Trial], tuple[Outcome, dict]]  # records what a trial's jobs left; its outcome


@dataclass(frozen=True)
class Job:
    key: Any  # the first trial's number, or (trial number, seed index) with repeats
    numbers: tuple[int, ...]  # its trials
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    """What one job left for one of its trials, read once at the job's end, and what it means."""

    ret: Any  # its return (a stack member's part of it), or the launcher's or the watchdog's error
    outcome: Outcome
    results: dict  # its results file
    folder: Path


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
    its jobs not yet ended and the answers of those that did."""

    inputs: Inputs
    plan: Plan
    study: optuna.Study
    env: Callable[[list[int]], dict[str, str]] = lambda numbers: {}
    fidelity: Fidelity | None = None  # multi-fidelity: each trial's rungs are jobs one after another
    open: dict[int, set] = field(default_factory=dict)  # trial number -> keys of its jobs not yet ended
    answers: dict[int, dict[Any, Answer]] = field(default_factory=dict)  # trial number -> job key -> answer

    @property
    def settings(self) -> Any:
        return self.inputs.settings

    @property
    def hand(self) -> Handing:
        return Handing(self.settings, self.study, self.plan)

    def configure(self, trial: optuna.Trial) -> tuple[str, ...]:
        """The trial's parameter overrides (from its suggested values)."""
        return self.inputs.trial_configurator.overrides(trial, self.plan.space, self.inputs.config)

    def jobs(self, members: list[tuple[optuna.Trial, tuple[str, ...]]]) -> list[Job]:
        """The jobs of freshly asked trials: one per trial, one per seed of a repeated trial, or one
        for a stack (whose other members' folders get their config first; that may raise)."""
        numbers = [trial.number for trial, _ in members]
        stack = numbers if self.settings.stack > 1 else None
        made = [
            self.hand.job(trial.number, overrides, stack, self.env(stack or [trial.number]))
            for trial, overrides in members
        ]
        for number, job in zip(numbers[1:], made[1:], strict=True):
            write_member(self.inputs, self.plan.sweep_dir, number, job)
        if self.fidelity is not None:
            [(trial, overrides)] = members
            jobs = [self.rung_job(trial.number, self.fidelity.first(self.study, trial, overrides))]
        elif self.plan.seeds:
            [(trial, overrides)] = members
            n = trial.number
            env = [self.env([n]), *({} for _ in self.plan.seeds[1:])]  # the first seed's steps are the trial's
            jobs = [Job((n, k), (n,), self.hand.seed(n, overrides, k, env[k])) for k in range(len(self.plan.seeds))]
        else:
            jobs = [Job(numbers[0], tuple(numbers), made[0])]
        for job in jobs:
            for number in job.numbers:
                self.open.setdefault(number, set()).add(job.key)
                self.answers.setdefault(number, {})
        return jobs

    def folder(self, key: Any) -> Path:
        """A job's folder: its first trial's, or its seed's or its rung's in its trial's folder."""
        if isinstance(key, tuple) and isinstance(key[1], str):
            return self.plan.sweep_dir / str(key[0]) / key[1]
        if isinstance(key, tuple):
            return self.plan.sweep_dir / repeats.folder(key[0], self.plan.seeds[key[1]])
        return self.plan.sweep_dir / str(key)

    def ended(self, job: Job, ret: Any, trial: Callable[[int], optuna.Trial]) -> tuple[set, list[Job]]:
        """Takes in a job's return and reads its answer for each of its trials (`trial(number)`: the
        live trial); gives the keys of its trials' other jobs that are not to start any more (a seed
        that was pruned or failed ends its trial) and the jobs to start next (a promoted trial's
        next rung)."""
        stacked = self.settings.stack > 1  # a stack's job returns one result per trial, even a stack of one
        parts = outcome.of_stack(ret, list(job.numbers)) if stacked else {job.numbers[0]: ret}
        stop, more = set(), []
        for number in job.numbers:
            self.open[number].discard(job.key)
            folder = self.folder(job.key) if self.plan.seeds or self.fidelity else self.plan.sweep_dir / str(number)
            answer = self.answers[number][job.key] = self.answer(trial(number), folder, parts[number])
            if self.plan.seeds and answer.outcome.state != TrialState.COMPLETE:
                stop |= self.open[number]
            if self.fidelity is not None:
                after = self.fidelity.ended(
                    self.study, trial(number), job.key, answer.outcome, answer.results.get("seconds")
                )
                if isinstance(after, int):
                    more.append(self.rung_job(number, after))
                self.answers[number] = {
                    job.key: replace(answer, outcome=answer.outcome if isinstance(after, int) else after)
                }
        return stop, more

    def dropped(self, job: Job) -> None:
        """A job that will not start after all."""
        for number in job.numbers:
            self.open[number].discard(job.key)

    def decided(self) -> list[Decision]:
        """The trials none of whose jobs runs or waits any more, in number order."""
        done = sorted(n for n, keys in self.open.items() if not keys)
        for number in done:
            del self.open[number]
        return [self.decision(n, self.answers.pop(n)) for n in done]

    def decision(self, number: int, answers: dict[Any, Answer]) -> Decision:
        if self.plan.seeds:
            seeds, first = self.plan.seeds, self.folder((number, 0))
            by_seed = {k: a for (_, k), a in answers.items()}
            return Decision(number, lambda trial: repeated(self.settings, seeds, first, trial, by_seed))
        [answer] = answers.values()
        if isinstance(answer.ret, JobLost) and answer.ret.again:
            return Decision(number, again=True)
        return Decision(number, lambda trial: self.single(trial, answer))

    def forget(self, number: int) -> None:
        """A trial told (or without its jobs: an interrupt, a failure to prepare them)."""
        self.open.pop(number, None)
        self.answers.pop(number, None)
        if self.fidelity is not None:
            self.fidelity.forget(number)

    def rung_job(self, number: int, rung: int) -> Job:
        key, overrides, subdir, env = self.fidelity.job(number, rung)
        self.open.setdefault(number, set()).add(key)
        self.answers.setdefault(number, {})
        return Job(key, (number,), self.hand.job(number, overrides, None, {**self.env([number]), **env}, subdir))

    def answer(self, trial: optuna.Trial, folder: Path, ret: Any) -> Answer:
        """A job's answer for one trial, judged: its return, its results file and what its reporter
        stored (why it stopped). A storage that fails here stops the sweep; anything else around
        this one trial (its folder unreadable) fails the trial."""
        try:
            results = outcome.read_results(folder, self.settings.results_file)
            stored = recovery.stored_user_attrs(self.study, trial)
        except Exception as err:
            StorageFailure.raise_if_storage(err, self.settings.storage)
            return Answer(ret, Outcome.failed(f"{type(err).__name__}: {err}"), {}, folder)
        n = len(self.settings.directions)
        judged = outcome.of_job(ret, results, n, stored.get(PRUNED_ATTR), stored.get(TIMEOUT_ATTR))
        return Answer(ret, judged, results, folder)

    def single(self, trial: optuna.Trial, answer: Answer) -> tuple[Outcome, dict]:
        if isinstance(answer.ret, JobLost) and answer.ret.last:
            keep_last_value(self.study, trial)
        outcome.record(trial, answer.results, self.settings.record, answer.folder)
        outcome.upload(trial, answer.folder, self.settings.artifact_dir, self.settings.artifacts)
        return answer.outcome, answer.results


def repeated(s: Any, seeds: tuple[int, ...], first: Path, trial: optuna.Trial, answers: dict[int, Answer]) -> tuple:
    """A repeated trial from its seeds' jobs: the mean of their values, their results files
    averaged, each seed's files uploaded; its folder (`dir`) is its first seed's, `first`."""
    outcomes, found = [], []
    for k in range(len(seeds)):
        answer = answers.get(k)
        outcomes.append(None if answer is None else answer.outcome)
        if answer is not None:
            found.append(answer.results)
            outcome.upload(trial, answer.folder, s.artifact_dir, s.artifacts)
    result, attrs = repeats.combine(outcomes, seeds, s.names)
    merged = repeats.mean_results(found)
    outcome.record(trial, merged, s.record, first)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return result, merged


def keep_last_value(study: optuna.Study, trial: optuna.Trial) -> None:
    """A stopped trial's last reported value, as the user attribute `last_value`."""
    steps = recovery.stored_trial(study, trial).intermediate_values
    if steps:
        trial.set_user_attr(LAST_VALUE_ATTR, steps[max(steps)])


@dataclass(frozen=True)
class Handing:
    """What a job is handed with its trial's overrides: the study, the storage URL (unless it holds
    a password, which travels in the environment instead), the pruner, limits, its folder, and
    `env` (what the extras add)."""

    settings: Any
    study: optuna.Study
    plan: Plan

    def job(
        self, number: int, overrides: tuple, stack: list[int] | None, env: dict[str, str], subdir: str | None = None
    ) -> tuple[str, ...]:
        """One trial's job, a stack's (its first member's), or a rung's (in `subdir`)."""
        return (*overrides, *self.handed(number, stack, env), *self.folder(subdir or str(number)))

    def seed(self, number: int, overrides: tuple[str, ...], k: int, env: dict[str, str]) -> tuple[str, ...]:
        """One seed's job of a repeated trial: the seed, and a folder in the trial's."""
        key, seed = self.settings.seed_key, self.plan.seeds[k]
        own = tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key)  # a seed fixed on the command line
        return (
            *own,
            f"++{key}={seed}",  # adds the key or replaces it
            *self.handed(number, None, env),
            f"++hydra.job.env_set.{REPEAT_ENV}={quoted(f'{k}/{len(self.plan.seeds)}')}",
            *self.folder(repeats.folder(number, seed)),
        )

    def handed(self, number: int, stack: list[int] | None, env: dict[str, str]) -> tuple[str, ...]:
        s = self.settings
        storage = None if has_password(s.storage) else absolute(s.storage)
        env = {OUTAGE_ENV: repr(float(s.outage_timeout)), **env}
        return job_overrides(self.study.study_name, number, storage, s.pruner_json, stack, s.trial_timeout, env)

    def folder(self, subdir: str) -> tuple[str, str]:
        return f"hydra.sweep.dir={self.plan.sweep_dir}", f"hydra.sweep.subdir={subdir}"


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
