"""A database server that goes away while workers run a study (PostgreSQL and MariaDB, each a server
this test starts itself on a port of its own and stops, kills and restarts): the workers wait with
backoff and say so, the trials of the outage are recorded or rerun, never lost or counted twice; an
outage past hydra.sweeper.outage_timeout ends the worker with exit 2 and the same command resumes."""

import signal
import time

import pytest
from hydra_study_sweeper.recovery import counts_toward_target
from hydra_study_sweeper.storage import open_storage
from optuna.trial import TrialState

from .helpers import BEAT, finish, start, wait_until
from .servers import SERVERS

pytestmark = pytest.mark.slow

# trials of about 2 s that report a step every 0.25 s, so that the outage finds jobs mid-trial
TRIALS = ("steps=8", "step_seconds=0.25", "hydra/sweeper/pruner=median", *BEAT)


def stored(url, name="outage"):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=open_storage(url, 10, None, quiet=True)).trials
    except KeyError:  # not made yet
        return []


def counted(trials):
    return sum(map(counts_toward_target, trials))


@pytest.fixture(params=sorted(SERVERS))
def server(request):
    with SERVERS[request.param]() as server:
        server.start()
        yield server


def worker(tmp_path, server, *args):
    return start(tmp_path, f"hydra.sweeper.storage={server.url}", "hydra.sweeper.study_name=outage", *TRIALS, *args)


def test_two_workers_wait_out_a_restart_of_the_server_and_reach_exactly_the_target(tmp_path, server):
    workers = [worker(tmp_path, server, "hydra.sweeper.n_trials=10") for _ in range(2)]
    wait_until(lambda: counted(stored(server.url)) >= 2, workers[0], "no trial finished", timeout=180)
    server.stop()  # every connection dropped; nothing answers for eight seconds
    time.sleep(8)
    server.start()
    outs = [finish(w, 300) for w in workers]
    for w, out in zip(workers, outs, strict=True):
        assert w.returncode == 0, out
        assert "is unreachable" in out and "waiting up to 10 min for it" in out, out
        assert "answers again after" in out, out
        assert "Traceback" not in out
    trials = stored(server.url)
    assert counted(trials) == 10
    assert all(t.state != TrialState.RUNNING for t in trials)
    assert len({t.number for t in trials}) == len(trials)
    # a trial of the outage is recorded when the server returns, or failed as stale and rerun
    rerun = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs.get("fail_reason") in ("stale", "surplus") for t in rerun), [
        t.user_attrs.get("fail_reason") for t in rerun
    ]


def test_an_outage_longer_than_the_setting_ends_the_worker_and_the_same_command_resumes(tmp_path, server):
    args = ("hydra.sweeper.n_trials=6", "hydra.sweeper.outage_timeout=4")
    proc = worker(tmp_path, server, *args)
    wait_until(lambda: counted(stored(server.url)) >= 1, proc, "no trial finished", timeout=180)
    server.stop(signal.SIGKILL)  # a crash: the server is gone until the test brings it back
    out = finish(proc, 120)
    assert proc.returncode == 2, out
    assert "unreachable for" in out and "longer than hydra.sweeper.outage_timeout=4 s allows" in out, out
    assert "the trials stored so far are kept: run the same command again once the server is back" in out
    assert "Traceback" not in out
    server.start()
    before = [t for t in stored(server.url) if t.state == TrialState.COMPLETE]
    rerun = worker(tmp_path, server, *args)
    out = finish(rerun, 300)
    assert rerun.returncode == 0, out
    trials = stored(server.url)
    assert counted(trials) == 6
    assert all(t.state != TrialState.RUNNING for t in trials)
    after = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
    assert all(after[t.number] == t.values for t in before)  # what was stored before the outage is intact
