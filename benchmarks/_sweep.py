"""What the benchmarks share: a run of the app (`python -m mlp_sweep ARGS`) in a process of its own,
or, in the scripts' tiny modes, in the benchmark's process; and one sweep, timed, with its study
(SQLite in OUT, the job folders in OUT/NAME, no artifacts, no model or experiment files)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import optuna

HERE = {"on": False}  # run the app in this process (in_this_process)


def in_this_process(on: bool) -> None:
    """Run the app in the benchmark's own process from now on (the tiny modes, whose figures are
    meaningless): a process's start (Python, torch, Hydra and Optuna imported, about 4 s on 2 cores)
    is most of a tiny sweep's time. The figures of a real run are timed in processes of their own,
    as a user's runs are."""
    HERE["on"] = on


def app(args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m mlp_sweep ARGS` in CWD: its exit code and its stderr (its stdout is dropped)."""
    if not HERE["on"]:
        command = [sys.executable, "-m", "mlp_sweep", *args]
        return subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import torch
    from hydra.core.global_hydra import GlobalHydra

    import mlp_sweep.__main__ as main

    root, before = logging.getLogger(), (os.getcwd(), sys.argv, dict(os.environ), torch.get_num_threads())
    handlers, level, err, code = root.handlers[:], root.level, io.StringIO(), 0
    GlobalHydra.instance().clear()
    try:
        os.chdir(cwd or before[0])
        sys.argv = [main.__file__, *args]  # as `python -m` sets it
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:  # what the run changed of this process goes back
        GlobalHydra.instance().clear()
        os.chdir(before[0])
        sys.argv = before[1]
        os.environ.clear()
        os.environ.update(before[2])
        torch.set_num_threads(before[3])
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess(args, code, None, err.getvalue())


def timed_sweep(out: Path, name: str, *overrides: str) -> tuple[float, optuna.Study]:
    storage = f"sqlite:///{out}/bench.db"
    args = [
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
    done = app(args)
    if done.returncode != 0:  # the sweep's own error, not a bare CalledProcessError
        sys.exit(f"the sweep {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    return wall, optuna.load_study(study_name=name, storage=storage)
