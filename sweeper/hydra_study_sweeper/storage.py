"""Open an Optuna storage from the one string users give in hydra.sweeper.storage.

    sqlite:///outputs/optuna.db          one machine (checked with PRAGMA quick_check first)
    postgresql://user@host/db            many machines (psycopg); mysql://user@host/db (PyMySQL)
    redis://host:6379/0                  Optuna's journal on Redis
    journal:outputs/optuna.log           Optuna's journal in a file (a torn last record is repaired)

A password in the URL never reaches a log line, an error or a file the project writes: `masked()`
replaces it. Better still, leave it out of the URL: libpq reads PGPASSWORD and ~/.pgpass, PyMySQL an
option file (`mysql://user@host/db?read_default_file=~/.my.cnf`), and Hydra can take the whole URL
from the environment (`hydra.sweeper.storage='${oc.env:OPTUNA_STORAGE}'`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import shutil
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages.journal import JournalRedisBackend

from .errors import StorageFailure, UserError, causes, reason_of
from .urls import masked, scrub

log = logging.getLogger(__name__)
# the sweeper runs its own heartbeat thread around ask/tell, which Optuna's notes do not foresee
warnings.filterwarnings("ignore", message=".*heartbeat_interval.*", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

CONNECT_TIMEOUT = 10  # seconds to reach a database server before giving up
MAX_BACKOFF = 15  # seconds between two tries to reach a lost server, at most
OUTAGE_TIMEOUT = 600  # seconds a sweep waits out a database server that went away (hydra.sweeper.outage_timeout)
STATEMENT_TIMEOUT = 30  # seconds one database round trip may take
URL_HINT = "use sqlite:///PATH, postgresql://USER@HOST/DB, mysql://USER@HOST/DB, redis://HOST:PORT/DB or journal:PATH"
DRIVERS = {  # URL scheme -> (SQLAlchemy driver to use when none is named, the package that provides it)
    "postgresql": ("psycopg", "psycopg (pip install 'hydra-study-sweeper[postgres]')"),
    "mysql": ("pymysql", "PyMySQL (pip install 'hydra-study-sweeper[mysql]')"),
    "mariadb": ("pymysql", "PyMySQL (pip install 'hydra-study-sweeper[mysql]')"),
}


def open_storage(
    url: Any,
    heartbeat_interval: int | None,
    grace_period: int | None,
    quiet: bool = False,
    outage_timeout: float | None = OUTAGE_TIMEOUT,
    patient_open: bool = False,
) -> Any:
    """An Optuna storage from a URL; None = in memory. A database server that goes away once the
    storage is open is waited for, up to `outage_timeout` seconds (None or 0: not at all); with
    `patient_open` (a job's reporter), also one that is away when the storage is opened."""
    if url is None:
        log.warning("hydra.sweeper.storage is null: the study lives in memory and cannot be resumed")
        return None
    url = str(url)
    if url.startswith("journal:"):
        return _journal_file(Path(url.removeprefix("journal:")), quiet)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _redis(url, quiet, outage_timeout)
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UserError(f"hydra.sweeper.storage={masked(url)!r} is not a storage URL: {URL_HINT}") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite(url, parsed, heartbeat_interval, grace_period)
    return _server(parsed, heartbeat_interval, grace_period, outage_timeout, patient_open)


def _sqlite(url: str, parsed: Any, heartbeat_interval: int, grace_period: int | None) -> Any:
    path = Path(parsed.database).absolute() if parsed.database and parsed.database != ":memory:" else None
    if path is not None:
        make_parent(url, path)
        check_sqlite_file(path)
    # Workers that start together on a new file race to create Optuna's tables (a UNIQUE constraint
    # on alembic_version fails in the loser): create them one process at a time.
    # Another program (a script, optuna-dashboard) can still race us: that is retried.
    kwargs = {"connect_args": {"timeout": STATEMENT_TIMEOUT}}  # wait for a writer's lock rather than fail
    with _file_lock(path.with_name(path.name + ".create-lock") if path else None):
        storage = _rdb_retrying(url, kwargs, heartbeat_interval, grace_period)
    sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
    storage.engine.dispose()  # connections opened before the listener reconnect with it
    return storage


def make_parent(url: str, path: Path) -> None:
    """The storage file's folder, made if need be; a path through a file or an unwritable folder is
    named with the setting."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"hydra.sweeper.storage={masked(url)!r}: cannot make the folder {path.parent} "
            f"({err.strerror or err}); use a path under a folder you can write to"
        ) from None


def _server(
    parsed: Any, heartbeat_interval: int, grace_period: int | None, outage_timeout: float | None, patient_open: bool
) -> Any:
    backend = parsed.get_backend_name()
    if backend in DRIVERS and "+" not in parsed.drivername:
        parsed = parsed.set(drivername=f"{backend}+{DRIVERS[backend][0]}")
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args = {"connect_timeout": CONNECT_TIMEOUT, "options": f"-c statement_timeout={STATEMENT_TIMEOUT}s"}
    elif backend in ("mysql", "mariadb"):
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": STATEMENT_TIMEOUT,
            "write_timeout": STATEMENT_TIMEOUT,
        }
    kwargs = {"connect_args": connect_args, "pool_pre_ping": True}
    url = parsed.render_as_string(hide_password=False)
    if not outage_timeout:
        return _rdb_retrying(url, kwargs, heartbeat_interval, grace_period)
    outage = Outage.of(masked(url), outage_timeout)
    if patient_open:  # a job opening the storage during an outage waits for the server too
        storage = outage.call("open", _rdb_or_lost, url, kwargs, heartbeat_interval, grace_period)
    else:  # at the sweep's start an unreachable server is more often a wrong URL: said at once
        storage = _rdb_retrying(url, kwargs, heartbeat_interval, grace_period)
    storage.__class__ = PatientRDBStorage  # open: from now on a lost server is waited for
    storage.outage = outage
    quiet_lost_resets()
    return storage


class _LostReset(logging.Filter):
    """Drops SQLAlchemy's ERROR record, with its traceback, of a pooled connection that could not
    be rolled back on its way back to the pool because the server had gone away ("Exception during
    reset or similar"): the connection is discarded anyway, and the outage is already reported in
    one line by Outage. Any other record, and a reset that failed for another reason, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Exception during reset") or not record.exc_info:
            return True
        return not lost_connection(record.exc_info[1])


POOL_LOGGERS = ("QueuePool", "NullPool", "StaticPool", "SingletonThreadPool", "AssertionPool")


def quiet_lost_resets() -> None:
    """Installs _LostReset on SQLAlchemy's pool loggers (a filter on a parent logger would not see
    its children's records), once."""
    for name in POOL_LOGGERS:
        logger = logging.getLogger(f"sqlalchemy.pool.impl.{name}")
        if not any(isinstance(f, _LostReset) for f in logger.filters):
            logger.addFilter(_LostReset())


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


def _rdb_or_lost(*args: Any) -> Any:
    """_rdb_retrying, with an unreachable server raised as the connection error itself (to wait on)."""
    try:
        return _rdb_retrying(*args)
    except UserError as err:
        if getattr(err, "lost", None) is not None:
            raise err.lost from None
        raise


def _rdb_retrying(url: str, engine_kwargs: dict, heartbeat_interval: int, grace_period: int | None) -> Any:
    """Processes creating the tables of a new database at once: the losers retry."""
    for attempt in range(5):
        try:
            return _rdb(url, engine_kwargs, heartbeat_interval, grace_period, race_raises=True)
        except sqlalchemy.exc.DBAPIError:
            time.sleep(0.2 * (attempt + 1))
    return _rdb(url, engine_kwargs, heartbeat_interval, grace_period)


def _rdb(
    url: str, engine_kwargs: dict, heartbeat_interval: int, grace_period: int | None, race_raises: bool = False
) -> Any:
    """Optuna's RDBStorage, its errors in our words; with race_raises, a lost race to create the
    tables of a new database is raised as it is, for the caller to retry."""
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period
        )
    except ImportError as err:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
        package = DRIVERS.get(backend, (None, "the database driver SQLAlchemy names"))[1]
        raise UserError(f"hydra.sweeper.storage={masked(url)!r} needs {package}: {err.__cause__ or err}") from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise UserError(f"hydra.sweeper.storage={masked(url)!r}: unknown database kind; {URL_HINT}") from None
    except sqlalchemy.exc.DBAPIError as err:  # cannot connect, refused login, an option the driver rejects
        if race_raises and _lost_creation_race(err):
            raise
        failure = UserError(f"cannot use the storage {masked(url)}: {scrub(reason_of(err), url)}")
        failure.lost = err if transient(err) else None  # the server unreachable, not a bad URL or login
        raise failure from None


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


class PatientRDBStorage(optuna.storages.RDBStorage):
    """An RDBStorage whose calls wait out an outage of its server (see Outage). Optuna still sees an
    RDBStorage (its cache and heartbeats work as before); each method the cache or the sweeper calls
    goes through `outage.call`. Set on an opened storage by `_server` (the constructor is Optuna's)."""

    outage: Outage

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("outage", None)  # a lock does not travel; the copy waits for nothing
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.outage = Outage("the storage", 0)  # not Outage.of: a copy is not the process's storage


class PatientJournalStorage(optuna.storages.JournalStorage):
    """Optuna's journal storage on Redis whose calls wait out a restart of the server (Outage)."""

    outage: Outage

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("outage", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.outage = Outage("the storage", 0)  # not Outage.of: a copy is not the process's storage


def _patient(name: str, base: type = optuna.storages.RDBStorage) -> Any:
    method = getattr(base, name)

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self.outage.call(name, method, self, *args, **kwargs)

    return call


# what Optuna's cache (_CachedStorage), its Study and this package call on an RDBStorage
for _name in (
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
    "_create_new_trial",
    "set_trial_param",
    "_set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "_get_trials",
    "get_best_trial",
    "_get_best_trial_id",
    "record_heartbeat",
    "_get_stale_trial_ids",
):
    setattr(PatientRDBStorage, _name, _patient(_name))
    if _name in vars(optuna.storages.JournalStorage):  # its public methods (no private ones)
        setattr(PatientJournalStorage, _name, _patient(_name, optuna.storages.JournalStorage))


def _lost_creation_race(err: Exception) -> bool:
    """Another process created the same table, type or version row a moment earlier: PostgreSQL
    says duplicate key (pg_type) or already exists, MySQL/MariaDB already exists or duplicate entry."""
    text = str(getattr(err, "orig", None) or err).lower()
    return isinstance(err, sqlalchemy.exc.IntegrityError) or "already exists" in text or "duplicate" in text


def _redis(url: str, quiet: bool = False, outage_timeout: float | None = OUTAGE_TIMEOUT) -> Any:
    try:
        import redis
    except ImportError:
        package = "redis (pip install 'hydra-study-sweeper[redis]')"
        raise UserError(f"hydra.sweeper.storage={masked(url)!r} needs {package}") from None
    try:  # the backend connects lazily: an unusable server should fail here, within CONNECT_TIMEOUT
        client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT)
        client.ping()
    except (redis.RedisError, ValueError) as err:
        raise UserError(f"cannot use the storage {masked(url)}: {scrub(str(err), url)}") from None
    if not quiet:
        warn_if_volatile(client, url)
    shown = masked(url)
    if "socket_timeout=" not in url:  # a server that stops answering must not hang the sweep
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}socket_connect_timeout={CONNECT_TIMEOUT}&socket_timeout={STATEMENT_TIMEOUT}"
    storage = optuna.storages.JournalStorage(GuardedRedisBackend(url, shown))
    if outage_timeout:  # a restart of the server (with persistence) is waited for, as a database's
        storage.__class__ = PatientJournalStorage
        storage.outage = outage = Outage.of(shown, outage_timeout)
        outage.before_retry = lambda: stop_if_vanished(storage, outage)
    return storage


