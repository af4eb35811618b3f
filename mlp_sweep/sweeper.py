"""The project's Optuna sweeper: the stock plugin's search-space grammar and samplers, plus
a study-wide trial target, trial-numbered job directories, failure reasons, Ctrl-C and
stale-trial recovery, and a search space checked before the first trial is asked."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf, open_dict, read_write
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import FrozenTrial, TrialState

from .callbacks import fail
from .checks import problems
from .errors import UserError
from .report import rows_from_study, write_report
from .storage import open_storage

log = logging.getLogger(__name__)

RERUN_REASONS = ("interrupted", "stale")  # failed trials that do not count toward the target
METRIC_ATTRS = ("train_acc", "val_acc", "test_acc", "val_loss", "best_epoch", "epochs_run", "status", "seconds")


class StudySweeper(OptunaSweeperImpl):
    def __init__(
        self,
        sampler: Any,
        heartbeat_interval: int = 10,
        grace_period: int | None = None,
        enqueue_trials: Any = (),
        **stock: Any,
    ) -> None:
        self.sampler_cfg = sampler
        self.requested_failure_rate = stock["max_failure_rate"]  # checked in sweep(), with a clear message
        stock["max_failure_rate"] = min(1.0, max(0.0, float(stock["max_failure_rate"])))
        super().__init__(sampler=_instantiate_sampler(sampler), **stock)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.enqueue_trials = [dict(p) for p in enqueue_trials or ()]
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    # -- the sweep -------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        try:
            self._check_settings()
            space, fixed, fixed_overrides, adhoc, typed_fixed = self._space(arguments)
            self._check_values(space, typed_fixed)
            if adhoc:
                self.enqueue_trials = []  # they name the preset's space, which an ad-hoc sweep replaces
            check_enqueued(self.enqueue_trials, space)
            name = self._study_name(adhoc, space)
            storage = open_storage(self.storage, self.heartbeat_interval, self.grace_period)
            existing = check_against_stored(storage, name, space)
        except UserError as err:
            fail(str(err))
        sampler, n_trials = self._sampler(existing), self.n_trials
        if adhoc and all(map(_discrete, space.values())):  # a full grid, as Hydra's multirun
            grid = {k: self._to_grid_sampler_choices(d) for k, d in space.items()}
            sampler = optuna.samplers.GridSampler(grid, seed=self.sampler_cfg.get("seed"))
            if not any(o.startswith("hydra.sweeper.n_trials=") for o in self.config.hydra.overrides.hydra):
                n_trials = math.prod(len(v) for v in grid.values())
        elif isinstance(sampler, functools.partial):  # the stock grid sampler config: the grid is the space
            grid = {k: self._to_grid_sampler_choices(d) for k, d in space.items()}
            sampler = sampler(grid)
        if isinstance(sampler, optuna.samplers.GridSampler):
            n_trials = min(n_trials, math.prod(len(v) for v in grid.values()))

        sweep_dir = self._sweep_dir(name)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            directions=self._get_directions(),
            load_if_exists=True,
        )
        log.info(
            "study %s in %s: target %d trials, sampler %s",
            name,
            self.storage or "memory",
            n_trials,
            type(sampler).__name__,
        )
        log.info("trial directories under %s", sweep_dir)
        for params in self.enqueue_trials:  # once per study: a trial with these params is not queued again
            study.enqueue_trial(params, skip_if_exists=True)
        heartbeat = Heartbeat(storage, self.heartbeat_interval)
        try:
            self._run(study, space, fixed, fixed_overrides, n_trials, sweep_dir, heartbeat)
        finally:
            heartbeat.stop()
        self._finish(study, sweep_dir)

    def _sampler(self, existing: int) -> Any:
        """The configured sampler; a resumed study shifts its seed by the trials stored, so that a
        rerun continues the search instead of replaying the first run's draws."""
        seed = self.sampler_cfg.get("seed")
        if not existing or seed is None:
            return self.sampler
        return _instantiate_sampler(OmegaConf.merge(self.sampler_cfg, {"seed": int(seed) + existing}))

    def _run(
        self,
        study: optuna.Study,
        space: dict[str, BaseDistribution],
        fixed: dict[str, Any],
        fixed_overrides: list[str],
        n_trials: int,
        sweep_dir: Path,
        heartbeat: Heartbeat,
    ) -> None:
        ran, failed, announced = 0, [], False
        allowed = math.floor(self.max_failure_rate * max(1, n_trials - sum(map(counts_toward_target, study.trials))))
        while True:
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            done = sum(counts_toward_target(t) for t in trials)
            running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
            todo = n_trials - done - len(running)
            if todo <= 0:
                if running and heartbeat.enabled:
                    if not announced:
                        log.info(
                            "waiting for %d trial(s) running in another process: %s",
                            len(running),
                            ", ".join(str(t.number) for t in running),
                        )
                        announced = True
                    time.sleep(min(self.heartbeat_interval, 5))
                    continue
                if ran == 0:
                    log.info("study %s already has %d of %d trials: nothing to run", study.study_name, done, n_trials)
                return
            asked = [study.ask() for _ in range(min(todo, self.n_jobs))]
            for trial in asked:
                trial.set_user_attr("worker", self.worker)
                heartbeat.add(trial._trial_id)
            overrides = [
                (*o, f"trial={t.number}", f"hydra.sweep.dir={sweep_dir}", f"hydra.sweep.subdir={t.number}")
                for t, o in zip(asked, self._configure_trials(asked, space, fixed, fixed_overrides), strict=True)
            ]
            for trial in asked:
                log.info("trial %d start: %s", trial.number, _params(trial.params))
            start = time.perf_counter()
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=asked[0].number)
            except KeyboardInterrupt:
                self._interrupted(study, asked, sweep_dir, heartbeat)
            for trial, ret in zip(asked, returns, strict=True):
                heartbeat.remove(trial._trial_id)
                reason = self._tell(study, trial, ret, sweep_dir / str(trial.number), time.perf_counter() - start)
                ran += 1
                if reason:
                    failed.append(reason)
            self._progress(study, n_trials)
            if len(failed) > allowed:
                log.error(
                    "%d of the %d trials run failed (last: %s): more than max_failure_rate=%s allows "
                    "(%d of this run's trials)",
                    len(failed),
                    ran,
                    failed[-1],
                    self.max_failure_rate,
                    allowed,
                )
                self._finish(study, sweep_dir)
                sys.exit(1)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any, job_dir: Path, seconds: float) -> str | None:
        """Record one finished job; returns the failure reason, or None when it completed."""
        metrics = read_metrics(job_dir)
        record_metrics(trial, metrics, job_dir)
        reason, value = None, None
        try:
            value = float(ret.return_value)
        except Exception as err:  # the task's own exception, re-raised by JobReturn
            reason = f"{type(err).__name__}: {err}"[:500]
        else:
            if metrics.get("status", "ok") != "ok":
                reason = str(metrics["status"])
            elif not math.isfinite(value):
                reason = f"non-finite result {value}"
        if reason:
            trial.set_user_attr("fail_reason", reason)
            _tell(study, trial, state=TrialState.FAIL)
            log.warning("trial %d failed after %.1f s: %s", trial.number, seconds, reason)
        else:
            _tell(study, trial, value)
            log.info(
                "trial %d end: %s=%.4f in %.3g s (%s)",
                trial.number,
                self.config.optimized_metric,
                value,
                metrics.get("seconds", seconds),
                _params(trial.params),
            )
        return reason

    def _interrupted(self, study: optuna.Study, asked: list, sweep_dir: Path, heartbeat: Heartbeat) -> None:
        """Ctrl-C: keep what finished, fail and requeue the rest, exit 130."""
        for trial in asked:
            heartbeat.remove(trial._trial_id)
            job_dir = sweep_dir / str(trial.number)
            metrics = read_metrics(job_dir)
            record_metrics(trial, metrics, job_dir)
            value = metrics.get(self.config.optimized_metric)
            if metrics.get("status") == "ok" and isinstance(value, (int, float)):
                _tell(study, trial, float(value))
                continue
            trial.set_user_attr("fail_reason", "interrupted")
            _tell(study, trial, state=TrialState.FAIL)
            requeue(study, study._storage.get_trial(trial._trial_id))
            log.warning("trial %d interrupted: recorded as failed and queued again", trial.number)
        self._finish(study, sweep_dir)
        log.warning("sweep interrupted; run the same command again to resume")
        sys.exit(130)

    def _progress(self, study: optuna.Study, n_trials: int) -> None:
        trials = study.get_trials(deepcopy=False)
        done = sum(counts_toward_target(t) for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = ""
        if complete:
            b = study.best_trial
            best = f", best {self.config.optimized_metric} {b.value:.4f} (trial {b.number})"
        log.info("progress: %d / %d trials done%s", done, n_trials, best)

    def _finish(self, study: optuna.Study, sweep_dir: Path) -> None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            results = {
                "name": "optuna",
                "study_name": study.study_name,
                "best_trial": best.number,
                "best_dir": best.user_attrs.get("dir", str(sweep_dir / str(best.number))),
                "best_params": best.params,
                "best_value": best.value,
            }
            OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        print(write_report(rows_from_study(study), sweep_dir, study=study, metric=self.config.optimized_metric))

    # -- the search space ------------------------------------------------------------------

    def _check_settings(self) -> None:
        bad = []
        if not (isinstance(self.n_trials, int) and self.n_trials >= 1):
            bad.append(f"hydra.sweeper.n_trials={self.n_trials!r} is not allowed: use an integer >= 1")
        if not (isinstance(self.n_jobs, int) and self.n_jobs >= 1):
            bad.append(f"hydra.sweeper.n_jobs={self.n_jobs!r} is not allowed: use an integer >= 1")
        rate = self.requested_failure_rate
        if not (isinstance(rate, (int, float)) and 0 <= rate <= 1):
            bad.append(f"hydra.sweeper.max_failure_rate={rate!r} is not allowed: use a number in [0, 1]")
        if not (isinstance(self.heartbeat_interval, int) and self.heartbeat_interval >= 1):
            bad.append(
                f"hydra.sweeper.heartbeat_interval={self.heartbeat_interval!r} is not allowed: use whole seconds >= 1"
            )
        if bad:
            raise UserError("invalid sweep settings:\n  " + "\n  ".join(bad))

    def _space(self, arguments: list[str]) -> tuple[dict, dict, list, bool, dict]:
        """The search space, fixed values (as strings and typed), and whether it is ad hoc: only the
        sweeps given on the command line, in place of the preset's params."""
        self._process_searchspace_config()
        preset = self._parse_sweeper_params_config()
        parsed_args = _parse(arguments, "command line")
        adhoc = any(o.is_sweep_override() for o in parsed_args)
        lines = arguments if adhoc else [*preset, *arguments]
        typed = {o.get_key_element(): o.value() for o in _parse(lines, "sweep") if not o.is_sweep_override()}
        for line in lines:  # one at a time, so an error names its key
            try:
                create_params_from_overrides([line])
            except (ValueError, AssertionError) as err:
                raise UserError(f"invalid search space, nothing was run:\n  {line}: {err}") from None
        space, fixed, fixed_overrides = create_params_from_overrides(lines)
        for name in fixed:
            space.pop(name, None)
        if not space:
            raise UserError(
                "the search space is empty: give hydra.sweeper.params (hparams_search=...) or "
                "sweeps on the command line, e.g. optimizer.lr=1e-3,1e-4"
            )
        return space, fixed, fixed_overrides, adhoc, {k: typed[k] for k in fixed if k in typed}

    def _check_values(self, space: dict[str, BaseDistribution], fixed: dict[str, Any]) -> None:
        """Every key exists, and every choice and range end passes the config checks."""
        found: list[str] = []
        task = OmegaConf.create({k: v for k, v in OmegaConf.to_container(self.config).items() if k != "hydra"})
        groups = dict(self.config.hydra.runtime.choices)
        loader = self.hydra_context.config_loader
        candidates = [*((k, candidate_values(d)) for k, d in space.items()), *((k, [v]) for k, v in fixed.items())]
        for name, values in candidates:
            key = name.lstrip("+~")
            if key in groups:
                options = loader.get_group_options(key)
                found += [
                    f"{key}={v!r}: not an option of group {key} ({', '.join(options)})"
                    for v in values
                    if str(v) not in options
                ]
                continue
            if name.startswith("+"):
                continue
            if OmegaConf.select(task, key, default=_ABSENT) is _ABSENT:
                found.append(f"{key}: not a key of the config (see `python -m mlp_sweep --cfg job`)")
                continue
            for value in values:
                trial_cfg = task.copy()
                OmegaConf.update(trial_cfg, key, value, merge=False, force_add=True)
                found += [f"in the search space, {p}" for p in problems(trial_cfg) if p.startswith(f"{key}=")]
        if found:
            raise UserError("invalid search space, nothing was run:\n  " + "\n  ".join(dict.fromkeys(found)))

    def _study_name(self, adhoc: bool, space: dict[str, BaseDistribution]) -> str:
        named = any(o.startswith("hydra.sweeper.study_name=") for o in self.config.hydra.overrides.hydra)
        if not adhoc or named:
            return self.study_name or "mlp_sweep"
        # an ad-hoc space gets a study of its own: it would conflict with the preset's
        digest = hashlib.sha1(json.dumps({k: repr(v) for k, v in sorted(space.items())}).encode()).hexdigest()
        data = OmegaConf.select(self.config, "data.name", default="data")
        size = OmegaConf.select(self.config, "hydra.runtime.choices.data_size", default="size")
        return f"adhoc-{data}-{size}-{digest[:8]}"

    def _sweep_dir(self, name: str) -> Path:
        """hydra.sweep.dir, resolved with this study's name (it may interpolate the study name)."""
        copy = OmegaConf.create({"hydra": OmegaConf.to_container(self.config.hydra, resolve=False)})
        copy.hydra.sweeper.study_name = name
        path = Path(str(copy.hydra.sweep.dir)).absolute()
        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.sweep.dir = str(path)  # where the launcher creates it
        return path


# -- storage and trials --------------------------------------------------------------------


def check_against_stored(storage: Any, name: str, space: dict[str, BaseDistribution]) -> int:
    """A space must agree with the distributions already stored in the study, or Optuna would fail
    mid-sweep. Returns how many trials the study holds."""
    if storage is None:
        return 0
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    found = {}
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        for param, stored in trial.distributions.items():
            if param in space and param not in found:
                try:
                    check_distribution_compatibility(stored, space[param])
                except ValueError:
                    found[param] = f"{param}: {_show(space[param])} conflicts with {_show(stored)} stored in the study"
    if found:
        raise UserError(
            f"the search space conflicts with study {name!r}, nothing was run:\n  "
            + "\n  ".join(found.values())
            + "\n  keep the stored space, or start another study with hydra.sweeper.study_name=..."
        )
    return len(trials)


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None = None, state: Any = None) -> None:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as err:  # GridSampler stops the study when its grid is used up; the trial is told
        if "Study.stop" not in str(err):
            raise


