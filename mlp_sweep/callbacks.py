"""Hydra callback: refuse a bad config or an unwritable output directory before any job starts."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .checks import check
from .errors import UserError


def writable_dir_problem(key: str, path: str) -> str | None:
    """Why `path` cannot become a writable directory, or None when it can."""
    target = Path(path).expanduser().absolute()
    probe = target
    while not probe.exists():
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is a file")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        return f"{key}={path!r} is not usable: {err}; use a directory you can write to"
    return None


def fail(message: str) -> None:
    """Print a user error without a traceback and exit 2 (as argparse does)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class CheckBeforeRun(Callback):
    def _check(self, config: DictConfig, dir_key: str) -> None:
        try:
            check(config)
        except UserError as err:
            fail(str(err))
        problem = writable_dir_problem(dir_key, str(config.hydra[dir_key.split(".")[1]].dir))
        if problem:
            fail(problem)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")


class SummarizeGrid(Callback):
    """After a multirun of Hydra's basic sweeper, the same summary files the Optuna sweeper writes."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return  # the project's sweeper writes its own report from the study
        from .report import rows_from_dirs, write_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            metric = config.optimized_metric
            print(write_report(rows_from_dirs(sweep_dir, metric), sweep_dir, metric=metric))
