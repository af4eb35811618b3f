"""Errors a user can act on; only the plugin entry turns them into an exit."""

from __future__ import annotations

import errno
from collections.abc import Iterator

from .urls import masked


class UserError(Exception):
    """Bad input: printed as a one-line message, never with a traceback; exit 2."""


class SweepExit(Exception):
    """Ends a sweep with an exit code (after the summary, with `summarize`)."""

    def __init__(self, code: int, message: str = "", summarize: bool = False) -> None:
        super().__init__(message or f"exit {code}")
        self.code, self.message, self.summarize = code, message, summarize


class StorageFailure(Exception):
    """The storage could not be written (a full disk, a lost server) while the sweep ran."""

    def __init__(self, storage: str, reason: str) -> None:
        super().__init__(f"cannot write to the storage {storage}: {reason}")
        self.storage, self.reason = storage, reason

    @classmethod
    def of(cls, err: BaseException, url: object) -> StorageFailure | None:
        """A StorageFailure for an error of the storage itself, None for any other error."""
        if isinstance(err, StorageFailure):
            return err
        reason = storage_error(err)
        if reason is None:
            return None

        return cls(masked(url), reason)

    @classmethod
    def raise_if_storage(cls, err: BaseException, url: object) -> None:
        """Raise a StorageFailure for an error of the storage itself; leave any other error alone."""
        failure = cls.of(err, url)
        if failure is not None:
            raise failure from err


def causes(err: BaseException | None) -> Iterator[BaseException]:
    """An error and the ones behind it (its __cause__, else its __context__), each once: the one
    walk of a cause chain that every check of an error's origin uses."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def storage_error(err: BaseException) -> str | None:
    """The one-line reason when `err` (or what caused it) is a storage that cannot be written."""
    import sqlite3

    import optuna
    import sqlalchemy

    for e in causes(err):
        if isinstance(e, (sqlite3.OperationalError, sqlalchemy.exc.OperationalError)):
            return reason_of(e)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return reason_of(e)
        if isinstance(e, optuna.exceptions.StorageInternalError) and e.__cause__ is None:
            return reason_of(e)
    return None


def reason_of(err: BaseException) -> str:
    """One line of an error, with a hint where it speaks of a full disk."""
    text = str(getattr(err, "orig", None) or err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    full = any(w in text.lower() for w in ("disk", "full", "space", "too large", "i/o"))
    return text + (" (disk full?)" if full else "")
