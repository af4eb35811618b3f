"""What plugs into the run loop beside trials and jobs: GPU slots, the hung-job watchdog, MLflow and
TensorBoard tracking. Each is an `Extra`; the loop calls `Extras`, the list of those switched on,
at a few moments (a job's environment and start, a look while jobs run, a job's end, a trial's
start and end, the sweep's end) and never knows which are on. A new feature plugs in here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from . import recovery, watchdog
from .gpus import Slots
from .job import quoted
from .outcome import JobLost, Outcome
from .wire import DIR_ATTR, SEEDS_ATTR, TOKEN_ENV, VISIBLE_ENV

log = logging.getLogger(__name__)


class Extra:
    """Every hook does nothing unless an extra says otherwise."""

    def job_env(self, numbers: list[int]) -> dict[str, str]:
        """More environment for a job of these trials (tracked ones)."""
        return {}

    def starting(self, key: Any, numbers: tuple[int, ...], folder: Path) -> tuple[str, ...]:
        """Overrides to add as the job `key` of these trials starts into `folder`."""
        return ()

    def look(self, paused: bool) -> list[tuple[Any, JobLost]]:
        """Jobs to end now, without waiting for their launcher; `paused`: the storage is away."""
        return []

    def job_ended(self, key: Any, ret: Any) -> Any:
        """A job's return, as the sweeper should take it."""
        return ret

    def trial_started(self, trial: optuna.Trial, fixed: dict[str, Any]) -> None:
        """A trial asked, its parameters suggested (`fixed`: those the command line set)."""

    def trial_ended(self, study: optuna.Study, trial: optuna.Trial, result: Outcome, seconds: float) -> None:
        pass

    def progress(self, study: optuna.Study, tally: Any, target: int) -> None:
        """Jobs ended, and the study was looked at again (tally: recovery.Tally)."""

    def sweep_ended(self, interrupted: bool) -> None:
        pass


class Extras(Extra):
    """The extras switched on, called in turn."""

    def __init__(self, extras: list[Extra]) -> None:
        self.extras = extras

    def job_env(self, numbers: list[int]) -> dict[str, str]:
        return {k: v for e in self.extras for k, v in e.job_env(numbers).items()}

    def starting(self, key: Any, numbers: tuple[int, ...], folder: Path) -> tuple[str, ...]:
        return tuple(o for e in self.extras for o in e.starting(key, numbers, folder))

    def look(self, paused: bool) -> list[tuple[Any, JobLost]]:
        return [found for e in self.extras for found in e.look(paused)]

    def job_ended(self, key: Any, ret: Any) -> Any:
        for e in self.extras:
            ret = e.job_ended(key, ret)
        return ret

    def trial_started(self, trial: optuna.Trial, fixed: dict[str, Any]) -> None:
        for e in self.extras:
            e.trial_started(trial, fixed)

    def trial_ended(self, study: optuna.Study, trial: optuna.Trial, result: Outcome, seconds: float) -> None:
        for e in self.extras:
            e.trial_ended(study, trial, result, seconds)

    def progress(self, study: optuna.Study, tally: Any, target: int) -> None:
        for e in self.extras:
            e.progress(study, tally, target)

    def sweep_ended(self, interrupted: bool) -> None:
        for e in self.extras:
            e.sweep_ended(interrupted)


class Console(Extra):
    """The sweep's own lines: each trial's start and end, and the progress after jobs end."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def trial_started(self, trial: optuna.Trial, fixed: dict[str, Any]) -> None:
        log.info("trial %d start: %s", trial.number, shown_params(trial.params))

    def trial_ended(self, study: optuna.Study, trial: optuna.Trial, result: Outcome, seconds: float) -> None:
        if result.state == TrialState.FAIL:
            log.warning("trial %d failed after %.1f s: %s", trial.number, seconds, result.reason)
        elif result.state == TrialState.PRUNED:
            log.info("trial %d %s (%s)", trial.number, result.reason, shown_params(trial.params))
        else:
            attrs = trial.user_attrs
            values = ", ".join(
                f"{n}={v:.4g}" + (f" ± {attrs[f'{n}_std']:.2g}" if f"{n}_std" in attrs else "")
                for n, v in zip(self.names, result.values, strict=True)
            )
            if SEEDS_ATTR in attrs:
                values += f" (mean of seeds {', '.join(map(str, attrs[SEEDS_ATTR]))})"
            log.info("trial %d end: %s in %.3g s (%s)", trial.number, values, seconds, shown_params(trial.params))

    def progress(self, study: optuna.Study, tally: Any, target: int) -> None:
        done, failed, pruned = tally.counted, tally.failed, tally.pruned
        notes = [f"{n} {what}" for n, what in ((pruned, "pruned"), (failed, "failed")) if n]
        note = f" ({', '.join(notes)})" if notes else ""
        best = ""
        if done - failed - pruned > 0:
            if len(self.names) == 1:
                b = study.best_trial
                best = f", best {self.names[0]} {b.value:.4g} (trial {b.number})"
            else:
                best = f", Pareto front of {len(study.best_trials)} trial(s)"
        log.info("progress: %d / %d trials done%s%s", done, target, note, best)


def trials(numbers: tuple[int, ...]) -> str:
    """`trial 3` or `trials 3, 4, 5`."""
    return f"trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"


def shown_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class GpuSlots(Extra):
    """Each job on a GPU slot of its own (CUDA_VISIBLE_DEVICES), freed when it ends."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots

    def starting(self, key: Any, numbers: tuple[int, ...], folder: Path) -> tuple[str, ...]:
        gpu = self.slots.take(key)
        if gpu is None:
            return ()
        log.info("%s on GPU %s", trials(numbers), gpu)
        return (f"++hydra.job.env_set.{VISIBLE_ENV}={quoted(gpu)}",)

    def job_ended(self, key: Any, ret: Any) -> Any:
        self.slots.free(key)
        return ret


