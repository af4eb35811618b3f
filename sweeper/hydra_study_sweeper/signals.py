"""Ctrl-C and SIGTERM during a sweep: raised where the loop can act on them, recorded where Python
would swallow them, and handled once while the storage is put in order."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

PENDING: list[int] = []  # signals the sweeper received and has not yet acted on


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, `timeout`, preemption), handled like Ctrl-C."""


def exit_code(err: KeyboardInterrupt) -> int:
    return 143 if isinstance(err, Terminated) else 130


def raise_pending() -> None:
    """Raise a Ctrl-C or SIGTERM that got lost: Python drops an exception raised inside a
    garbage-collector callback or `__del__` ("Exception ignored in ..."), so the handler also
    records it, and a job running in the sweeper's process checks at each step it reports."""
    if PENDING:
        raise Terminated() if PENDING[-1] == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def interrupting() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, SIGTERM Terminated; each is also recorded. Only the first
    raises: a further one before the sweep acts on it is recorded (cleaning_up hears of it)."""

    def interrupt(signum: int, _frame: Any) -> None:
        PENDING.append(signum)
        if len(PENDING) > 1:  # one is already on its way up (or recorded, raised at the next check):
            return  # raised on top of it, this one would escape the handling of the first
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def unraisable(info: Any) -> None:
        # the interrupt raised inside a garbage-collector callback: already recorded, raised again
        # at the next check; Python would print it as "Exception ignored ... Traceback"
        if not (isinstance(info.exc_value, KeyboardInterrupt) and PENDING):
            previous_hook(info)

    PENDING.clear()
    try:
        previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        PENDING.clear()  # the sweep is over: nothing in this process may raise them again
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            if signal.getsignal(s) is interrupt:  # not after an interrupt, which leaves them ignored
                signal.signal(s, handler)


class AfterInterrupt:
    """What a further Ctrl-C or SIGTERM does once the sweep is being interrupted: while the storage is
    put in order, it is only noted (the summary is then skipped, with one line); during the summary,
    it ends the process at once."""

    def __init__(self, code: int) -> None:
        self.code, self.came, self.end_at_once = code, [], False

    def __call__(self, signum: int, _frame: Any) -> None:
        self.came.append(signum)
        if self.end_at_once:
            skipped()
            os._exit(self.code)


def skipped() -> None:
    print("interrupted again: summary skipped; the study is saved", file=sys.stderr, flush=True)


@contextlib.contextmanager
def cleaning_up(code: int) -> Iterator[AfterInterrupt]:
    """One handler from the first interrupt to the exit, never the sweep's own again: a signal in
    a gap between two handlers would raise KeyboardInterrupt where nothing catches it. At the end
    signals are ignored: the storage is consistent, the exit is under way."""
    handler = AfterInterrupt(code)
    handler.came += PENDING[1:]  # more came while the first was on its way here
    PENDING.clear()  # acted on now: no job or loop may raise it again
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield handler
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):
                signal.signal(s, signal.SIG_IGN)
