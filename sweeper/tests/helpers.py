"""Sweeps of the sphere app in subprocesses: run, start in the background, wait, read the study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState

SPHERE = Path(__file__).parent / "apps" / "sphere.py"  # a Hydra app that is not ours
# a trial of some seconds: long enough to signal while it runs, short enough to rerun; pruning
# stays on, with a pruner that cannot stop anyone among these few trials (five finish first)
LONG = ("steps=150", "step_seconds=0.02", "hydra/sweeper/pruner=median", "hydra.sweeper.study_name=long")
BEAT = ("hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3")


def environment(env: dict | None = None) -> dict:
    full = {**os.environ, **(env or {})}
    full.pop("HYDRA_FULL_ERROR", None)  # users see Hydra's short errors, so do the tests
    return full


def sweep(tmp_path, *args, env=None, timeout=300, app=SPHERE) -> subprocess.CompletedProcess:
    """`python sphere.py -m ARGS` in tmp_path, as a user would type it."""
    return subprocess.run(
        [sys.executable, str(app), "-m", *args],
        cwd=tmp_path,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sweep_here(tmp_path, *args, app=SPHERE) -> str:
    """`python sphere.py -m ARGS` in this process: what it printed, its exit code as a last line."""
    res = run_here(tmp_path, *args, app=app)
    return res.stdout + res.stderr + f"\nexit {res.returncode}\n"


def run_here(tmp_path, *args, app=SPHERE) -> SimpleNamespace:
    """As sweep(), in this process (Hydra's basic launcher runs each job here too): returncode,
    stdout, stderr. A second or less where a subprocess takes several (Python, torch and Optuna
    imported once per test process); for what needs no process of its own (no signals, no second
    worker, no launcher with processes)."""
    import importlib.util
    import inspect

    spec = importlib.util.spec_from_file_location(f"app_{app.stem}", app)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    task = getattr(module, app.stem)
    inspect.unwrap(task).__module__ = "__main__"  # as when run as a script: Hydra finds conf/ beside it
    return run_task_here(tmp_path, task, str(app), "-m", *args)


def run_task_here(tmp_path, task, argv0: str, *args, env: dict | None = None) -> SimpleNamespace:
    """A `@hydra.main` task called as `argv0 ARGS` would run it, in this process, in tmp_path, with
    `env` added to the environment: returncode, stdout, stderr. What a run changes of the process
    goes back afterwards: the working folder, the environment, the root logger, torch's thread
    count. Python's warnings go to pytest, not to stderr: what a fresh process warns is a
    subprocess test's to check."""
    import contextlib
    import io
    import logging

    from hydra.core.global_hydra import GlobalHydra

    torch = sys.modules.get("torch")  # only where something imported it: the sphere app does not
    root = logging.getLogger()
    handlers, level, argv, cwd, saved_env = root.handlers[:], root.level, sys.argv, os.getcwd(), dict(os.environ)
    threads = torch.get_num_threads() if torch else None
    out, err, code = io.StringIO(), io.StringIO(), 0

    GlobalHydra.instance().clear()
    try:
        os.environ.pop("HYDRA_FULL_ERROR", None)  # users see Hydra's short errors, so do the tests
        os.environ.update(env or {})
        os.chdir(tmp_path)
        sys.argv = [argv0, *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            task()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
        sys.argv = argv
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved_env)  # what the jobs' env_set left behind goes
        root.handlers[:] = handlers
        root.setLevel(level)
        if torch and threads:
            torch.set_num_threads(threads)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def storage_of(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/sphere.db"


def study(tmp_path, name="sphere"):
    return optuna.load_study(study_name=name, storage=storage_of(tmp_path))


def studies(tmp_path):
    if not (tmp_path / "sphere.db").exists():
        return {}
    return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage_of(tmp_path))}


def no_running(trials):
    return all(t.state != TrialState.RUNNING for t in trials)


def states(trials):
    return [t.state for t in trials]


def start(tmp_path, *args, env=None, app=SPHERE):
    """A sweep in the background; its output goes to a file (a full pipe would block it). SIGINT is
    restored to its default in the child, as a terminal's Ctrl-C finds it even when the test runner
    itself runs as a background job (which inherits SIGINT ignored)."""
    path = tmp_path / f"worker-{time.monotonic_ns()}.log"
    out = open(path, "w")  # noqa: SIM115 - closed by finish()
    proc = subprocess.Popen(
        [sys.executable, str(app), "-m", *args],
        cwd=tmp_path,
        env=environment({"PYTHONFAULTHANDLER": "1", **(env or {})}),
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )
    proc.log, proc.log_path = out, path
    return proc


def default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def output(proc):
    """What a background sweep printed so far."""
    return proc.log_path.read_text()


def finish(proc, timeout):
    """The sweep's output once it has exited. One still running after `timeout` s is a hang: it is
    sent SIGABRT (start() sets PYTHONFAULTHANDLER, so it prints every thread's stack first), and
    the test fails with what it printed, instead of leaving the process behind."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # our own child, not yet reaped: the pid is still its
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.log.close()
        said = output(proc)
        raise AssertionError(f"the sweep did not exit within {timeout} s; its output and stacks:\n{said}") from None
    proc.log.close()
    return output(proc)


def wait_until(check, proc, what, timeout=300):
    """Until check() holds; fails at once, with the worker's output, if the worker has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the worker exited with {proc.returncode} first:\n{output(proc)}")
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s" + (f"; the worker said:\n{output(proc)}" if proc else ""))


def wait_running(tmp_path, name, number, proc=None, timeout=300):
    """Until trial `number` of the study is RUNNING and its job has taken a step."""

    def stepping():
        # the job's log first: reading a database the worker is still creating would race it
        log = tmp_path / "sweeps" / name / str(number) / "sphere.log"
        if not (log.is_file() and "step" in log.read_text()):
            return False
        trials = study(tmp_path, name).trials
        return len(trials) > number and trials[number].state == TrialState.RUNNING

    wait_until(stepping, proc, f"trial {number} of {name} never ran", timeout)
