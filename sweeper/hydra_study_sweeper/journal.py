"""Optuna's journal storages: on Redis (guarded against a study that vanished with its server's
data) and in a file (a record torn by a killed writer is repaired)."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalRedisBackend

from .compat import journal_parts, redis_parts
from .errors import StorageFailure, UserError
from .outage import CONNECT_TIMEOUT, OUTAGE_TIMEOUT, STATEMENT_TIMEOUT, Outage, PatientJournalStorage
from .urls import masked, scrub

log = logging.getLogger(__name__)


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


def open_redis(url: str, quiet: bool = False, outage_timeout: float | None = OUTAGE_TIMEOUT) -> Any:
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
    if not outage_timeout:
        return optuna.storages.JournalStorage(GuardedRedisBackend(url, shown))
    # a restart of the server (with persistence) is waited for, as a database's
    storage = PatientJournalStorage(GuardedRedisBackend(url, shown))
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
        parts = redis_parts(self)
        if parts is None or parts[2]:  # renamed in Optuna (said at the start); a cluster: Optuna's own way
            return super().append_logs(logs)
        client, prefix, _ = parts
        for entry in logs:
            if client.eval(APPEND_IF_THERE, 0, prefix, json.dumps(entry), int(self._seen)) == -1:
                raise StorageFailure(self._shown, VANISHED)
            self._seen = True


def stop_if_vanished(storage: Any, outage: Outage) -> None:
    """Before a call is tried again on a Redis server that came back: one that came back empty
    (no persistence) has lost the study, and nothing more is written into it."""
    found = _parts(storage)
    if found is None:
        return
    replay, client, prefix = found
    if _vanished(replay, prefix, client.get):
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
    found = _parts(storage)
    if found is None:
        return False
    replay, client, prefix = found
    outage = getattr(storage, "outage", None)  # a server restarting is waited for first
    get = client.get if outage is None else functools.partial(outage.call, "log_number", client.get)
    return _vanished(replay, prefix, get)


def _parts(storage: Any) -> tuple[Any, Any, str] | None:
    """A Redis journal storage's replay state, client and key prefix; None for another storage."""
    journal = journal_parts(storage)
    found = redis_parts(journal[0]) if journal is not None else None
    return None if found is None else (journal[1], found[0], found[1])


def _vanished(replay: Any, prefix: str, get: Any) -> bool:
    if replay.log_number_read == 0:
        return False
    # the last log's number; this process has read up to log_number_read
    stored = get(f"{prefix}:log_number")
    return stored is None or int(stored) + 1 < replay.log_number_read


def open_journal_file(path: Path, quiet: bool = False) -> Any:
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
