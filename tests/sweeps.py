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


def start(tmp_path, *args, env=None):
    """A sweep in the background; its output goes to a file (a full pipe would block it). SIGINT is
    restored to its default in the child, as a terminal's Ctrl-C finds it even when the test runner
    itself runs as a background job (which inherits SIGINT ignored)."""
    env = {**os.environ, **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    out = open(tmp_path / f"worker-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115 - read after the process ends
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlp_sweep", "-m", *args],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )
    proc.log = out
    return proc


def default_sigint():
    """A terminal delivers Ctrl-C even when the test runner itself ignores SIGINT (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(proc, timeout):
    proc.wait(timeout=timeout)
    proc.log.seek(0)
    return proc.log.read()


def wait_running(tmp_path, name, number, timeout=120):
    """Until trial `number` of the study is RUNNING and its job has started training."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            trials = study(tmp_path, name).trials
        except Exception:  # the database may not exist yet
            trials = []
        if len(trials) > number and trials[number].state == TrialState.RUNNING:
            log = tmp_path / "outputs" / "sweeps" / name / str(number) / "mlp_sweep.log"
            if log.is_file() and "epoch" in log.read_text():
                return
        time.sleep(0.2)
    raise AssertionError(f"trial {number} of {name} never ran")