# one journal entry appended only while the journal this process has read is still there; atomic,
# so a flush or an empty restart between a check and the write cannot let an entry through
APPEND_IF_THERE = """
local key = ARGV[1] .. ':log_number'
if redis.call('exists', key) == 0 then
  if ARGV[3] == '1' then return -1 end
  redis.call('set', key, -1)
end
local i = redis.call('incr', key)
redis.call('set', ARGV[1] .. ':log:' .. i, ARGV[2])
return i
"""


class GuardedRedisBackend(JournalRedisBackend):
    """Optuna's Redis journal that never writes into a study that vanished: once this process has
    seen the journal (read an entry, or written one), an append finds it gone (the server was
    flushed, or restarted empty) and raises a StorageFailure instead of starting a new journal of
    the same name. Every process of a sweep, job reporters included, writes through it."""

    def __init__(self, url: str, shown: str) -> None:
        super().__init__(url)
        self._shown, self._seen = shown, False

    def read_logs(self, log_number_from: int) -> Any:
        for entry in super().read_logs(log_number_from):
            self._seen = True
            yield entry

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self._use_cluster:  # scripts must name their keys on a cluster: Optuna's own way
            return super().append_logs(logs)
        for entry in logs:
            if self._redis.eval(APPEND_IF_THERE, 0, self._prefix, json.dumps(entry), int(self._seen)) == -1:
                raise StorageFailure(self._shown, VANISHED)
            self._seen = True


