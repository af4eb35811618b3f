"""Jobs that hang and jobs the kernel kills.

Every job writes a small file into its folder as it starts (`Watched`, the task function the
launcher runs): the machine and process it runs in. Each report of a step touches that file. The
sweeper watches the files of its running jobs (`Watchdog`):

- a job with no step for `stall_timeout` seconds, or still running `stop_grace` seconds past
  `trial_timeout` (its reporter stops it at its first step after the limit; a hung job never gets
  there), is hung: its process and the processes it started are stopped (SIGTERM, SIGKILL five
  seconds later), and its trials fail with the reason and their last value;
- a job whose joblib worker died (SIGKILL by the kernel's out-of-memory killer) fails as `killed by
  signal 9 (out of memory?)`. joblib's pool (loky) cannot lose one worker alone: it fails every job
  it runs and stops the other workers. Those jobs' trials are failed as `interrupted` and queued
  again; the next job starts a new pool.

A job on another machine (submitit on SLURM) cannot be stopped from here: its trials are failed and
the sweep goes on without waiting for it (its scheduler ends it; scancel).

Only the job's own processes are ever signalled. Each launch hands its job a fresh token (the
environment variable TOKEN_ENV); a job file is believed only when it holds that token, and an old
file left in a reused folder is removed before the launch. The file names the job's process by its
pid and its start time; a process is signalled only while its start time is still the one recorded
(a pid the kernel handed to another process is left alone), and never the sweeper's own process or
one of its ancestors (a launcher that runs jobs in threads: such a hung job is said, not stopped).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compat import on_broken_pool
from .wire import JOB_FILE, TOKEN_ENV

log = logging.getLogger(__name__)

KILL_AFTER = 5.0  # seconds between SIGTERM and SIGKILL of a hung job's processes
GIVE_UP = 3.0  # seconds after the SIGKILL: the stopped job's trials are told without its launcher's word
POOL_DEATHS: dict[int, int] = {}  # joblib worker pid -> exit code, for workers that died on their own
_touched: str | None = None  # this job's file, in the job's process
_written: dict[str, Any] = {}  # what it holds; "stepped" is added at the first step


class Watched:
    """The task function, as the launcher runs it: writes the job's file first; once the task
    returns, the job's trackers write out what they hold (their writers work in the background)."""

    def __init__(self, task_function: Any) -> None:
        self.task_function = task_function
        functools.update_wrapper(self, task_function)

    def __call__(self, cfg: Any) -> Any:
        global _touched, _written
        from hydra.core.hydra_config import HydraConfig

        path = Path(HydraConfig.get().runtime.output_dir) / JOB_FILE
        me = {"host": socket.gethostname(), "pid": os.getpid(), "start": start_time(os.getpid())}
        _written = {**me, "token": os.environ.get(TOKEN_ENV)}
        with contextlib.suppress(OSError):  # a job that cannot write its folder fails on its own
            path.write_text(json.dumps(_written))
            _touched = str(path)
        try:
            return self.task_function(cfg)
        finally:
            from .tracking import close_job_trackers

            close_job_trackers()


def stepped() -> None:
    """A step was reported (in the job's process): the job is alive. The first step is written into
    the file (the sweeper may see it first after that step); later ones only touch it."""
    if _touched is None:
        return
    with contextlib.suppress(OSError):
        if _written.get("stepped"):
            os.utime(_touched)
        else:
            _written["stepped"] = True
            Path(_touched).write_text(json.dumps(_written))


@dataclass
class Watch:
    """One running job, as the sweeper sees it."""

    folder: Path
    token: str | None = None  # what the job of this launch writes into its file
    started: float | None = None  # time.monotonic() its file was first seen: the job runs
    host: str | None = None
    pid: int | None = None
    start: int | None = None  # the process's start time (clock ticks after boot): pid and start name it
    mtime: float | None = None  # the file's last mtime seen
    stepped: float | None = None  # time.monotonic() that mtime was first seen changed
    hung: str | None = None  # why it was stopped
    kill_at: float | None = None  # SIGKILL what is left of it then
    tree: tuple[tuple[int, int], ...] = ()  # (pid, start) of its processes when stopped (children outlive a parent)
    given_up: float | None = None  # stopped: its trials are told then, if its launcher has not returned


START_ALLOWANCE = 60.0  # seconds more than stall_timeout a job may take to its first step, by default


