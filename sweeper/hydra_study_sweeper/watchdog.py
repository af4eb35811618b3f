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
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOB_FILE = ".sweeper-job.json"  # in each job's folder: {"host": ..., "pid": ...}; touched at each step
KILL_AFTER = 5.0  # seconds between SIGTERM and SIGKILL of a hung job's processes
GIVE_UP = 3.0  # seconds after the SIGKILL: the stopped job's trials are told without its launcher's word
POOL_DEATHS: dict[int, int] = {}  # joblib worker pid -> exit code, for workers that died on their own
_touched: str | None = None  # this job's file, in the job's process


class Watched:
    """The task function, as the launcher runs it: writes the job's file first."""

    def __init__(self, task_function: Any) -> None:
        self.task_function = task_function
        functools.update_wrapper(self, task_function)

    def __call__(self, cfg: Any) -> Any:
        global _touched
        from hydra.core.hydra_config import HydraConfig

        path = Path(HydraConfig.get().runtime.output_dir) / JOB_FILE
        with contextlib.suppress(OSError):  # a job that cannot write its folder fails on its own
            path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
            _touched = str(path)
        return self.task_function(cfg)


def stepped() -> None:
    """A step was reported (in the job's process): the job is alive."""
    if _touched is not None:
        with contextlib.suppress(OSError):
            os.utime(_touched)


@dataclass
class Watch:
    """One running job, as the sweeper sees it."""

    folder: Path
    started: float | None = None  # time.monotonic() its file was first seen: the job runs
    host: str | None = None
    pid: int | None = None
    mtime: float | None = None  # the file's last mtime seen
    stepped: float | None = None  # time.monotonic() that mtime was first seen changed
    hung: str | None = None  # why it was stopped
    kill_at: float | None = None  # SIGKILL what is left of it then
    tree: tuple[int, ...] = ()  # its processes when stopped (children outlive a parent that dies)
    given_up: float | None = None  # stopped: its trials are told then, if its launcher has not returned


class Watchdog:
    def __init__(self, stall_timeout: float | None, trial_timeout: float | None, stop_grace: float) -> None:
        self.stall, self.limit, self.grace = stall_timeout, trial_timeout, stop_grace
        self.jobs: dict[Any, Watch] = {}
        self.looked = 0.0

    @property
    def active(self) -> bool:
        return bool(self.stall or self.limit)

    def started(self, key: Any, folder: Path) -> None:
        self.jobs[key] = Watch(folder)

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
        if self.stall and quiet > self.stall:
            return f"hung: no step reported for {quiet:.0f} s (hydra.sweeper.stall_timeout={self.stall:g} s)"
        ran = now - w.started
        if self.limit and ran > self.limit + self.grace:
            return (
                f"hung: still running {ran:.0f} s after its start, past hydra.sweeper.trial_timeout={self.limit:g} s "
                f"and {self.grace:g} s more (hydra.sweeper.stop_grace) without a step that would stop it"
            )
        return None

    def stop(self, w: Watch) -> bool:
        """Stop a hung job's processes; False when they run on another machine."""
        if w.host != socket.gethostname() or w.pid is None:
            return False
        w.tree = (*children(w.pid), w.pid)
        signal_all(w.tree, signal.SIGTERM)
        n = len(w.tree) - 1
        log.info("stopped process %d and %d process(es) it started (SIGTERM; SIGKILL in %g s)", w.pid, n, KILL_AFTER)
        w.kill_at = time.monotonic() + KILL_AFTER
        w.given_up = w.kill_at + GIVE_UP
        return True


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
        w.started, w.host, w.pid, w.mtime = now, found.get("host"), found.get("pid"), mtime
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


def signal_all(pids: tuple[int, ...], sig: int) -> None:
    """Send `sig` to each process (descendants first); those gone already are skipped."""
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def killed_reason(code: int) -> str:
    """What a worker's exit code says of its end."""
    if code == -signal.SIGKILL:
        return "killed by signal 9 (out of memory?)"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else "?"
        return f"killed by signal {-code} ({name})"
    return f"its process exited with code {code}"


def pool_broke(ret: Any) -> bool:
    """Whether a job's return is joblib's pool failing its jobs (a worker died)."""
    return isinstance(ret, BaseException) and type(ret).__name__ in ("TerminatedWorkerError", "BrokenProcessPool")


def record_pool_deaths() -> None:
    """joblib's pool (loky) fails every job it runs when one worker dies and tells only the exit
    codes; which worker died on its own is known just before it stops the others. Its manager's
    `terminate_broken` is wrapped, here in the sweeper's process, to note those workers' pids."""
    with contextlib.suppress(Exception):  # another joblib: the jobs fail with joblib's error as before
        from joblib.externals.loky import process_executor

        manager = process_executor._ExecutorManagerThread
        if getattr(manager.terminate_broken, "records_deaths", False):
            return
        original = manager.terminate_broken

        def terminate_broken(self: Any, bpe: Any) -> Any:
            for p in list(self.processes.values()):
                if p is not None and p.exitcode is not None:
                    POOL_DEATHS[p.pid] = p.exitcode
            return original(self, bpe)

        terminate_broken.records_deaths = True
        manager.terminate_broken = terminate_broken
