"""Database servers a test starts itself, on a port of its own, in a throwaway data folder: a test
may stop, kill and restart them without touching the machine's shared servers. A machine without
the server's programs skips the test, except under CI=true (this project's CI machines have them)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(what)
    pytest.skip(what)


def wait_for_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode} at start")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{name} did not start within {timeout:g} s")


class Server:
    """One server process over one data folder; stop() and start() again keep the data."""

    name = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.folder / "server.log", "a")  # noqa: SIM115 - the server's own, closed with it
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for_port(self.port, self.proc, self.name)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown that drops every client; SIGKILL: a crash."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        self.proc.wait(60)

    def close(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, its programs run as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Postgres(Server):
    name = "postgres"

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
        if not found[-1]:
            missing("no PostgreSQL server programs (initdb) on this machine (Debian: apt-get install postgresql)")
        self.bin = Path(found[-1]).parent
        super().__init__()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        init = [str(self.bin / "initdb"), "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres"]
        subprocess.run(as_postgres([*init, "--no-sync"]), check=True, capture_output=True, timeout=120)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def command(self) -> list[str]:
        options = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-k", str(self.folder)]
        return as_postgres(
            [str(self.bin / "postgres"), "-D", str(self.folder / "data"), "-p", str(self.port), *options]
        )

    def start(self) -> None:
        super().start()
        import psycopg

        deadline = time.monotonic() + 60
        while True:  # after a crash the port opens before recovery ends ("not yet accepting connections")
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres").close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT: PostgreSQL's fast shutdown (every client disconnected at once)."""
        super().stop(sig)


class MariaDB(Server):
    name = "mariadb"

    def __init__(self) -> None:
        self.server, install = shutil.which("mariadbd", path="/usr/sbin:/usr/bin"), shutil.which("mariadb-install-db")
        if not self.server or not install:
            missing("no MariaDB server programs (mariadbd) on this machine (Debian: apt-get install mariadb-server)")
        super().__init__()
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [install, "--no-defaults", f"--datadir={self.folder / 'data'}", *user, "--skip-test-db"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.url = f"mysql://root@127.0.0.1:{self.port}/test"

    def command(self) -> list[str]:
        user = ["--user=root"] if os.geteuid() == 0 else []
        return [
            self.server,
            "--no-defaults",
            f"--datadir={self.folder / 'data'}",
            f"--port={self.port}",
            f"--socket={self.folder / 'sock'}",
            "--bind-address=127.0.0.1",
            "--skip-log-bin",
            "--skip-name-resolve",
            "--skip-grant-tables",  # any login is root: the server is this test's alone
            "--innodb-buffer-pool-size=32M",
            *user,
        ]

    def start(self) -> None:
        super().start()
        import pymysql

        deadline = time.monotonic() + 30
        while True:  # the port opens a moment before logins work
            try:
                db = pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="")
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with db.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS test")
        db.close()


class Redis(Server):
    name = "redis"

    def __init__(self, *args: str) -> None:
        self.binary, self.args = shutil.which("redis-server"), args
        if self.binary is None:
            missing("no redis-server on this machine (Debian: apt-get install redis-server)")
        super().__init__()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), *self.args]


SERVERS = {"postgresql": Postgres, "mariadb": MariaDB}
