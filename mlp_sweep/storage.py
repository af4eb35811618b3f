"""Open an Optuna storage from the one string users give in hydra.sweeper.storage."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from .errors import UserError

log = logging.getLogger(__name__)
# the sweeper runs its own heartbeat thread around ask/tell, which Optuna's notes do not foresee
warnings.filterwarnings("ignore", message=".*heartbeat_interval.*", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def open_storage(url: Any, heartbeat_interval: int, grace_period: int | None) -> Any:
    """An Optuna storage from a URL, or `journal:PATH` for a journal file; None = in memory."""
    if url is None:
        log.warning("hydra.sweeper.storage is null: the study lives in memory and cannot be resumed")
        return None
    url = str(url)
    try:
        if url.startswith("journal:"):
            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            log.warning("journal storage: trials of a killed sweep cannot be detected as stale")
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        engine_kwargs = None
        sqlite = url.startswith("sqlite:///")
        if sqlite:
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for a lock rather than fail
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period
        )
        if sqlite:
            sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
            storage.engine.dispose()  # connections opened before the listener reconnect with it
        return storage
    except Exception as err:  # SQLAlchemy and Optuna raise many kinds for a bad URL
        raise UserError(
            f"hydra.sweeper.storage={url!r} cannot be opened ({err}); use an SQLAlchemy URL such as "
            "sqlite:///outputs/optuna.db or postgresql://user@host/db, or journal:PATH"
        ) from None


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL with normal sync: a commit stops costing an fsync, readers never block the writer."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
