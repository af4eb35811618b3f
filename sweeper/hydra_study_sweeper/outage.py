"""A database server that goes away while a sweep runs: what counts as a lost connection, the
wait for it to come back (Outage), and the storages whose calls wait (PatientRDBStorage,
PatientJournalStorage)."""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

import optuna
import sqlalchemy

from .compat import LOST_RESET, POOL_LOGGERS, RDB_PRIVATE_CALLS
from .errors import StorageFailure, causes

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 10  # seconds to reach a database server before giving up
STATEMENT_TIMEOUT = 30  # seconds one database round trip may take
MAX_BACKOFF = 15  # seconds between two tries to reach a lost server, at most
OUTAGE_TIMEOUT = 600  # seconds a sweep waits out a database server that went away (hydra.sweeper.outage_timeout)


class Outage:
    """A database server that went away, as the threads of one process see it: one line when it
    goes, one when it is back; calls wait with backoff (1 s, x1.5 up to 15 s) until `limit` seconds
    have passed since it went, then every call fails at once with a StorageFailure (exit 2). One per
    server and process (`Outage.of`): the sweeper and a job in its process wait together."""

    known: dict[str, Outage] = {}

    def __init__(self, shown: str, limit: float) -> None:
        self.shown, self.limit = shown, limit
        self.lock = threading.Lock()
        self.since: float | None = None  # time.monotonic() of the first failed call
        self.gave_up: str | None = None  # the message, once waiting stopped
        self.ended: float | None = None  # time.monotonic() the server answered again (for stale checks)
        self.before_retry: Any = None  # () -> None, run before each retry (may give up for good)

    @classmethod
    def of(cls, shown: str, limit: float) -> Outage:
        outage = cls.known.get(shown)
        if outage is None or outage.limit != limit:
            outage = cls.known[shown] = cls(shown, limit)
        return outage

    def call(self, name: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        delay, retried = 1.0, False
        while True:
            if self.gave_up:
                raise StorageFailure(self.shown, self.gave_up)
            try:
                if retried and self.before_retry is not None:
                    self.before_retry()
                result = method(*args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                # a state change that reached the server just before the connection dropped: the
                # retry finds the trial finished, in the state it asked for (else another worker
                # finished it meanwhile, and the error stands)
                if retried and name == "set_trial_state_values" and _reached(*args, **kwargs):
                    return True
                raise
            except Exception as err:
                if not transient(err):
                    raise
                wait = self.failed(err, delay)
                time.sleep(wait)
                delay, retried = min(1.5 * delay, MAX_BACKOFF), True
                continue
            if retried or self.since is not None:
                self.back()
            return result

    def failed(self, err: Exception, delay: float) -> float:
        """Seconds to wait before the next try; gives up (raises) past the limit."""
        now = time.monotonic()
        with self.lock:
            if self.since is None:
                self.since = now
                log.warning(
                    "the storage %s is unreachable (%s): waiting up to %s for it (hydra.sweeper.outage_timeout)",
                    self.shown,
                    lost_reason(err),
                    _span(self.limit),
                )
            left = self.since + self.limit - now
            if left <= 0 and not self.gave_up:
                self.gave_up = (
                    f"unreachable for {_span(now - self.since)}, longer than hydra.sweeper.outage_timeout="
                    f"{self.limit:g} s allows (last error: {lost_reason(err)})"
                )
            if self.gave_up:
                raise StorageFailure(self.shown, self.gave_up) from err
        return min(delay, left)

    def back(self) -> None:
        with self.lock:
            if self.since is None:
                return
            log.warning("the storage %s answers again after %s", self.shown, _span(time.monotonic() - self.since))
            self.since, self.ended = None, time.monotonic()


def _reached(storage: Any, trial_id: int, state: Any, values: Any = None, **_: Any) -> bool:
    """Whether the trial is stored in `state` (with `values`): set_trial_state_values took effect."""
    stored = type(storage).__bases__[0].get_trial(storage, trial_id)  # Optuna's own, not waiting again
    return stored.state == state and (values is None or list(stored.values or []) == list(values))


def transient(err: BaseException) -> bool:
    """Whether an error (or what caused it) is a lost connection rather than a bad statement."""
    for e in causes(err):
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(e, (sqlalchemy.exc.DisconnectionError, sqlalchemy.exc.TimeoutError)):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
        if type(e).__module__.startswith("redis") and type(e).__name__ in REDIS_LOST:
            return True
    return False


def lost_reason(err: BaseException) -> str:
    """The driver's own words (connection refused, server closed the connection) in one line."""
    for e in causes(err):
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.orig is not None:
            return " ".join(str(e.orig).split())[:300]
        if type(e).__module__.startswith("redis"):
            return " ".join(str(e).split())[:300]
    return "connection lost"


REDIS_LOST = ("ConnectionError", "TimeoutError", "BusyLoadingError")  # redis-py's errors of a server away or loading


def _span(seconds: float) -> str:
    return f"{seconds / 60:.3g} min" if seconds >= 120 else f"{seconds:.0f} s"


class Patient:
    """A storage whose calls wait out an outage of its server (see Outage): each method Optuna's
    cache, its Study or the sweeper calls goes through `outage.call`. Optuna still sees its own
    storage class (its cache and heartbeats work as before). Made by its constructor, as Optuna's
    storage it extends; `outage` is set once it is open (until then, as while opening, a call is
    made once, as Optuna's own)."""

    outage: Outage | None = None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("outage", None)  # a lock does not travel; the copy waits for nothing
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.outage = Outage("the storage", 0)  # not Outage.of: a copy is not the process's storage


class PatientRDBStorage(Patient, optuna.storages.RDBStorage):
    """Optuna's RDBStorage on a database server that may go away for a while."""


class PatientJournalStorage(Patient, optuna.storages.JournalStorage):
    """Optuna's journal storage on Redis, whose server may restart (with persistence)."""


def _patient(name: str, base: type) -> Any:
    method = getattr(base, name)

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.outage is None:
            return method(self, *args, **kwargs)
        return self.outage.call(name, method, self, *args, **kwargs)

    return call


# what Optuna's cache, its Study and this package call on a storage (the private ones are fenced:
# where Optuna renamed one, compat.check said so when the sweep started, and it is not wrapped)
PUBLIC_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "record_heartbeat",
)
for _name in PUBLIC_CALLS + RDB_PRIVATE_CALLS:
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(PatientRDBStorage, _name, _patient(_name, optuna.storages.RDBStorage))
    if _name in vars(optuna.storages.JournalStorage):  # its public methods (no private ones)
        setattr(PatientJournalStorage, _name, _patient(_name, optuna.storages.JournalStorage))


class LostReset(logging.Filter):
    """Drops two ERROR records of SQLAlchemy's pool, each with a traceback, that say nothing the
    sweeper does not already say in one line:
    - a pooled connection that could not be rolled back on its way back to the pool because the
      server had gone away ("Exception during reset or similar"): the connection is discarded
      anyway, and Outage reports the outage;
    - any pool error whose exception is a Ctrl-C or SIGTERM that landed while the pool reset or
      closed a connection: the pool raises it on, and the sweeper handles the interrupt.
    Any other record, and a reset that failed for another reason, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        if isinstance(record.exc_info[1], KeyboardInterrupt):
            return False
        return not (record.getMessage().startswith(LOST_RESET) and lost_connection(record.exc_info[1]))


def quiet_lost_resets() -> None:
    """Installs LostReset on SQLAlchemy's pool loggers (a filter on a parent logger would not see
    its children's records), once."""
    for name in POOL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, LostReset) for f in logger.filters):
            logger.addFilter(LostReset())


def lost_connection(err: BaseException | None) -> bool:
    """transient(), or the driver's own error of a lost connection (a raw DBAPI error, as a
    rollback on the bare connection raises it): OperationalError, InterfaceError, a reset socket."""
    for e in causes(err):
        if transient(e) or isinstance(e, ConnectionError):
            return True
        # the DB-API's classes by name, subclasses too (psycopg's AdminShutdown is an OperationalError)
        if any(c.__name__ in ("OperationalError", "InterfaceError") for c in type(e).__mro__):
            return True
    return False