def stop_if_vanished(storage: Any, outage: Outage) -> None:
    """Before a call is tried again on a Redis server that came back: one that came back empty
    (no persistence) has lost the study, and nothing more is written into it."""
    if _vanished(storage, storage._backend._redis.get):
        with outage.lock:
            outage.gave_up = VANISHED
        raise StorageFailure(outage.shown, VANISHED)


VANISHED = (
    "the study vanished (the server restarted without persistence, or was flushed): this worker "
    "stops rather than go on in an empty study of the same name"
)


def warn_if_volatile(client: Any, url: str) -> None:
    """A Redis server with neither RDB snapshots nor AOF loses every study when it restarts."""
    import redis

    try:
        save = str(client.config_get("save").get("save", "")).strip()
        aof = str(client.config_get("appendonly").get("appendonly", "no")).lower()
    except redis.RedisError:  # CONFIG may be disabled (managed servers): nothing to tell
        return
    if not save and aof != "yes":
        log.warning(
            "%s keeps nothing on disk (no RDB snapshots, no AOF): a restart of the server loses every study "
            "in it; switch persistence on (redis-cli CONFIG SET appendonly yes) or use a database",
            masked(url),
        )


def vanished(storage: Any) -> bool:
    """Whether the Redis journal under this storage is gone (its server restarted empty, or was
    flushed) after the study was opened: going on would write into an empty study of the same name."""
    backend = getattr(storage, "_backend", None)  # JournalStorage keeps its backend and replay state private
    client = getattr(backend, "_redis", None)
    replay = getattr(storage, "_replay_result", None)
    if client is None or replay is None or replay.log_number_read == 0:
        return False
    outage = getattr(storage, "outage", None)  # a server restarting is waited for first
    get = client.get if outage is None else functools.partial(outage.call, "log_number", client.get)
    return _vanished(storage, get)


