"""The run loop: keep up to n_jobs trials of this worker running until the study has its target.

One turn of the loop (`step`) is a few named phases: look at the study (`scan`), start a waiting
job, ask trials (`launch_next`: ask, configure, make their jobs), take in the jobs that ended
(`collect`), wait for other workers' trials, or stop. A run's state lives in one `Run`; a trial goes
from asked to told through two methods of the `Run` alone (`asked`, `tell`), which check the
change: a trial is asked once, told once, and only while this worker runs it. How
trials become jobs and jobs' returns become outcomes (repeats, stacks) is jobs.Shape's business.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from . import outcome, recovery
from .errors import StorageFailure, SweepExit, UserError
from .extras import Extras
from .jobs import Job, Shape
from .journal import vanished
from .launching import Launches
from .outcome import Outcome
from .plan import Plan
from .recovery import Heartbeat, Tally, counts_toward_target
from .settings import Settings
from .signals import raise_pending
from .urls import masked
from .wire import FAIL_ATTR, WORKER_ATTR

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"
HUNG_STOP = 2  # trials stopped as hung, with nothing else ended in this run, before no further one starts


@dataclass(frozen=True)
class Scan:
    """What the study held when last looked at."""

    at: float  # time.monotonic()
    done: int  # trials that count toward the target
    others: list[optuna.trial.FrozenTrial]  # running in other workers
    todo: int  # trials still to start here
    stored: int  # trials in the study (the next trial's number, as far as this worker knows)


@dataclass
class InFlight:
    trial: optuna.Trial
    started: float  # time.perf_counter()


@dataclass
class Run:
    settings: Settings
    plan: Plan
    study: optuna.Study
    heartbeat: Heartbeat
    launches: Launches
    shape: Shape | None  # how trials become jobs and jobs' returns outcomes
    allowed_failures: int
    in_flight: dict[int, InFlight] = field(default_factory=dict)
    jobs: dict[Any, Job] = field(default_factory=dict)  # running, by key
    waiting: list[Job] = field(default_factory=list)  # made, not started
    failures: list[str] = field(default_factory=list)
    told: int = 0  # trials of this run that ended
    hung: int = 0  # of them, those stopped as hung
    stopping: bool = False  # too many failures: start nothing more
    scan: Scan | None = None  # None: look again before the next decision
    announced: bool = False  # the wait for other workers was said
    began: float = field(default_factory=time.monotonic)
    out_of_time: bool = False  # the sweep's timeout passed: start nothing more
    tally: Tally = field(default_factory=Tally)
    extras: Extras = field(default_factory=lambda: Extras([]))  # GPU slots, the watchdog, tracking
    capacity: int = 1  # jobs running at once: n_jobs, or fewer where there are fewer GPU slots

    def asked(self, trial: optuna.Trial) -> None:
        """A trial this worker asked: in flight, its heartbeat kept, its worker's name stored."""
        if trial.number in self.in_flight:
            raise RuntimeError(f"trial {trial.number} asked twice by this worker")
        self.in_flight[trial.number] = InFlight(trial, time.perf_counter())
        self.heartbeat.add(trial)
        trial.set_user_attr(WORKER_ATTR, WORKER)

    def tell(self, number: int, result: Outcome, counted: bool = True) -> bool:
        """The one way a trial of this worker ends: no longer in flight, its heartbeat and jobs'
        bookkeeping dropped, and `result` stored (outcome.tell). False when another worker finished
        it first. `counted`: it ended in this run (surplus trials, parameters that could not be
        built and trials lost with joblib's pool, queued again, are not). A trial not in flight
        here cannot be told: that is a fault of the sweeper."""
        flight = self.in_flight.pop(number, None)
        if flight is None:
            raise RuntimeError(f"trial {number} told, but this worker does not run it (told twice?)")
        self.heartbeat.remove(flight.trial)
        if self.shape is not None:
            self.shape.forget(number)
        self.told += counted
        return outcome.tell(self.study, flight.trial, result)


def run(r: Run) -> None:
    while step(r):
        pass


