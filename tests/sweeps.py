"""Helpers for end-to-end sweeps in subprocesses: run, start in the background, read the study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from .conftest import run_cli

FAST = ("data=digits", "trainer.epochs=2")
# a trial of some seconds: long enough to signal while it trains, short enough to rerun; pruning
# stays on, with a pruner that cannot stop anyone among these few trials (five finish first)
LONG = (
    "data=digits",
    "trainer.patience=0",
    "trainer.epochs=150",
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.study_name=long",
)
BEAT = ("hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3")


def sweep(tmp_path, *args, env=None, timeout=300):
    return run_cli("-m", *args, cwd=tmp_path, env=env, timeout=timeout)


def study(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/outputs/optuna.db")


def studies(tmp_path):
    db = tmp_path / "outputs" / "optuna.db"
    if not db.exists():
        return {}
    storage = f"sqlite:///{db}"
    return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}


def no_running(trials):
    return all(t.state != TrialState.RUNNING for t in trials)


def states(trials):
    return [t.state for t in trials]


def start(tmp_path, *args, env=None, app=None):
    """A sweep in the background (mlp_sweep, or the Hydra app at path `app`); its output goes to a
    file (a full pipe would block it). SIGINT is restored to its default in the child, as a
    terminal's Ctrl-C finds it even when the test runner itself runs as a background job (which
    inherits SIGINT ignored)."""
    env = {**os.environ, **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, str(app)] if app else [sys.executable, "-m", "mlp_sweep"]
    path = tmp_path / f"worker-{time.monotonic_ns()}.log"
    out = open(path, "w")  # noqa: SIM115 - closed by finish()
    proc = subprocess.Popen(
        [*command, "-m", *args],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )
    proc.log, proc.log_path = out, path
    return proc


def output(proc):
    """What a background sweep printed so far."""
    return proc.log_path.read_text()


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


def default_sigint():
    """A terminal delivers Ctrl-C even when the test runner itself ignores SIGINT (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(proc, timeout):
    proc.wait(timeout=timeout)
    proc.log.close()
    return output(proc)


def wait_running(tmp_path, name, number, proc=None, timeout=300):
    """Until trial `number` of the study is RUNNING and its job has started training."""

    def training():
        # the job's log first: reading a database the worker is still creating would race it
        log = tmp_path / "outputs" / "sweeps" / name / str(number) / "mlp_sweep.log"
        if not (log.is_file() and "epoch" in log.read_text()):
            return False
        trials = study(tmp_path, name).trials
        return len(trials) > number and trials[number].state == TrialState.RUNNING

    wait_until(training, proc, f"trial {number} of {name} never ran", timeout)