class Watching(Extra):
    """The hung-job watchdog for jobs in processes of their own: a job silent too long is stopped,
    and a job that died or was caught up in its pool's death says so."""

    def __init__(self, dog: watchdog.Watchdog) -> None:
        self.dog = dog
        self.numbers: dict[Any, tuple[int, ...]] = {}

    def starting(self, key: Any, numbers: tuple[int, ...], folder: Path) -> tuple[str, ...]:
        self.numbers[key] = numbers
        return (f"++hydra.job.env_set.{TOKEN_ENV}={quoted(self.dog.started(key, folder))}",)

    def look(self, paused: bool) -> list[tuple[Any, JobLost]]:
        hung, gone = self.dog.look(paused=paused)
        lost = [found for key, w in hung if (found := self.stop(key, w)) is not None]
        return lost + [(key, JobLost(f"{w.hung}; its processes were stopped", last=True)) for key, w in gone]

    def stop(self, key: Any, w: watchdog.Watch) -> tuple[Any, JobLost] | None:
        """A hung job: its processes are stopped (its trials are told when its launcher returns); one
        on another machine is left to its scheduler, its trials told now."""
        numbers = self.numbers.get(key, ())
        log.warning("%s %s", trials(numbers), w.hung)
        why = self.dog.stop(w)
        if why is None:
            return None
        log.warning("%s: it cannot be stopped from this worker; the sweep goes on without it", why)
        return key, JobLost(w.hung, last=True)

    def job_ended(self, key: Any, ret: Any) -> Any:
        """A job's return, or why it was lost: stopped as hung, killed (joblib's worker died), or
        caught up in another job's death (joblib stops its whole pool: queued again)."""
        self.numbers.pop(key, None)
        w = self.dog.ended(key)
        if isinstance(ret, JobLost):  # already decided (a job abandoned without its launcher)
            return ret
        if w is not None and w.hung:
            return JobLost(f"{w.hung}; its processes were stopped", last=True)
        if not watchdog.pool_broke(ret) or not watchdog.POOL_DEATHS:
            return ret
        if w is not None and w.pid is None:  # it died before the watchdog's last look
            watchdog.read(w, time.monotonic())
        pid = w.pid if w is not None else None
        if pid in watchdog.POOL_DEATHS:
            return JobLost(watchdog.killed_reason(watchdog.POOL_DEATHS[pid]))
        return JobLost("interrupted", again=True)


class Tracking(Extra):
    """MLflow and TensorBoard (tracking.SweepTracker): a run per trial, its steps, its end."""

    def __init__(self, tracker: Any, names: list[str]) -> None:
        self.tracker, self.names = tracker, names

    def job_env(self, numbers: list[int]) -> dict[str, str]:
        return self.tracker.job_env(numbers)

    def trial_started(self, trial: optuna.Trial, fixed: dict[str, Any]) -> None:
        self.tracker.started(trial.number, {**fixed, **trial.params})

    def trial_ended(self, study: optuna.Study, trial: optuna.Trial, result: Outcome, seconds: float) -> None:
        job_dir = trial.user_attrs.get(DIR_ATTR)
        attrs = recovery.stored_user_attrs(study, trial)  # with what the job's reporter wrote
        self.tracker.ended(trial, attrs, result, self.names, Path(job_dir) if job_dir else None)

    def sweep_ended(self, interrupted: bool) -> None:
        if interrupted:
            self.tracker.interrupted()
        else:
            self.tracker.close()
