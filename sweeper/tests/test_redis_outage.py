"""A Redis server keeps nothing on disk by default: the sweep warns at start, and a worker whose
study vanished (the server restarted empty) stops with a clear error instead of going on in an empty
study of the same name. Against a redis-server this test starts itself on a port of its own."""

import signal

import pytest

from .helpers import finish, output, start, sweep, wait_until
from .servers import Redis

pytestmark = pytest.mark.slow

VOLATILE = ("--save", "", "--appendonly", "no")


def test_a_server_without_persistence_is_said_at_start_and_one_with_it_is_not(tmp_path):
    for args, said in ((VOLATILE, True), (("--save", "", "--appendonly", "yes"), False)):
        with Redis(*args) as server:
            server.start()
            res = sweep(tmp_path, f"hydra.sweeper.storage={server.url}", "hydra.sweeper.n_trials=1")
            assert res.returncode == 0, res.stderr
            assert ("keeps nothing on disk (no RDB snapshots, no AOF)" in res.stdout + res.stderr) == said


def test_a_worker_whose_study_vanished_stops_instead_of_going_on_in_an_empty_one(tmp_path):
    with Redis(*VOLATILE) as server:
        server.start()
        proc = start(tmp_path, f"hydra.sweeper.storage={server.url}", "hydra.sweeper.n_trials=50", "seconds=0.3")
        job = tmp_path / "sweeps" / "sphere" / "1"
        wait_until(job.is_dir, proc, "trial 1 never started", timeout=120)
        server.stop(signal.SIGKILL)  # the server restarts with nothing: no snapshot, no AOF
        # the worker meets the server away, and waits for it: said before the server comes back
        wait_until(lambda: "is unreachable" in output(proc), proc, "the worker never met the outage", 60)
        server.start()
        out = finish(proc, 120)
        assert proc.returncode == 2, out
        assert "is unreachable" in out
        assert "vanished" in out and "empty study of the same name" in out
        assert "Traceback" not in out
        import redis

        assert redis.Redis.from_url(server.url).dbsize() == 0  # it wrote nothing into the empty server


def test_a_server_with_persistence_that_restarts_is_waited_for_and_the_sweep_reaches_its_target(tmp_path):
    import optuna
    from hydra_study_sweeper.recovery import counts_toward_target
    from hydra_study_sweeper.storage import open_storage

    with Redis("--save", "", "--appendonly", "yes", "--appendfsync", "always") as server:
        server.start()
        args = (f"hydra.sweeper.storage={server.url}", "hydra.sweeper.n_trials=12", "seconds=0.3")
        proc = start(tmp_path, *args)
        wait_until((tmp_path / "sweeps" / "sphere" / "2").is_dir, proc, "trial 2 never started", timeout=120)
        server.stop(signal.SIGKILL)  # a crash; the append-only file keeps every write
        wait_until(lambda: "is unreachable" in output(proc), proc, "the worker never met the outage", 60)
        server.start()
        out = finish(proc, 180)
        assert proc.returncode == 0, out
        assert "is unreachable" in out and "answers again after" in out and "Traceback" not in out
        trials = optuna.load_study(study_name="sphere", storage=open_storage(server.url, 10, None, quiet=True)).trials
        assert sum(map(counts_toward_target, trials)) == 12
        assert len({t.number for t in trials}) == len(trials)


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_study_flushed_while_a_trial_reports_gets_no_write_from_any_process(tmp_path, launcher):
    """FLUSHALL drops no connection: the jobs' reporters (in the sweeper's process, or in joblib's
    workers) and the sweeper must each find the study gone at their next write and write nothing."""
    import redis

    with Redis(*VOLATILE) as server:
        server.start()
        args = (f"hydra.sweeper.storage={server.url}", "hydra.sweeper.n_trials=20", "steps=200", "step_seconds=0.02")
        if launcher == "joblib":
            args += ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2")
        proc = start(tmp_path, *args)
        log = tmp_path / "sweeps" / "sphere" / "1" / "sphere.log"
        wait_until(lambda: log.is_file() and "step 5 of" in log.read_text(), proc, "trial 1 never reported", 120)
        client = redis.Redis.from_url(server.url)
        client.flushall()
        out = finish(proc, 120)
        assert proc.returncode == 2, out
        assert "vanished" in out and "empty study of the same name" in out
        assert client.dbsize() == 0, sorted(client.keys())[:10]  # nothing written after the flush
        assert "Traceback" not in out, out


def test_in_flight_jobs_are_stopped_even_when_the_storage_refuses_their_trials(tmp_path):
    """After a study vanished, telling its in-flight trials fails; their jobs' worker processes are
    stopped all the same. Left running, loky's exit handler waited for them: the sweep above, under
    joblib, once hung after saying the study vanished."""
    from types import SimpleNamespace

    from hydra_study_sweeper import cleanup

    calls = []

    def tell(*args, **kwargs):
        raise RuntimeError("study sphere vanished")

    settings = SimpleNamespace(results_file="results.json", record=[], metric_names=["value"], directions=["minimize"])
    r = SimpleNamespace(
        in_flight={0: SimpleNamespace(trial=None)},
        plan=SimpleNamespace(sweep_dir=tmp_path),
        settings=settings,
        tell=tell,
        study=None,
        extras=SimpleNamespace(sweep_ended=lambda interrupted: calls.append("trackers told")),
        launches=SimpleNamespace(abandon=lambda: calls.append("workers stopped")),
    )
    with pytest.raises(RuntimeError, match="vanished"):
        cleanup.settle_in_flight(r, "interrupted")
    assert calls == ["trackers told", "workers stopped"]


def test_a_vanished_study_stops_its_jobs_workers_before_the_sweep_ends(monkeypatch):
    """The CI hang of the flush test under joblib: the sweep said the study vanished and ended, while
    a job's worker still ran; loky's exit handler waited for it."""
    from types import SimpleNamespace

    from hydra_study_sweeper import loop
    from hydra_study_sweeper.errors import SweepExit

    calls = []
    monkeypatch.setattr(loop, "vanished", lambda storage: True)
    r = SimpleNamespace(
        plan=SimpleNamespace(storage=object(), name="sphere"),
        settings=SimpleNamespace(storage="redis://127.0.0.1:1/0"),
        launches=SimpleNamespace(abandon=lambda: calls.append("workers stopped")),
    )
    with pytest.raises(SweepExit) as ended:
        loop.still_there(r)
    assert ended.value.code == 2 and calls == ["workers stopped"]
