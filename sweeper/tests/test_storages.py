"""Storages on real servers (PostgreSQL, MariaDB/MySQL, Redis): sweeps run and resume, passwords
never leak, a server that never answers fails in bounded time, bad URLs and missing drivers are
named. The URLs come from the environment, with the local services as defaults; a server that
cannot be reached skips its tests, except under CI=true, where it fails them."""

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit

import optuna
import pytest
import sqlalchemy
from hydra_study_sweeper.outage import CONNECT_TIMEOUT, STATEMENT_TIMEOUT
from hydra_study_sweeper.storage import open_storage
from hydra_study_sweeper.urls import masked

from .helpers import SPHERE, run_here, sweep

pytestmark = pytest.mark.slow

SERVERS = {
    "postgresql": os.environ.get("SWEEPER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("SWEEPER_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
    "redis": os.environ.get("SWEEPER_TEST_REDIS", "redis://127.0.0.1:6379/0"),
}


def server(kind: str) -> str:
    """The server's URL, once it answers on its port."""
    url = SERVERS[kind]
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=3).close()
    except OSError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{kind} server {masked(url)} is expected under CI=true and cannot be reached: {err}")
        pytest.skip(f"no {kind} server at {masked(url)} ({err}); set SWEEPER_TEST_{kind.upper()}")
    return url


@pytest.fixture
def study_name():
    """A study of this test's own on the shared server, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    for url in SERVERS.values():
        with contextlib.suppress(Exception):  # not on this server, or the server is absent
            optuna.delete_study(study_name=name, storage=open_storage(url, 10, None))


@pytest.mark.parametrize("kind", ["postgresql", "mysql", "redis"])
def test_a_sweep_on_a_server_storage_runs_and_resumes(tmp_path, kind, study_name):
    url = server(kind)
    args = (f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.n_trials=2")
    res = run_here(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    res = run_here(tmp_path, *args)
    assert res.returncode == 0 and "already has 2 of 2 trials" in res.stdout + res.stderr
    trials = optuna.load_study(study_name=study_name, storage=open_storage(url, 10, None)).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_a_password_in_the_url_never_reaches_output_or_files(tmp_path, study_name):
    parts = urlsplit(server("postgresql"))
    secret = "S3cret-" + uuid.uuid4().hex[:6]  # the local server trusts any password
    url = f"{parts.scheme}://{parts.username}:{secret}@{parts.hostname}:{parts.port}{parts.path}"
    args = (f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.n_trials=1")
    res = sweep(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    assert secret not in res.stdout + res.stderr and ":***@" in res.stdout + res.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "hydra.yaml" for p in written)
    assert not [p for p in written if secret.encode() in p.read_bytes()]

    refused = f"postgresql://someone:{secret}@127.0.0.1:1/nothing"  # nothing listens on port 1
    res = sweep(tmp_path, f"hydra.sweeper.storage={refused}")
    assert res.returncode == 2 and "cannot use the storage postgresql+psycopg://someone:***@127.0.0.1:1" in res.stderr
    assert secret not in res.stdout + res.stderr


class Silent:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_server_that_never_answers_fails_within_a_bounded_time(tmp_path):
    silent = Silent()
    urls = {
        "postgresql": f"postgresql://u:pw@127.0.0.1:{silent.port}/db",
        "mysql": f"mysql://u:pw@127.0.0.1:{silent.port}/db",
        "redis": f"redis://127.0.0.1:{silent.port}/0",
    }
    try:
        t0 = time.monotonic()
        procs = {}
        for kind, url in urls.items():  # side by side: each waits for its own timeout
            (tmp_path / kind).mkdir()
            procs[kind] = subprocess.Popen(
                [sys.executable, str(SPHERE), "-m", f"hydra.sweeper.storage={url}"],
                cwd=tmp_path / kind,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        for kind, proc in procs.items():
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 2, (kind, err)
            assert "cannot use the storage" in err and "Traceback" not in err, (kind, err)
            assert ":pw@" not in err
        # each within the connect timeout (10 s) and the process's start, not the 30 s a statement
        # may take (MySQL waited that long for the greeting before its read timeout was split)
        assert time.monotonic() - t0 < STATEMENT_TIMEOUT - 5
    finally:
        silent.close()


READS_10 = {"read_timeout": CONNECT_TIMEOUT}


def test_a_mysql_connection_reads_with_the_statement_timeout_once_connected(study_name):
    storage = open_storage(server("mysql"), 10, None)
    with storage.engine.connect() as conn:
        made = conn.connection.dbapi_connection
        assert made.connect_timeout == CONNECT_TIMEOUT
        assert made._read_timeout == STATEMENT_TIMEOUT  # made with CONNECT_TIMEOUT for the greeting
    other = sqlalchemy.create_engine(server("mysql").replace("mysql://", "mysql+pymysql://"), connect_args=READS_10)
    with other.connect() as conn:  # another library's connection in the same process: left as it was made
        assert conn.connection.dbapi_connection._read_timeout == CONNECT_TIMEOUT


@pytest.mark.parametrize(
    "url, message",
    [
        ("nonsense", "hydra.sweeper.storage='nonsense' is not a storage URL: use sqlite:///PATH"),
        ("oracle://u:pw@127.0.0.1/db", "hydra.sweeper.storage='oracle://u:***@127.0.0.1/db' needs"),
        ("'postgresql://u@127.0.0.1:1/db?foo=1'", 'invalid connection option "foo"'),
    ],
)
def test_bad_urls_and_missing_drivers_are_named(tmp_path, url, message):
    res = run_here(tmp_path, f"hydra.sweeper.storage={url}")
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_a_storage_path_through_a_file_is_named(tmp_path):
    (tmp_path / "afile").write_text("a file, not a folder")
    for url in (f"sqlite:///{tmp_path}/afile/sub/x.db", f"journal:{tmp_path}/afile/sub/x.log"):
        res = run_here(tmp_path, f"hydra.sweeper.storage={url}")
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert f"hydra.sweeper.storage='{url}': cannot make the folder {tmp_path}/afile/sub" in res.stderr


def test_no_url_password_reaches_output_files_or_the_mlflow_store(tmp_path, study_name):
    """A password in the storage URL and in mlflow_uri: no console line, no file under the sweep's
    folder (jobs' .hydra files included), and no row of the MLflow store holds it."""
    if os.environ.get("CI") != "true":  # under CI the dev extras are there: a missing one fails
        pytest.importorskip("mlflow")
    import psycopg

    parts = urlsplit(server("postgresql"))
    secret = "S3cret-" + uuid.uuid4().hex[:6]  # the local server trusts any password
    store = f"mlflow_{uuid.uuid4().hex[:8]}"
    admin = f"postgresql://{parts.username}@{parts.hostname}:{parts.port}{parts.path}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {store}")
    try:
        netloc = f"{parts.username}:{secret}@{parts.hostname}:{parts.port}"
        args = (
            f"hydra.sweeper.storage=postgresql://{netloc}{parts.path}",
            f"hydra.sweeper.mlflow_uri=postgresql+psycopg://{netloc}/{store}",
            "hydra.sweeper.mlflow=true",
            f"hydra.sweeper.study_name={study_name}",
            "hydra.sweeper.n_trials=2",
            "steps=2",
            "results=true",
            "hydra.sweeper.artifacts=[results.json]",
        )
        res = sweep(tmp_path, *args, timeout=300)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        assert secret not in out and f"postgresql+psycopg://{parts.username}:***@" in out
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert sum(p.name == "hydra.yaml" for p in written) == 2 and any(p.name == "results.json" for p in written)
        assert not [p for p in written if secret.encode() in p.read_bytes()]
        with psycopg.connect(f"{admin.rsplit('/', 1)[0]}/{store}") as db:
            tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            assert "runs" in tables and db.execute("SELECT count(*) FROM runs").fetchone()[0] == 3  # study + 2 trials
            assert db.execute("SELECT count(*) FROM metrics WHERE key = 'loss'").fetchone()[0] == 4  # jobs logged
            for table in tables:
                rows = db.execute(f'SELECT t::text FROM "{table}" t').fetchall()
                assert not [r for r in rows if secret in r[0]], table
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {store} WITH (FORCE)")


