"""Recovery: heartbeats, stale trials, retries, and what counts toward a study's target.

Optuna's private names it needs (a trial's id, a study's storage) come from the fence, compat.py.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from .compat import heartbeat_model, stale_trial_ids, storage_of, study_id, trial_id
from .wire import FAIL_ATTR, RETRY_ATTR, WORKER_ATTR

log = logging.getLogger(__name__)

SURPLUS = "surplus"  # asked by a worker after others had filled the study's target; never run
RERUN_REASONS = ("interrupted", "stale", SURPLUS)  # failed trials that do not count toward the target
MAX_STALE = 2  # parameters whose worker died this often are not queued again (they may be what kills it)


def heartbeat_enabled(storage: Any) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def counts_toward_target(trial: FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_ATTR) not in RERUN_REASONS


def live_trial(study: optuna.Study, number: int) -> optuna.Trial:
    """The live trial a job reports to. Optuna hands out Trial objects only from ask(), in the
    sweeper's process; the job rebuilds one from the trial's id (the storage's lookup of an id by
    trial number, which this needs, is not public)."""
    tid = storage_of(study).get_trial_id_from_study_id_trial_number(study_id(study), number)
    return optuna.Trial(study, tid)


def queued_params(study: optuna.Study, trial: optuna.Trial) -> dict[str, Any] | None:
    """The parameters a trial took from the study's queue (enqueue_trial), or None. Optuna keeps
    them as the trial's system attribute `fixed_params`; a live Trial has no public getter for
    system attributes (its `system_attrs` is deprecated), so this reads the storage."""
    queued = storage_of(study).get_trial_system_attrs(trial_id(trial)).get("fixed_params")
    return dict(queued) if queued else None


def stored_user_attrs(study: optuna.Study, trial: optuna.Trial) -> dict[str, Any]:
    """A running trial's user attributes as stored now (a live Trial caches them from its ask; the
    job's reporter writes from another process). Study has no public handle on its storage."""
    return stored_trial(study, trial).user_attrs


