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
import logging
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from . import compat
from .errors import UserError, reason_of
from .journal import make_parent, open_journal_file, open_redis
from .outage import (
    CONNECT_TIMEOUT,
    OUTAGE_TIMEOUT,
    STATEMENT_TIMEOUT,
    Outage,
    PatientRDBStorage,
    quiet_lost_resets,
    transient,
)
from .urls import masked, scrub

log = logging.getLogger(__name__)
RDB = optuna.storages.RDBStorage
# the sweeper runs its own heartbeat thread around ask/tell, which Optuna's notes do not foresee
warnings.filterwarnings("ignore", message=".*heartbeat_interval.*", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

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
        return open_journal_file(Path(url.removeprefix("journal:")), quiet)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return open_redis(url, quiet, outage_timeout)
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
    quiet_lost_resets()  # a Ctrl-C that lands in the pool's reset of a connection is the sweeper's to say
    return storage


class StatementReads(sqlalchemy.pool.QueuePool):
    """The pool of a MySQL storage whose connections are made with the connect timeout as their
    read timeout (PyMySQL waits for the server's greeting under it) and read with the statement
    timeout once connected. Its own class, so that no other library's connections are touched."""


def _statement_reads(connection: Any, _record: Any) -> None:
    compat.set_read_timeout(connection, STATEMENT_TIMEOUT)


sqlalchemy.event.listen(StatementReads, "connect", _statement_reads)


def mysql_engine() -> dict[str, Any]:
    """A MySQL storage's engine settings: the greeting bounded by the connect timeout, every read
    after it by the statement timeout; where PyMySQL's setting cannot change once connected, the
    statement timeout throughout (a server that accepts and never answers is named after that)."""
    split = compat.read_timeout_settable()
    timeouts = {"connect_timeout": CONNECT_TIMEOUT, "write_timeout": STATEMENT_TIMEOUT}
    timeouts["read_timeout"] = CONNECT_TIMEOUT if split else STATEMENT_TIMEOUT
    return {"connect_args": timeouts, **({"poolclass": StatementReads} if split else {})}


def _server(
    parsed: Any, heartbeat_interval: int, grace_period: int | None, outage_timeout: float | None, patient_open: bool
) -> Any:
    backend = parsed.get_backend_name()
    if backend in DRIVERS and "+" not in parsed.drivername:
        parsed = parsed.set(drivername=f"{backend}+{DRIVERS[backend][0]}")
    engine: dict[str, Any] = {"connect_args": {}}
    if backend == "postgresql":
        timeouts = {"connect_timeout": CONNECT_TIMEOUT, "options": f"-c statement_timeout={STATEMENT_TIMEOUT}s"}
        engine = {"connect_args": timeouts}
    elif backend in ("mysql", "mariadb"):
        engine = mysql_engine()
    kwargs = {**engine, "pool_pre_ping": True}
    url = parsed.render_as_string(hide_password=False)
    if not outage_timeout:
        return _rdb_retrying(url, kwargs, heartbeat_interval, grace_period)
    outage = Outage.of(masked(url), outage_timeout)
    args = (url, kwargs, heartbeat_interval, grace_period, PatientRDBStorage)
    # a job opening the storage during an outage waits for the server too; at the sweep's start an
    # unreachable server is more often a wrong URL: said at once
    storage = outage.call("open", _rdb_or_lost, *args) if patient_open else _rdb_retrying(*args)
    storage.outage = outage  # open: from now on a lost server is waited for
    quiet_lost_resets()
    return storage


def _rdb_or_lost(*args: Any) -> Any:
    """_rdb_retrying, with an unreachable server raised as the connection error itself (to wait on)."""
    try:
        return _rdb_retrying(*args)
    except UserError as err:
        if getattr(err, "lost", None) is not None:
            raise err.lost from None
        raise


def _rdb_retrying(
    url: str, engine_kwargs: dict, heartbeat_interval: int, grace_period: int | None, kind: type = RDB
) -> Any:
    """Processes creating the tables of a new database at once: the losers retry."""
    for attempt in range(5):
        try:
            return _rdb(url, engine_kwargs, heartbeat_interval, grace_period, kind, race_raises=True)
        except sqlalchemy.exc.DBAPIError:
            time.sleep(0.2 * (attempt + 1))
    return _rdb(url, engine_kwargs, heartbeat_interval, grace_period, kind)


def _rdb(
    url: str,
    engine_kwargs: dict,
    heartbeat_interval: int,
    grace_period: int | None,
    kind: type = RDB,
    race_raises: bool = False,
) -> Any:
    """Optuna's RDBStorage (or `kind`, a subclass), its errors in our words; with race_raises, a
    lost race to create the tables of a new database is raised as it is, for the caller to retry."""
    try:
        return kind(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
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


def _lost_creation_race(err: Exception) -> bool:
    """Another process created the same table, type or version row a moment earlier: PostgreSQL
    says duplicate key (pg_type) or already exists, MySQL/MariaDB already exists or duplicate entry."""
    text = str(getattr(err, "orig", None) or err).lower()
    return isinstance(err, sqlalchemy.exc.IntegrityError) or "already exists" in text or "duplicate" in text


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
