"""Keeps up to K trials running through any Hydra launcher, with no batch barrier.

Hydra's Launcher API runs a batch of jobs and returns when the slowest ends. Here each trial is a
batch of its own: launchers that run jobs outside this process (joblib, submitit, ray) get one
thread per trial, so a trial that ends frees its place at once and the sweeper asks the next. The
in-process basic launcher runs each job in the sweeper's own thread, one at a time (it changes the
process's logging, environment and working directory while a job runs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
from typing import Any

from .compat import launcher_kind, running_executor
from .wire import SECRET_ENVS

log = logging.getLogger(__name__)


def runs_elsewhere(launcher: Any) -> bool:
    """Whether the launcher runs a job outside this process. joblib with one worker (n_jobs=1, or -1
    on a machine or allocation of one core) runs it here, in the calling thread, as the basic
    launcher does: two at once there would share Hydra's per-process state and fail each other."""
    kind = launcher_kind(launcher)
    return kind != "in-process" and not (kind == "joblib" and worker_processes(launcher) == 1)


class Launches:
    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher
        self.threaded = runs_elsewhere(launcher)
        self.ended: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.running: set[int] = set()
        self.ready = False

    def _prepare(self) -> None:
        """Ray starts (or joins its cluster) once, here in the main thread: launches on several
        threads would each try `ray.init`. Ray installs its own SIGTERM handler; the sweeper's stays."""
        self.ready = True
        if launcher_kind(self.launcher) == "joblib":
            from .watchdog import record_pool_deaths

            record_pool_deaths()
        if launcher_kind(self.launcher) != "ray":
            return
        import ray
        from omegaconf import OmegaConf

        if ray.is_initialized():
            return
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            ray.init(**ray_init_options(OmegaConf.to_container(self.launcher.ray_cfg.init, resolve=True)))
        finally:
            for s, handler in handlers.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(s, handler)

    def start(self, key: Any, job: tuple[str, ...], number: int) -> None:
        """Launch one job (`key` tells it apart, `number` is its first trial's); its return comes out
        of wait() with its key."""
        if not self.ready:
            self._prepare()
        self.running.add(key)
        if not self.threaded:
            self.ended.put((key, self._launch(number, job)))
            return
        thread = threading.Thread(
            target=lambda: self.ended.put((key, self._launch(number, job))), name=f"trial-{key}", daemon=True
        )
        thread.start()

    def _launch(self, number: int, job: tuple[str, ...]) -> Any:
        """The job's return; an error of the launcher itself (a file where the job's folder goes, a
        full disk, a lost cluster) is that trial's failure, never the sweep's."""
        try:
            [ret] = self.launcher.launch([list(job)], initial_job_idx=number)
            return ret
        except KeyboardInterrupt:  # only ever in the main thread: the sweeper's to handle
            raise
        except BaseException as err:  # noqa: BLE001 - a job's SystemExit is its own failure too
            return err

    def wait(self, timeout: float) -> list[tuple[int, Any]]:
        """The trials that ended, waiting up to `timeout` seconds for the first (interruptible)."""
        ended = []
        try:
            ended.append(self.ended.get(timeout=timeout) if timeout > 0 else self.ended.get_nowait())
            while True:
                ended.append(self.ended.get_nowait())
        except queue.Empty:
            pass
        for key, _ in ended:
            self.running.discard(key)
        return ended

    def abandon(self) -> None:
        """After an interrupt: stop the local worker processes still running abandoned trials, so the
        process can exit now (their trials are already failed and queued again)."""
        if not self.running:
            return
        with contextlib.suppress(Exception):
            executor = running_executor()
            if executor is not None:
                executor.shutdown(wait=False, kill_workers=True)


def worker_processes(launcher: Any) -> int | None:
    """How many jobs joblib's launcher runs at once (its n_jobs, -1 = one per core); None for others."""
    if launcher_kind(launcher) != "joblib":
        return None
    from joblib import effective_n_jobs

    return effective_n_jobs(int(launcher.joblib.get("n_jobs", -1) or -1))


def ray_init_options(options: dict[str, Any]) -> dict[str, Any]:
    """ray.init's options with what every job needs from the sweeper's environment (a storage URL
    with a password, the MLflow URI: kept out of the jobs' files): Ray tasks on other nodes do not inherit this
    process's environment, but the job's runtime environment reaches them. It is never written to
    the config or the jobs' folders."""
    secrets = {k: os.environ[k] for k in SECRET_ENVS if k in os.environ}
    if not secrets:
        return options
    runtime_env = dict(options.get("runtime_env") or {})
    runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **secrets}
    return {**options, "runtime_env": runtime_env}


def say_limits(settings: Any, launches: Launches, capacity: int) -> None:
    """What the launcher keeps from the settings: a stall_timeout it cannot watch, fewer joblib
    processes than jobs at once."""
    if settings.stall_timeout and not launches.threaded:
        log.warning(
            "hydra.sweeper.stall_timeout=%g s is not watched: the launcher runs each job in this "
            "process, where a hung job cannot be stopped (use a launcher with processes of its own: joblib, "
            "submitit_local)",
            settings.stall_timeout,
        )
    workers = worker_processes(launches.launcher)
    if workers == 1 and not launches.threaded:
        from joblib import cpu_count

        log.warning(
            "joblib has one worker here (hydra.launcher.n_jobs=%s, %d core(s) available), so it runs each "
            "job in this process: one at a time, with no watchdog; set hydra.launcher.n_jobs=%d for jobs in "
            "processes of their own",
            launches.launcher.joblib.get("n_jobs", -1),
            cpu_count(),
            max(2, capacity),
        )
    elif workers is not None and workers < capacity:
        log.warning(
            "joblib runs %d job(s) at once (hydra.launcher.n_jobs), fewer than hydra.sweeper.n_jobs=%d: "
            "the others wait for a process; set hydra.launcher.n_jobs=%d",
            workers,
            settings.n_jobs,
            capacity,
        )
