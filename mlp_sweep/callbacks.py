"""Hydra callbacks: refuse a bad config or an unwritable output directory before any job starts;
summarize a grid run by Hydra's basic sweeper."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .checks import check, directions, metric_list
from .errors import UserError, fail

log = logging.getLogger("mlp_sweep")


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


def direction_problem(config: DictConfig) -> str | None:
    """A sweep direction that contradicts optimized_metric (maximizing a loss) is refused."""
    wanted = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
    if wanted is None or OmegaConf.select(config, "optimized_metric", default=None) is None:
        return None
    given = [str(getattr(d, "name", d)).lower() for d in ([wanted] if isinstance(wanted, str) else wanted)]
    metrics = metric_list(config.optimized_metric)
    if given != directions(metrics):
        return (
            f"hydra.sweeper.direction={given} contradicts optimized_metric={metrics}, which is optimized as "
            f"{directions(metrics)}: leave hydra.sweeper.direction out, it follows optimized_metric"
        )
    return None


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
        problem = direction_problem(config)
        if problem:
            fail(problem)
        say_precision(config)


def say_precision(config: DictConfig) -> None:
    """What trainer.precision=auto picks on this machine, said once at the start of a sweep (each
    job resolves it again on the device it runs on and keeps it in its metrics.json)."""
    if OmegaConf.select(config, "trainer.precision", default=None) != "auto":
        return
    from .precision import resolve
    from .train import pick_device

    device = pick_device(str(config.trainer.device))
    precision, why = resolve("auto", device)
    log.info("trainer.precision=auto: trials on this machine train in %s (%s)", precision, why)


class SummarizeGrid(Callback):
    """After a multirun of Hydra's basic sweeper, the same summary files the Optuna sweeper writes."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return  # the project's sweeper writes its own report from the study
        from hydra_study_sweeper.summary import Layout, rows_from_dirs, write

        from .report import preset_settings

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            s = preset_settings()
            metrics = [str(m) for m in metric_list(config.optimized_metric)]
            layout = Layout(metrics, directions(metrics), list(s.summary_columns), dict(s.formats), s.summary_hook)
            print(write(rows_from_dirs(sweep_dir, s.results_file, metrics, layout.columns), sweep_dir, layout))
