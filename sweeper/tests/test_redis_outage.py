"""A Redis server keeps nothing on disk by default: the sweep warns at start, and a worker whose
study vanished (the server restarted empty) stops with a clear error instead of going on in an empty
study of the same name. Against a redis-server this test starts itself on a port of its own."""

import os
import shutil
import socket
import subprocess
import time

import pytest

from .helpers import finish, start, sweep, wait_until

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server(port: int, tmp_path, *args: str) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        missing = "no redis-server on this machine (Debian: apt-get install redis-server)"
        if os.environ.get("CI") == "true":  # the machines this project's CI runs on have Redis
            pytest.fail(missing)
        pytest.skip(missing)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("redis-server did not start")


def test_a_server_without_persistence_is_said_at_start_and_one_with_it_is_not(tmp_path):
    port = free_port()
    volatile = redis_server(port, tmp_path, "--save", "", "--appendonly", "no")
    try:
        res = sweep(tmp_path, f"hydra.sweeper.storage=redis://127.0.0.1:{port}/0", "hydra.sweeper.n_trials=1")
        assert res.returncode == 0, res.stderr
        assert "keeps nothing on disk (no RDB snapshots, no AOF)" in res.stdout + res.stderr
    finally:
        volatile.kill()
        volatile.wait()
    port = free_port()
    durable = redis_server(port, tmp_path, "--save", "", "--appendonly", "yes")
    try:
        res = sweep(tmp_path, f"hydra.sweeper.storage=redis://127.0.0.1:{port}/0", "hydra.sweeper.n_trials=1")
        assert res.returncode == 0, res.stderr
        assert "keeps nothing on disk" not in res.stdout + res.stderr
    finally:
        durable.kill()
        durable.wait()


def test_a_worker_whose_study_vanished_stops_instead_of_going_on_in_an_empty_one(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = redis_server(port, tmp_path, "--save", "", "--appendonly", "no")
    try:
        proc = start(tmp_path, f"hydra.sweeper.storage={url}", "hydra.sweeper.n_trials=50", "seconds=0.3")
        job = tmp_path / "sweeps" / "sphere" / "1"
        wait_until(job.is_dir, proc, "trial 1 never started", timeout=120)
        server.kill()  # the server restarts with nothing: no snapshot, no AOF
        server.wait()
        server = redis_server(port, tmp_path, "--save", "", "--appendonly", "no")
        out = finish(proc, 120)
        assert proc.returncode == 2, out
        assert "study sphere vanished from redis://127.0.0.1" in out and "empty study of the same name" in out
        assert "Traceback" not in out
        import redis

        assert redis.Redis.from_url(url).dbsize() == 0  # it wrote nothing into the empty server
    finally:
        server.kill()
        server.wait()
