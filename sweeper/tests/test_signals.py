"""Ctrl-C and SIGTERM in the sweeper's process: raised where the loop can act on them, recorded
where Python would swallow them, never raised a second time on top of the first, and never shown
as another library's traceback."""

import os
import signal
import sys
import time

import pytest
from hydra_study_sweeper.signals import interrupting, raise_pending


def test_a_ctrl_c_that_python_swallows_in_a_destructor_is_quiet_and_raised_at_the_next_check(monkeypatch):
    class Dropped:
        def __del__(self):  # Python cannot raise out of here: it reports "Exception ignored ..."
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)  # what would print the report
    reached = False
    with pytest.raises(KeyboardInterrupt), interrupting():
        Dropped()
        reached = True  # the interrupt did not come out of the destructor
        raise_pending()
    assert reached and reported == []


def test_a_second_ctrl_c_before_the_first_is_acted_on_is_noted_not_raised_on_top_of_it():
    """Two Ctrl-C close together: the first comes up as KeyboardInterrupt; the second, landing
    while the first is still on its way to the sweeper's handling (a `finally` of Hydra's, the
    `except` itself), would escape that handling with a traceback. It is noted, and the clean-up
    hears of it (so it skips the summary, as for one during the clean-up)."""
    from hydra_study_sweeper.signals import cleaning_up

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with interrupting():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
                raise AssertionError("the first Ctrl-C did not come up")
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGINT)  # on the way up: must not raise here
                time.sleep(0.05)
                with cleaning_up(130) as again:
                    pass
        assert again.came == [signal.SIGINT]
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_a_ctrl_c_that_lands_in_the_pools_reset_of_a_connection_is_raised_without_the_pools_traceback(tmp_path, caplog):
    """A Ctrl-C can land while SQLAlchemy's pool rolls a connection back on its way back to the
    pool (a job reporting in the sweeper's process, the sweeper's own reads): the pool logs it at
    ERROR with a traceback and raises it on. The interrupt must still come through; its traceback,
    on a console that then prints the sweeper's own lines, must not (CI once saw it)."""
    import logging

    import sqlalchemy
    from hydra_study_sweeper import outage, storage

    opened = storage.open_storage(f"sqlite:///{tmp_path}/s.db", None, None)
    engine = opened.engine

    def interrupted(*_args):
        raise KeyboardInterrupt

    def give_back() -> list[str]:
        caplog.clear()
        conn = engine.raw_connection()
        conn.cursor().execute("SELECT 1")
        sqlalchemy.event.listen(engine.pool, "reset", interrupted)
        try:
            with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"), pytest.raises(KeyboardInterrupt):
                conn.close()  # back to the pool, whose reset meets the Ctrl-C
        finally:
            sqlalchemy.event.remove(engine.pool, "reset", interrupted)
        return [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy.pool")]

    pool_log = logging.getLogger(f"sqlalchemy.pool.impl.{type(engine.pool).__name__}")
    kept = list(pool_log.filters)
    try:
        pool_log.filters = [f for f in kept if not isinstance(f, outage.LostReset)]
        assert give_back() == ["Exception during reset or similar"]  # SQLAlchemy's own record, traceback and all
        pool_log.filters = kept  # as open_storage left them
        assert give_back() == []
    finally:
        pool_log.filters = kept
        engine.dispose()
