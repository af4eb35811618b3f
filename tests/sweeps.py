"""Helpers for the app's end-to-end sweeps in subprocesses: run one, read its study."""

from __future__ import annotations

import optuna

from sweeper.tests.helpers import states  # noqa: F401 - for the app's tests

from .conftest import run_cli

FAST = ("data=digits", "trainer.epochs=2")


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