def step(r: Run) -> bool:
    """One turn of the loop; False once the study has its target and nothing of this worker runs."""
    raise_pending()
    if r.scan is None:
        r.scan = scan(r)
    if r.settings.timeout and not r.out_of_time and time.monotonic() - r.began > r.settings.timeout:
        r.out_of_time = True
        running = f"; {len(r.in_flight)} running finish first" if r.in_flight else ""
        log.info("time limit hydra.sweeper.timeout=%g s reached: no new trial starts%s", r.settings.timeout, running)
    if r.waiting and len(r.jobs) < r.capacity:
        start_job(r, r.waiting.pop(0))
    elif r.scan.todo > 0 and not r.stopping and not r.out_of_time and len(r.jobs) < r.capacity:
        launch_next(r)
    elif r.in_flight:
        collect(r)
    elif r.stopping:
        raise too_many_failures(r)
    elif r.out_of_time:
        return False
    elif r.scan.others and r.plan.storage is not None:
        wait_for_others(r)
    else:
        if r.told == 0:
            nothing_to_run(r)
        return False
    return True


def scan(r: Run) -> Scan:
    """Fail other workers' stale trials, then count what is done, running elsewhere and left."""
    still_there(r)
    recovery.fail_stale_trials(r.study, r.plan.storage)
    trials = r.study.get_trials(deepcopy=False)
    r.tally.update(trials)
    done = r.tally.counted
    others = [t for t in running([trials[n] for n in sorted(r.tally.open)]) if t.number not in r.in_flight]
    todo = r.plan.n_trials - done - len(others) - len(r.in_flight)
    return Scan(time.monotonic(), done, others, todo, len(trials))


def still_there(r: Run) -> None:
    """Before the loop writes: a study whose Redis server lost it (restarted empty) ends this worker."""
    if r.plan.storage is not None and vanished(r.plan.storage):
        # its jobs' workers stop too: their trials went with the study, and loky waits for them at exit
        r.launches.abandon()
        raise SweepExit(
            2,
            f"study {r.plan.name} vanished from {masked(r.settings.storage)} (the server restarted without "
            "persistence, or was flushed): this worker stops rather than go on in an empty study of the same "
            "name. Its trials are lost; switch the server's persistence on before the next sweep",
        )


def launch_next(r: Run) -> None:
    """Ask up to `stack` trials and launch them as one job; when the study filled up first, look again."""
    wanted = min(r.settings.stack, r.scan.todo)
    members = []
    while len(members) < wanted:
        asked = ask(r)
        if asked is None:
            break
        members.append(asked)
    if len(members) < wanted:
        r.scan = None
    if members:
        launch(r, members)


def ask(r: Run) -> tuple[optuna.Trial, tuple[str, ...]] | None:
    """One trial and its parameter overrides; None when the study had its target first."""
    # Each draw is seeded with the sampler's seed and the trial's number (plan.draw_seed): a rerun continues
    # the search, workers sharing the study draw apart, one seeded worker alone is reproducible.
    # Relative samplers draw inside ask() (the number is guessed from the trials stored),
    # independent ones when the parameters are suggested (the number is known).
    still_there(r)
    r.study.sampler = r.plan.make_sampler(r.scan.stored)
    trial = r.study.ask()
    r.asked(trial)
    if surplus(r, trial):
        return None
    r.study.sampler = r.plan.make_sampler(trial.number)
    try:
        overrides = r.shape.configure(trial)
    except Exception as err:  # a custom search space that raises, overlapping keys
        if not r.tell(trial.number, Outcome.failed(f"{type(err).__name__}: {err}"), counted=False):
            # another worker failed it as stale first (this worker's heartbeat lapsed in an outage)
            log.warning("trial %d was ended by another worker while its parameters were drawn", trial.number)
            return None
        raise UserError(f"cannot build the trial's parameters: {err}") from None
    r.extras.trial_started(trial, r.plan.space.fixed)
    r.scan = Scan(r.scan.at, r.scan.done, r.scan.others, r.scan.todo - 1, r.scan.stored + 1)
    return trial, overrides