def test_a_pool_reset_after_a_real_lost_connection_is_quiet_and_its_record_is_still_what_we_filter(caplog):
    """SQLAlchemy logs a connection it could not roll back on its way back to the pool, traceback
    and all: a real one (its server process terminated while checked out) is logged under the
    logger name and text the sweeper's filter expects, and the filter drops it."""
    import logging

    import psycopg
    import sqlalchemy
    from hydra_study_sweeper import outage

    url = server("postgresql")
    engine = sqlalchemy.create_engine(sqlalchemy.engine.make_url(url).set(drivername="postgresql+psycopg"))

    def lose_one() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"):
            conn = engine.raw_connection()  # the pooled connection itself, as Optuna's sessions leave it
            cursor = conn.cursor()
            cursor.execute("SELECT pg_backend_pid()")  # opens a transaction
            pid = cursor.fetchone()[0]
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.close()  # back to the pool, whose rollback meets a connection whose server is gone
        return [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy.pool")]

    pool_log = logging.getLogger(f"sqlalchemy.pool.impl.{type(engine.pool).__name__}")
    kept = list(pool_log.filters)
    try:
        pool_log.filters = [f for f in kept if not isinstance(f, outage.LostReset)]
        assert lose_one() == ["Exception during reset or similar"]  # what the filter is written for
        outage.quiet_lost_resets()
        assert lose_one() == []
    finally:
        pool_log.filters = kept
        engine.dispose()
