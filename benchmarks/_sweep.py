"""What the sweep benchmarks share: one sweep of the app in a subprocess, timed, and its study
(SQLite in OUT, the job folders in OUT/NAME, no artifacts, no model or experiment files)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna


def timed_sweep(out: Path, name: str, *overrides: str) -> tuple[float, optuna.Study]:
    storage = f"sqlite:///{out}/bench.db"
    command = [
        sys.executable,
        "-m",
        "mlp_sweep",
        "-m",
        *overrides,
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={out}/{name}",
        "hydra.sweeper.artifact_dir=null",
        "hydra.sweeper.rerun_dir=null",  # no experiment files where the benchmark is started
        "save_model=false",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:  # the sweep's own error, not a bare CalledProcessError
        sys.exit(f"the sweep {' '.join(command[2:])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    return wall, optuna.load_study(study_name=name, storage=storage)