def launch(r: Run, members: list[tuple[optuna.Trial, tuple[str, ...]]]) -> None:
    """The trials' jobs, to start as places free up; trials whose jobs cannot be made (a stack's
    folders on a full disk) fail, and the sweep goes on."""
    try:
        jobs = r.shape.jobs(members)
    except Exception as err:
        StorageFailure.raise_if_storage(err, r.settings.storage)
        failed = Outcome.failed(f"cannot prepare the stack's folders: {err}")
        for trial, _ in members:
            if r.tell(trial.number, failed):
                say_outcome(r, trial, failed, 0.0)  # counted against max_failure_rate like any failure
        r.stopping = r.stopping or len(r.failures) > r.allowed_failures
        r.scan = None
        return
    if r.settings.stack > 1:
        numbers = [trial.number for trial, _ in members]
        log.info("trials %s train together (stack of %d)", ", ".join(map(str, numbers)), len(numbers))
    r.waiting += jobs


def start_job(r: Run, job: Job) -> None:
    """Launch a job made by launch(), with what the extras add (a GPU slot, the watchdog's token)."""
    r.jobs[job.key] = job
    added = r.extras.starting(job.key, job.numbers, r.shape.folder(job.key))
    r.launches.start(job.key, (*job.overrides, *added), job.numbers[0])


def surplus(r: Run, trial: optuna.Trial) -> bool:
    """Workers sharing a study may ask at the same instant for its last place. Trial numbers are
    handed out in order, so the first n_trials trials that count (done, running or queued) run
    and a later one gives way: it ends FAIL (`surplus`, not counted) before any job starts, and
    parameters it took from the queue go back to it."""
    trials = r.study.get_trials(deepcopy=False)
    r.tally.update(trials)
    # every RUNNING trial, also one whose worker has not yet written its name (it asked an instant
    # ago): leaving it out let two workers each take the last place
    ahead = r.tally.live_below(trials, trial.number)
    if ahead < r.plan.n_trials:
        return False
    queued = recovery.queued_params(r.study, trial)
    attrs = {k: v for k, v in trial.user_attrs.items() if k != WORKER_ATTR}
    if r.tell(trial.number, Outcome.failed(recovery.SURPLUS), counted=False) and queued:
        r.study.enqueue_trial(queued, user_attrs=attrs, skip_if_exists=False)
    log.info("trial %d not run: the study reached its target of %d trials", trial.number, r.plan.n_trials)
    return True


def collect(r: Run) -> None:
    """Tell the trials whose jobs ended (waiting a second for one); look at the study again after."""
    for key, lost in r.extras.look(paused=recovery.storage_away(r.plan.storage)):
        if key in r.jobs:  # told without waiting for its launcher (whose late return is then ignored)
            job_ended(r, key, lost)
            r.scan = None
    ended = r.launches.wait(timeout=1.0)
    for key, ret in ended:
        if key in r.jobs:  # not a hung job on another machine, told when it was found
            job_ended(r, key, ret)
    if ended:
        r.scan = scan(r)  # the next decision's look, which the progress line reads too
        r.extras.progress(r.study, r.tally, r.plan.n_trials)  # the progress line
        r.stopping = r.stopping or len(r.failures) > r.allowed_failures or all_hung(r)
    elif r.scan is not None and time.monotonic() - r.scan.at > max(5, r.settings.heartbeat_interval):
        r.scan = None  # other workers' trials may have gone stale


def job_ended(r: Run, key: Any, ret: Any) -> None:
    """A job's end (as the extras take it): its trials' waiting jobs that are not to start any more
    go, their next jobs (a promoted trial's next rung) wait first in line, and each trial all of
    whose jobs ended is told."""
    job = r.jobs.pop(key)
    ret = r.extras.job_ended(key, ret)
    stop, more = r.shape.ended(job, ret, lambda number: r.in_flight[number].trial)
    for dropped in [w for w in r.waiting if w.key in stop]:
        r.waiting.remove(dropped)
        r.shape.dropped(dropped)
    r.waiting[:0] = more  # a promoted trial's next rung starts before any new trial
    for decision in r.shape.decided():
        if decision.again:
            lost_with_pool(r, decision.number)
        else:
            conclude(r, decision.number, decision.decide)


def lost_with_pool(r: Run, number: int) -> None:
    """A trial whose job joblib failed because another job's worker died: failed as `interrupted`
    (not counted, not a failure of this run) and queued again."""
    trial = r.in_flight[number].trial
    if r.tell(number, Outcome.failed("interrupted"), counted=False):  # it runs again: not one that ended
        queued = recovery.requeue(r.study, trial)
        log.warning(
            "trial %d was lost when joblib stopped its worker pool (another job's process died)%s",
            number,
            ": queued again" if queued else "",
        )


