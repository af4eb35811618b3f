"""Helpers for the app's end-to-end sweeps: run one (in a subprocess, or in this process), read its study."""

from __future__ import annotations

import optuna

from sweeper.tests.helpers import run_task_here, states  # noqa: F401 - for the app's tests

from .conftest import run_cli

FAST = ("data=digits", "trainer.epochs=2")


def sweep(tmp_path, *args, env=None, timeout=300):
    return run_cli("-m", *args, cwd=tmp_path, env=env, timeout=timeout)


def sweep_here(tmp_path, *args, env=None):
    """`python -m mlp_sweep -m ARGS` in this process, for what needs no process of its own (no
    signals, no launcher with processes, no question of what a fresh process warns): returncode,
    stdout, stderr, as sweep() gives them. Python, torch and Optuna are imported once per test
    process instead of once per sweep (about 4 s of a 2-core machine's time each)."""
    return run_here(tmp_path, "-m", *args, env=env)


def run_here(tmp_path, *args, env=None):
    """`python -m mlp_sweep ARGS` in this process (see sweep_here)."""
    import torch  # noqa: F401 - before the run, so that its thread count is put back after it

    import mlp_sweep.__main__

    # sys.argv[0] as `python -m` sets it: the rerun commands a sweep writes are built from it
    return run_task_here(tmp_path, mlp_sweep.__main__.main, mlp_sweep.__main__.__file__, *args, env=env)


def study(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/outputs/optuna.db")


def studies(tmp_path):
    db = tmp_path / "outputs" / "optuna.db"
    if not db.exists():
        return {}
    storage = f"sqlite:///{db}"
    return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