def _instantiate_sampler(cfg: Any) -> Any:
    return instantiate(cfg, _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"))


def check_enqueued(trials: list[dict[str, Any]], space: dict[str, BaseDistribution]) -> None:
    """Each queued parameter set names keys of the space, with values inside their distributions."""
    found = []
    for i, params in enumerate(trials):
        for key, value in params.items():
            dist = space.get(key)
            if dist is None:
                found.append(f"hydra.sweeper.enqueue_trials[{i}].{key}: not a parameter of the search space")
                continue
            try:
                inside = dist._contains(dist.to_internal_repr(value))
            except (ValueError, TypeError):
                inside = False
            if not inside:
                found.append(f"hydra.sweeper.enqueue_trials[{i}].{key}={value!r} is outside {_show(dist)}")
    if found:
        raise UserError("invalid queued trials, nothing was run:\n  " + "\n  ".join(found))


def counts_toward_target(trial: FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("fail_reason") not in RERUN_REASONS


def fail_stale_trials(study: optuna.Study) -> None:
    """Trials whose worker stopped sending heartbeats become FAIL (`stale`) and are queued once more."""
    storage = study._storage
    if not optuna.storages._heartbeat.is_heartbeat_enabled(storage):
        return
    for trial_id in storage._get_stale_trial_ids(study._study_id):  # the query Optuna's own check uses
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", "stale")
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        trial = storage.get_trial(trial_id)
        log.warning(
            "trial %d was left running by a stopped worker (%s): failed as stale",
            trial.number,
            trial.user_attrs.get("worker", "unknown"),
        )
        requeue(study, trial)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a trial's parameters once more, unless it was itself such a retry."""
    if "retry_of" in trial.user_attrs:
        return
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)


class Heartbeat:
    """Background thread that tells an RDB storage the asked trials are still alive."""

    def __init__(self, storage: Any, interval: int) -> None:
        self.storage, self.interval = storage, interval
        self.enabled = storage is not None and optuna.storages._heartbeat.is_heartbeat_enabled(storage)
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        if self.enabled:
            threading.Thread(target=self._loop, name="heartbeat", daemon=True).start()

    def add(self, trial_id: int) -> None:
        if self.enabled:
            self.storage.record_heartbeat(trial_id)
            with self.lock:
                self.ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.ids.discard(trial_id)

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                ids = list(self.ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as err:  # a busy database must not kill the sweep
                    log.debug("heartbeat for trial id %d failed: %s", trial_id, err)


def read_metrics(job_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def record_metrics(trial: optuna.Trial, metrics: dict[str, Any], job_dir: Path) -> None:
    """Keep what the report needs in the storage itself, so it can be rebuilt without the files."""
    trial.set_user_attr("dir", str(job_dir))
    for key in METRIC_ATTRS:
        if key in metrics:
            trial.set_user_attr(key, metrics[key])
    if metrics.get("history"):
        curves = {k: [row[k] for row in metrics["history"]] for k in ("train_loss", "val_loss", "train_acc", "val_acc")}
        trial.set_user_attr("curves", curves)


# -- small helpers ---------------------------------------------------------------------------


def _parse(lines: list[str], where: str) -> list:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except Exception as err:
        raise UserError(f"cannot parse the {where} sweep: {err}") from None


def candidate_values(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        return [dist.low, dist.high]
    return []


def _discrete(dist: BaseDistribution) -> bool:
    return isinstance(dist, (CategoricalDistribution, IntDistribution)) or getattr(dist, "step", None) is not None


def _show(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice{tuple(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    return f"{kind} interval [{dist.low}, {dist.high}]{' log' if dist.log else ''}"


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


_ABSENT = object()