def conclude(r: Run, number: int, decide: Any) -> None:
    """Tell a trial whose jobs all ended: `decide(trial)` records what they left and gives the
    outcome; then say so."""
    still_there(r)
    flight = r.in_flight[number]
    trial, seconds = flight.trial, time.perf_counter() - flight.started
    results: dict = {}
    try:
        result, results = decide(trial)
    except Exception as err:  # the storage or the file system failed around this one trial
        StorageFailure.raise_if_storage(err, r.settings.storage)
        result = Outcome.failed(f"{type(err).__name__}: {err}")
    try:
        told = r.tell(number, result)
    except Exception as err:
        StorageFailure.raise_if_storage(err, r.settings.storage)
        raise
    if not told:
        log.warning(
            "trial %d was finished by another worker while this one was stopped (failed as stale; "
            "its retry runs): this result is not recorded",
            number,
        )
        return
    say_outcome(r, trial, result, results.get("seconds", seconds))


def say_outcome(r: Run, trial: optuna.Trial, result: Outcome, seconds: float) -> None:
    """A trial told: a failure counts against max_failure_rate; the extras hear of its end."""
    if result.state == TrialState.FAIL:
        r.failures.append(result.reason)
        r.hung += result.reason.startswith("hung:")
    r.extras.trial_ended(r.study, trial, result, seconds)


def wait_for_others(r: Run) -> None:
    """Only other workers' trials remain: wait for them (their heartbeats tell whether they live)."""
    if not r.announced:
        numbers = ", ".join(str(t.number) for t in r.scan.others)
        log.info("waiting for %d trial(s) running in another process: %s", len(r.scan.others), numbers)
        if not r.heartbeat.enabled:
            log.info(
                "%s keeps no heartbeats: a worker that died on another machine leaves its "
                "trials running, and this wait ends only with Ctrl-C (the study keeps all)",
                masked(r.settings.storage),
            )
        r.announced = True
    time.sleep(min(r.settings.heartbeat_interval, 5))
    r.scan = None


def all_hung(r: Run) -> bool:
    """Every trial this run ended (two at least) was stopped as hung: the limits, not the trials,
    are likely wrong, and each further trial would use up one more of the study's target."""
    return r.hung >= HUNG_STOP and r.hung == r.told


def too_many_failures(r: Run) -> SweepExit:
    if all_hung(r):
        return SweepExit(
            1,
            f"all {r.hung} trials this run ended were stopped as hung (last: {r.failures[-1]}): the limit is "
            "likely shorter than this app's start-up or its steps, so no further trial is started. Raise "
            "hydra.sweeper.stall_timeout (silence between steps) or hydra.sweeper.start_timeout (time to the "
            "first step), then run the same command: the hung trials count toward the target",
            summarize=True,
        )
    return SweepExit(
        1,
        f"{len(r.failures)} of the {r.told} trials run failed (last: {r.failures[-1]}): more than "
        f"max_failure_rate={r.settings.max_failure_rate} allows ({r.allowed_failures} of this run's trials)",
        summarize=True,
    )


def nothing_to_run(r: Run) -> None:
    trials = r.study.get_trials(deepcopy=False)
    done, name, target = r.scan.done, r.plan.name, r.plan.n_trials
    if trials and not any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials):
        reasons = sorted({t.user_attrs.get(FAIL_ATTR, "?") for t in trials if t.state == TrialState.FAIL})
        raise SweepExit(
            1,
            f"study {name} already has {done} of {target} trials, and all of them failed "
            f"({'; '.join(reasons)[:300]}): nothing to run. Fix the cause and start another study "
            "(hydra.sweeper.study_name=NAME), or raise hydra.sweeper.n_trials to try more",
        )
    log.info("study %s already has %d of %d trials: nothing to run", name, done, target)


def allowed_failures(settings: Settings, plan: Plan, study: optuna.Study) -> int:
    left = plan.n_trials - sum(map(counts_toward_target, study.get_trials(deepcopy=False)))
    return math.floor(settings.max_failure_rate * max(1, left))


def running(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials a sweeper worker runs (a trial RUNNING without a worker was left by another tool)."""
    return [t for t in trials if t.state == TrialState.RUNNING and WORKER_ATTR in t.user_attrs]