def _vanished(storage: Any, get: Any) -> bool:
    backend, replay = storage._backend, storage._replay_result
    if replay.log_number_read == 0:
        return False
    # the last log's number; this process has read up to log_number_read
    stored = get(f"{getattr(backend, '_prefix', '')}:log_number")
    return stored is None or int(stored) + 1 < replay.log_number_read


def _journal_file(path: Path, quiet: bool = False) -> Any:
    make_parent(f"journal:{path}", path)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    lock = JournalFileOpenLock(str(path))
    if path.exists():
        lock.acquire()  # the writers' own lock: no record is half written while we look
        try:
            repair_journal(path)
        finally:
            lock.release()
    if not quiet:
        log.warning("journal storage: trials of a killed sweep cannot be detected as stale")
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=lock))


def repair_journal(path: Path) -> None:
    """A journal whose last record was torn by a killed writer: keep the intact records (after a
    backup of the whole file); a bad record in the middle is refused."""
    data = path.read_bytes()
    offset, torn = 0, None
    for line in data.splitlines(keepends=True):
        try:
            complete = line.endswith(b"\n")
            json.loads(line)
        except ValueError:
            complete = False
        if not complete:
            torn = offset
            break
        offset += len(line)
    if torn is None:
        return
    if torn + len(data[torn:].split(b"\n", 1)[0]) + 1 < len(data):
        raise UserError(
            f"the journal {path} has a damaged record at byte {torn} followed by more records; "
            f"repair it by hand (one JSON object a line) or start a new journal"
        )
    backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copyfile(path, backup)
    with open(path, "r+b") as f:
        f.truncate(torn)
    log.warning(
        "the journal %s ended in a torn record at byte %d (a writer was killed): removed it, "
        "kept the %d bytes before it; the whole file was saved as %s",
        path,
        torn,
        torn,
        backup,
    )


def check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not a sound SQLite database before Optuna writes into it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    hint = f"move it aside, or recover its data with: sqlite3 {path} .recover | sqlite3 recovered.db"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=STATEMENT_TIMEOUT)) as db:
            result = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as err:
        raise UserError(f"the storage {path} is not a usable SQLite database ({err}); {hint}") from None
    if result != ["ok"]:
        found = "; ".join(result[:3])
        raise UserError(f"the storage {path} is damaged (PRAGMA quick_check: {found}); {hint}")


@contextlib.contextmanager
def _file_lock(path: Path | None):
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL with normal sync: a commit stops costing an fsync, readers never block the writer."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