def stored_trial(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """A running trial as stored now (with the steps its job reported from another process)."""
    return storage_of(study).get_trial(trial_id(trial))


def fail_stale_trials(study: optuna.Study, raw: Any) -> None:
    """Trials whose worker stopped sending heartbeats become FAIL (`stale`) and are queued again.
    `raw` is the storage as opened (a Study wraps an RDBStorage in a cache). Storages without
    heartbeats (journal files, Redis) can only tell of workers on this machine: a dead process."""
    storage = storage_of(study)  # writes go through Optuna's cache
    if just_back(raw):
        return
    if heartbeat_enabled(raw):
        stale = set(stale_trial_ids(raw, study)) | _never_beat(study, raw)
    elif raw is not None:
        stale = _dead_here(study)
    else:
        return
    for tid in sorted(stale):
        try:
            storage.set_trial_user_attr(tid, FAIL_ATTR, "stale")
            if not storage.set_trial_state_values(tid, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        trial = storage.get_trial(tid)
        log.warning(
            "trial %d was left running by a stopped worker (%s): failed as stale",
            trial.number,
            trial.user_attrs.get(WORKER_ATTR, "unknown"),
        )
        requeue(study, trial)


def storage_away(raw: Any) -> bool:
    """Whether the database server is away now, or back less than a grace period ago: jobs wait in
    their reports meanwhile, so their silence is not a hang."""
    outage = getattr(raw, "outage", None)
    return outage is not None and (outage.since is not None or just_back(raw))


def just_back(raw: Any) -> bool:
    """Whether the database server came back from an outage less than a grace period (plus the
    longest wait between two tries) ago: every worker's heartbeats stopped with it, and another
    worker may find the server back up to MAX_BACKOFF seconds later; none is stale until they had
    the time to beat again."""
    from .outage import MAX_BACKOFF

    outage = getattr(raw, "outage", None)
    if outage is None or outage.ended is None:
        return False
    beat = raw.get_heartbeat_interval() if heartbeat_enabled(raw) else None  # none on Redis
    grace = getattr(raw, "grace_period", None) or 2 * (beat or 10)
    return time.monotonic() - outage.ended < grace + MAX_BACKOFF


def _dead_here(study: optuna.Study) -> set[int]:
    """RUNNING trials of a worker process on this machine that no longer exists."""
    here = socket.gethostname()
    dead = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(t.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if host != here or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            dead.add(trial_id(t))
        except PermissionError:  # alive, another user's
            pass
    return dead


def _never_beat(study: optuna.Study, storage: RDBStorage) -> set[int]:
    """RUNNING trials with no heartbeat at all, started longer than a grace period ago: their worker
    died between asking and the first heartbeat (the sweeper beats right after each ask)."""
    model = heartbeat_model()
    if model is None:  # said by compat.check when the sweep started
        return set()
    grace = storage.grace_period or 2 * storage.get_heartbeat_interval()
    running = {
        trial_id(t): t.datetime_start
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.datetime_start is not None
    }
    if not running:
        return set()

    def beating() -> set[int]:
        with storage.scoped_session() as session:
            query = session.query(model.trial_id)
            return {row[0] for row in query.filter(model.trial_id.in_(list(running)))}

    outage = getattr(storage, "outage", None)  # a lost server is waited for here too
    beat = outage.call("heartbeats", beating) if outage is not None else beating()
    # datetime_start is the asking machine's local time; the margin covers modest clock skew
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=2 * grace)
    return {tid for tid, start in running.items() if tid not in beat and start < cutoff}


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> bool:
    """Queue a trial's parameters again, while they never completed and are not already queued."""
    params = dict(trial.params)
    first = trial.user_attrs.get(RETRY_ATTR, trial.number)
    stale = 0
    for other in study.get_trials(deepcopy=False):
        if other.params != params and other.state != TrialState.WAITING:
            continue
        if other.state in (TrialState.COMPLETE, TrialState.PRUNED) and other.params == params:
            return False
        if other.state == TrialState.WAITING and other.user_attrs.get(RETRY_ATTR) == first:
            return False
        stale += other.params == params and other.user_attrs.get(FAIL_ATTR) == "stale"
    if stale >= MAX_STALE:
        log.warning("trial %d's parameters lost their worker %d times: not queued again", trial.number, stale)
        return False
    study.enqueue_trial(params, user_attrs={RETRY_ATTR: first}, skip_if_exists=False)
    return True


class Heartbeat:
    """Background thread that tells an RDB storage the asked trials are still alive."""

    def __init__(self, storage: Any, interval: int) -> None:
        self.storage, self.interval = storage, interval
        self.enabled = heartbeat_enabled(storage)
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        if self.enabled:
            threading.Thread(target=self._loop, name="heartbeat", daemon=True).start()

    def add(self, trial: Any) -> None:
        if self.enabled:
            self.storage.record_heartbeat(trial_id(trial))
            with self.lock:
                self.ids.add(trial_id(trial))

    def remove(self, trial: Any) -> None:
        with self.lock:
            self.ids.discard(trial_id(trial))

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                ids = list(self.ids)
            for tid in ids:
                try:
                    self.storage.record_heartbeat(tid)
                except Exception as err:  # a busy database must not kill the sweep
                    log.debug("heartbeat for trial id %d failed: %s", tid, err)


class Tally:
    """What counts toward the target, kept from one look at the study to the next without a pass
    over every stored trial: a finished trial never changes, so only the new and the unfinished
    ones are looked at again (this counting costs as much per trial in a study of 10,000 trials as
    in one of 100; Optuna's get_trials, which hands over the list, still sorts them all)."""

    def __init__(self) -> None:
        self.seen = 0  # trials looked at: numbers below this are known
        self.open: set[int] = set()  # numbers of those not finished when last looked at
        self.counted = self.failed = self.pruned = 0

    def update(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """`trials`: the study's, in number order (Optuna numbers them 0, 1, 2 ... in each study)."""
        if trials and trials[-1].number != len(trials) - 1:  # not numbered as Optuna does: count all
            self.__init__()
            return self._look(trials)
        self._look([trials[n] for n in sorted(self.open)] + trials[self.seen :])
        self.seen = len(trials)

    def _look(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        self.open = set()
        for t in trials:
            if not t.state.is_finished():
                self.open.add(t.number)
                continue
            counts = counts_toward_target(t)
            self.counted += counts
            self.failed += counts and t.state == TrialState.FAIL
            self.pruned += t.state == TrialState.PRUNED

    def live_below(self, trials: list[optuna.trial.FrozenTrial], number: int) -> int:
        """Trials before `number` that count or may come to count (running, queued)."""
        if trials and trials[-1].number != len(trials) - 1:  # as in update()
            return sum(t.number < number and (counts_toward_target(t) or t.number in self.open) for t in trials)
        done_after = sum(counts_toward_target(t) for t in trials[number:] if t.state.is_finished())
        return self.counted - done_after + sum(n < number for n in self.open)