class Watchdog:
    def __init__(
        self,
        stall_timeout: float | None,
        trial_timeout: float | None,
        stop_grace: float,
        start_timeout: float | None = None,
    ) -> None:
        self.stall, self.limit, self.grace = stall_timeout, trial_timeout, stop_grace
        # a job's start-up (imports, data, its first step) is not silence: until its first step it
        # is judged by start_timeout, by default stall_timeout + START_ALLOWANCE
        self.start = start_timeout or (stall_timeout + START_ALLOWANCE if stall_timeout else None)
        self.start_said = (
            f"hydra.sweeper.start_timeout={start_timeout:g} s"
            if start_timeout
            else f"hydra.sweeper.stall_timeout + {START_ALLOWANCE:g} s = {self.start or 0:g} s"
        )
        self.jobs: dict[Any, Watch] = {}
        self.looked = 0.0

    @property
    def active(self) -> bool:
        return bool(self.stall or self.start or self.limit)

    def started(self, key: Any, folder: Path) -> str:
        """Watch a job about to be launched into `folder`; the token to hand it (TOKEN_ENV). A job
        file left there by an earlier job is removed first."""
        with contextlib.suppress(FileNotFoundError):
            (folder / JOB_FILE).unlink()
        self.jobs[key] = Watch(folder, token=secrets.token_hex(8))
        return self.jobs[key].token

    def ended(self, key: Any) -> Watch | None:
        """The job is over: no longer watched. What is left of a stopped one (a child that ignored
        SIGTERM and outlived it) is killed now rather than at its SIGKILL time."""
        w = self.jobs.pop(key, None)
        if w is not None and w.kill_at is not None:
            w.kill_at = None
            signal_all(w.tree, signal.SIGKILL)
        return w

    def look(
        self, now: float | None = None, paused: bool = False
    ) -> tuple[list[tuple[Any, Watch]], list[tuple[Any, Watch]]]:
        """The jobs found hung since the last look, and those stopped whose launcher has not returned
        within KILL_AFTER + GIVE_UP seconds; at most once a second. `paused`: the storage is away
        (jobs wait in their reports), and the time since the last look does not count."""
        now = time.monotonic() if now is None else now
        if now - self.looked < 1:
            return [], []
        since, self.looked = now - self.looked, now
        hung, gone = [], []
        for key, w in self.jobs.items():
            read(w, now)
            if paused and w.started is not None:
                w.started += since
                w.stepped = w.stepped + since if w.stepped is not None else None
            if w.kill_at is not None and now >= w.kill_at:
                w.kill_at = None
                signal_all(w.tree, signal.SIGKILL)
            if w.given_up is not None and now >= w.given_up:
                w.given_up = None
                gone.append((key, w))  # stopped, and its launcher is slow to say so (submitit polls)
            if w.hung or w.started is None or not self.active:
                continue
            w.hung = self.reason(w, now)
            if w.hung:
                hung.append((key, w))
        return hung, gone

    def reason(self, w: Watch, now: float) -> str | None:
        quiet = now - (w.stepped or w.started)
        if w.stepped is None and self.start and quiet > self.start:
            return f"hung: no first step within {quiet:.0f} s of its start ({self.start_said})"
        if w.stepped is not None and self.stall and quiet > self.stall:
            return f"hung: no step reported for {quiet:.0f} s (hydra.sweeper.stall_timeout={self.stall:g} s)"
        ran = now - w.started
        if self.limit and ran > self.limit + self.grace:
            return (
                f"hung: still running {ran:.0f} s after its start, past hydra.sweeper.trial_timeout={self.limit:g} s "
                f"and {self.grace:g} s more (hydra.sweeper.stop_grace) without a step that would stop it"
            )
        return None

    def stop(self, w: Watch) -> str | None:
        """Stop a hung job's processes; else why they cannot be (another machine, this process)."""
        if w.host != socket.gethostname() or w.pid is None:
            return f"its process runs on {w.host or 'a machine it did not name'}, not here (its scheduler ends it)"
        if w.pid in (os.getpid(), *ancestors(os.getpid())):
            return "it runs inside this sweeper's process (a launcher that runs jobs in threads)"
        w.given_up = time.monotonic() + KILL_AFTER + GIVE_UP
        if start_time(w.pid) != w.start:  # it has ended (its pid may be another process's now)
            log.info("process %d has ended already: nothing to stop", w.pid)
            return None
        w.tree = (*((p, start_time(p)) for p in children(w.pid)), (w.pid, w.start))
        signal_all(w.tree, signal.SIGTERM)
        n = len(w.tree) - 1
        log.info("stopped process %d and %d process(es) it started (SIGTERM; SIGKILL in %g s)", w.pid, n, KILL_AFTER)
        w.kill_at = time.monotonic() + KILL_AFTER
        return None


def read(w: Watch, now: float) -> None:
    path = w.folder / JOB_FILE
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return
    if w.started is None:
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # being written
        if found.get("token") != w.token:
            return  # not this launch's job: a file it has not replaced yet
        w.started, w.host, w.pid, w.start, w.mtime = now, found.get("host"), found.get("pid"), found.get("start"), mtime
        w.stepped = now if found.get("stepped") else None
    elif mtime != w.mtime:
        w.mtime, w.stepped = mtime, now


def children(pid: int) -> list[int]:
    """Every process started by `pid`, its children's children too (Linux: /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in () may hold spaces
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks after boot (Linux: /proc); None when it is gone.
    With the pid it names one process: the kernel hands a pid out again only after its end."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in () may hold spaces
    return None if fields[0] == "Z" else int(fields[19])  # a zombie has ended


def ancestors(pid: int) -> list[int]:
    """The processes above `pid`, its parent first."""
    found = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        found.append(pid)
    return found


def signal_all(tree: tuple[tuple[int, int | None], ...], sig: int) -> None:
    """Send `sig` to each process (descendants first) that is still the one recorded: a process
    gone already, or a pid the kernel has given to another since (its start time differs), is
    skipped; so is this process and any of its ancestors."""
    mine = {os.getpid(), *ancestors(os.getpid())}
    for pid, start in tree:
        if pid in mine or start is None or start_time(pid) != start:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def killed_reason(code: int) -> str:
    """What a worker's exit code says of its end."""
    if code == -signal.SIGKILL:
        return "killed by signal 9 (out of memory?)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a number with no name on this system
            name = "?"
        return f"killed by signal {-code} ({name})"
    return f"its process exited with code {code}"


def pool_broke(ret: Any) -> bool:
    """Whether a job's return is joblib's pool failing its jobs (a worker died)."""
    return isinstance(ret, BaseException) and type(ret).__name__ in ("TerminatedWorkerError", "BrokenProcessPool")


def record_pool_deaths() -> None:
    """joblib's pool (loky) fails every job it runs when one worker dies and tells only the exit
    codes; which worker died on its own is known just before it stops the others, which the fence
    (compat.on_broken_pool) lets the sweeper's process note. Without it (another joblib, said when
    the sweep starts) the jobs fail with joblib's error as before."""

    def note(process: Any) -> None:
        POOL_DEATHS[process.pid] = process.exitcode

    on_broken_pool(note)
