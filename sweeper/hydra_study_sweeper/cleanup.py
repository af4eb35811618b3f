"""A run that ends early: after Ctrl-C or SIGTERM, or when the storage cannot be written. What
finished is kept; what was in flight is failed and queued again, so that the same command resumes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from . import outcome, recovery
from .errors import StorageFailure, SweepExit
from .loop import Run
from .outcome import Outcome
from .signals import cleaning_up, skipped

log = logging.getLogger(__name__)


def after_interrupt(r: Run, code: int, summarize: Callable[[], None]) -> SweepExit:
    """Keep what finished, fail and requeue the rest, then summarize. The storage part cannot be
    interrupted; a second signal during it skips the summary, one during the summary ends the
    process at once."""
    with cleaning_up(code) as again:
        settle_in_flight(r, "interrupted")
        log.warning("sweep interrupted; run the same command again to resume")
        if again.came:
            skipped()
        else:
            again.end_at_once = True
            summarize()
    return SweepExit(code)


def after_storage_failure(r: Run, err: StorageFailure) -> SweepExit:
    """As after an interrupt, as far as the storage still takes it; no summary (it would read a
    storage that is failing). Trials it could not fail stay RUNNING until a rerun fails them as
    stale (their process is gone)."""
    with cleaning_up(2), contextlib.suppress(Exception):
        settle_in_flight(r, "interrupted")
    advice = "the trials stored so far are kept: free space or reconnect, then run the same command again"
    if "unreachable for" in err.reason:  # a server that went away and did not come back in time
        advice = "the trials stored so far are kept: run the same command again once the server is back"
    if "vanished" in err.reason:
        advice = "its trials are lost with the server's data: switch the server's persistence on before the next sweep"
    return SweepExit(2, f"{err}; {advice}")


def settle_in_flight(r: Run, reason: str) -> None:
    """Each trial still in flight: told with the values its job left, else failed and queued again.
    The jobs' worker processes are stopped even where the storage refuses a tell part-way (a study
    that vanished): left running, they would keep the sweep's process from exiting."""
    try:
        for number in list(r.in_flight):
            trial = r.in_flight[number].trial
            job_dir = r.plan.sweep_dir / str(number)
            results = outcome.read_results(job_dir, r.settings.results_file)
            with contextlib.suppress(Exception):
                outcome.record(trial, results, r.settings.record, job_dir)
            values = outcome.values_left(results, r.settings.metric_names)
            if values is not None and len(values) == len(r.settings.directions):
                r.tell(number, Outcome(outcome.TrialState.COMPLETE, values), counted=False)
            elif r.tell(number, Outcome.failed(reason), counted=False):
                queued = recovery.requeue(r.study, trial)
                log.warning("trial %d %s: recorded as failed%s", number, reason, " and queued again" if queued else "")
    finally:
        try:
            r.extras.sweep_ended(interrupted=True)
        finally:
            r.launches.abandon()
