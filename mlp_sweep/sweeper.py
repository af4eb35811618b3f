"""The project's Optuna sweeper, usable by any Hydra app whose task returns a number or a sequence
of numbers: the stock plugin's keys, search-space grammar and samplers, plus a study-wide trial
target, trial-numbered job folders, failure reasons, one study per experiment, Ctrl-C / SIGTERM and
stale-trial recovery, and a search space checked before the first trial is asked.

This module is the loop: ask, launch, tell, interrupt, finish. The search space lives in
space.py, recovery (heartbeats, stale trials, retries) in recovery.py, storages in storage.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from . import recovery, space, staged
from .errors import SweepExit, UserError
from .job import IN_PROCESS, PENDING_SIGNALS, STORAGE_ENV, Terminated, job_overrides, raise_pending_interrupt
from .launching import Launches
from .recovery import Heartbeat, counts_toward_target, fail_trial
from .report import rows_from_study, write_report
from .storage import absolute, has_password, mask_overrides, masked, open_storage

log = logging.getLogger(__name__)

METRIC_ATTRS = (  # what the project's task writes to metrics.json, kept with each trial
    "train_acc",
    "val_acc",
    "test_acc",
    "val_loss",
    "best_epoch",
    "epochs_run",
    "status",
    "seconds",
    "params",
    "epochs_planned",
    "val_acc_tta",
    "test_acc_tta",
)
LAUNCHER_LOGGERS = (  # "Launching 1 jobs locally" and each job's overrides: the sweeper's lines say more
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_ray_launcher._core",
    "hydra_plugins.hydra_ray_launcher._launcher_util",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)
ARTIFACTS = ("curves.png", "metrics.json", ".hydra/config.yaml")  # uploaded for each finished trial


@dataclass(frozen=True)
class Plan:
    """Everything a sweep decided before its first trial."""

    name: str
    storage: Any
    space: space.Space
    identity: space.Identity
    n_trials: int
    sweep_dir: Path
    make_sampler: Callable[[int], Any]  # seed offset -> sampler
    queued: tuple[dict, ...]
    train_images: int | None = None  # a stage's data size, for the staged report


class StudySweeper(OptunaSweeperImpl):
    def __init__(
        self,
        sampler: Any,
        heartbeat_interval: int = 10,
        grace_period: int | None = None,
        enqueue_trials: Any = (),
        metric_names: Any = None,
        config_check: str | None = None,
        identity_ignore: Any = (),
        pruner: Any = None,
        artifact_dir: str | None = None,
        stages: Any = None,
        **stock: Any,
    ) -> None:
        self.stages = list(stages or ())
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.artifact_dir = artifact_dir
        self.requested_failure_rate = stock["max_failure_rate"]  # checked in sweep(), with a clear message
        stock["max_failure_rate"] = min(1.0, max(0.0, float(stock["max_failure_rate"])))
        super().__init__(sampler=None, **stock)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.enqueue_trials = [dict(p) for p in enqueue_trials or ()]
        self.metric_names = space.as_list(metric_names) or None
        self.config_check = config_check
        self.identity_ignore = list(identity_ignore or ())
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.in_flight: dict[int, optuna.Trial] = {}
        self.started: dict[int, float] = {}
        self.launches: Launches | None = None
        self.sweep_dir_template: str | None = None

    # -- the sweep ---------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep logs its own lines
        for name in LAUNCHER_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        if self.stages:
            self._sweep_stages(arguments)
            return
        self._sweep(self._plan(arguments))

    def _sweep(self, plan: Plan) -> optuna.Study:
        study = self._open(plan)
        heartbeat = Heartbeat(plan.storage, self.heartbeat_interval)
        try:
            with _signals_interrupt():
                self._run(study, plan, heartbeat)
        finally:
            heartbeat.stop()
        self._finish(study, plan)
        return study

    def _sweep_stages(self, arguments: list[str]) -> None:
        """One study per stage; each after the first searches the space its predecessor's best
        trials narrowed. A rerun resumes the unfinished stage; finished ones have nothing to run."""
        stages = staged.parse_stages(self.stages)
        base = self.study_name or str(self.config.hydra.job.name)
        rows, kept = [], None
        for i, stage in enumerate(stages):
            plan = self._plan(arguments, stage=stage, kept=kept, name=f"{base}-{stage.suffix}")
            log.info("stage %d of %d (%s): study %s", i + 1, len(stages), stage.suffix, plan.name)
            study = self._sweep(plan)
            kept = staged.kept_trials(study, stage.keep) if i + 1 < len(stages) else None
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            rows.append(
                {
                    "stage": stage.suffix,
                    "study": plan.name,
                    "trials": len(complete),
                    "best": study.best_trial if complete else None,
                    "space": staged.space_attrs(plan.space.distributions),
                    "train_images": plan.train_images,
                }
            )
        print(staged.report(rows, plan.sweep_dir.parent / base))

    def _plan(self, arguments: list[str], stage: Any = None, kept: Any = None, name: str | None = None) -> Plan:
        space.check_settings(self.n_trials, self.n_jobs, self.requested_failure_rate, self.heartbeat_interval)
        directions = self._get_directions()
        if self.metric_names and len(self.metric_names) != len(directions):
            raise UserError(
                f"hydra.sweeper.metric_names={self.metric_names} names {len(self.metric_names)} values but "
                f"hydra.sweeper.direction={directions} has {len(directions)}: give one direction per metric"
            )
        self._process_searchspace_config()
        sp = space.parse(self._parse_sweeper_params_config(), arguments)
        loader = self.hydra_context.config_loader
        config, queue = self.config, self.enqueue_trials
        if stage is not None:  # the stage's overrides go to every trial; its config defines the study
            dists = sp.distributions if kept is None else staged.narrow(sp.distributions, kept)
            sp = space.Space(dists, {**sp.fixed, **stage.overrides}, sp.fixed_overrides, sp.adhoc, None)
            parsed = space.parse_overrides(arguments, "command line")
            overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
            overrides += [f"{k}={v}" for k, v in stage.overrides.items()]
            config = loader.load_sweep_config(self.config, overrides)
            queue = self.enqueue_trials if kept is None else [dict(t.params) for t in kept]
        check = instantiate({"_target_": self.config_check, "_partial_": True}) if self.config_check else None
        space.check_values(sp, config, loader.get_group_options, check)
        queued = [] if sp.adhoc else space.check_enqueued(queue, sp)
        identity = space.identity(config, sp, directions, self.metric_names, self.identity_ignore)
        name = name or self._study_name(sp, identity)
        storage = open_storage(self.storage, self.heartbeat_interval, self.grace_period)
        if storage is None and type(self.launcher).__name__ != "BasicLauncher":
            raise UserError(
                f"hydra.sweeper.storage=null keeps the study in this process, where the jobs of "
                f"{type(self.launcher).__name__} cannot report to it: give a storage, e.g. "
                "hydra.sweeper.storage=sqlite:///outputs/optuna.db"
            )
        stored = _load(name, storage)
        space.check_against_stored(stored, sp)
        space.check_identity(stored, identity, masked(self.storage))
        n_trials = stage.n_trials if stage is not None else self.n_trials
        named = any(o.startswith("hydra.sweeper.n_trials=") for o in self.config.hydra.overrides.hydra)
        grid = sp.grid
        if grid is None and _is_grid_config(self.sampler_cfg):  # the stock grid sampler: the grid is the space
            grid = {k: self._to_grid_sampler_choices(d) for k, d in sp.distributions.items()}
        if grid is not None:
            size = math.prod(len(v) for v in grid.values())
            n_trials = min(n_trials, size) if (named or sp.grid is None) else size
        return Plan(
            name=name,
            storage=storage,
            space=sp,
            identity=identity,
            n_trials=n_trials,
            sweep_dir=self._sweep_dir(name),
            make_sampler=self._sampler_factory(grid),
            queued=tuple(queued),
            train_images=OmegaConf.select(config, "data_size.train", default=None),
        )

    def _open(self, plan: Plan) -> optuna.Study:
        study = optuna.create_study(
            study_name=plan.name,
            storage=plan.storage,
            sampler=plan.make_sampler(0),
            pruner=self._pruner(),
            directions=list(plan.identity.directions),
            load_if_exists=True,
        )
        if plan.storage is None:
            IN_PROCESS[plan.name] = study  # jobs in this process report to it directly
        elif has_password(self.storage):
            os.environ[STORAGE_ENV] = absolute(self.storage)  # inherited by local jobs, never written to files
        if not any(k.startswith(space.FIXED_PREFIX) for k in study.user_attrs):
            context = {**plan.identity.attrs(), **self._context()}
            if self.stages:
                context.update(staged.space_attrs(plan.space.distributions))
            for key, value in context.items():
                study.set_user_attr(key, value)
        if plan.identity.metric_names and not study.metric_names:
            with _quiet_experimental():
                study.set_metric_names(list(plan.identity.metric_names))
        self._mask_storage_in_jobs()
        log.info(
            "study %s in %s: target %d trials, sampler %s",
            plan.name,
            masked(self.storage),
            plan.n_trials,
            type(study.sampler).__name__,
        )
        log.info("trial directories under %s", plan.sweep_dir)
        for params in plan.queued:  # once per study: a trial with these params is not queued again
            study.enqueue_trial(params, skip_if_exists=True)
        if self.artifact_dir:
            Path(self.artifact_dir).mkdir(parents=True, exist_ok=True)
        return study

    def _pruner(self) -> Any:
        if self.pruner_cfg is None:
            return optuna.pruners.NopPruner()
        return instantiate(self.pruner_cfg, _execution_whitelist_=("optuna.pruners.*",))

    def _job_channel(self) -> tuple[str | None, str | None]:
        """What each job gets to report its epochs: the storage URL (unless it holds a password, which
        travels in the environment instead) and the pruner's config."""
        storage = None if has_password(self.storage) else absolute(self.storage)
        pruner = None
        if self.pruner_cfg is not None:
            pruner = json.dumps(OmegaConf.to_container(self.pruner_cfg, resolve=True))
        return storage, pruner

    def _context(self) -> dict[str, str]:
        """Study user attributes a person reviewing the study wants (each short)."""
        choices = dict(self.config.hydra.runtime.choices)
        found = {"command": " ".join(mask_overrides(list(sys.argv[1:])))[: space.MAX_ATTR]}
        for key in ("hparams_search", "data", "data_size"):
            if choices.get(key):
                found[key] = str(choices[key])
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            found["mlp_sweep_version"] = version("mlp-sweep")
        return found

    def _run(self, study: optuna.Study, plan: Plan, heartbeat: Heartbeat) -> None:
        """Keep up to n_jobs trials of this worker running until the study has its target: a trial
        that ends frees its place at once. Other workers' running trials count toward the target;
        when they alone remain, wait for them (their heartbeats tell whether they are alive)."""
        ran, failed, announced, stopping = 0, [], False, False
        left = plan.n_trials - sum(map(counts_toward_target, study.get_trials(deepcopy=False)))
        allowed = math.floor(self.max_failure_rate * max(1, left))
        launches = self.launches = Launches(self.launcher)
        scanned, done, todo, others, stored = 0.0, 0, 0, [], 0
        try:
            while True:
                raise_pending_interrupt()
                if scanned == 0.0:
                    recovery.fail_stale_trials(study, plan.storage)
                    trials = study.get_trials(deepcopy=False)
                    done = sum(map(counts_toward_target, trials))
                    others = [t for t in _running(trials) if t.number not in self.in_flight]
                    todo = plan.n_trials - done - len(others) - len(self.in_flight)
                    scanned, stored = time.monotonic(), len(trials)
                if todo > 0 and not stopping and len(self.in_flight) < self.n_jobs:
                    if self._start(study, plan, heartbeat, launches, stored):
                        todo, stored = todo - 1, stored + 1
                    else:  # the study filled up since the last scan: look again at who runs what
                        scanned = 0.0
                    continue
                if self.in_flight:
                    ended = launches.wait(timeout=1.0)
                    for number, ret in ended:
                        trial = self.in_flight[number]
                        reason = self._tell(study, trial, ret, plan, heartbeat)
                        ran += 1
                        if reason:
                            failed.append(reason)
                    if ended:
                        self._progress(study, plan)
                        stopping = stopping or len(failed) > allowed
                        scanned = 0.0
                    elif time.monotonic() - scanned > max(5, self.heartbeat_interval):
                        scanned = 0.0  # other workers' trials may have gone stale
                    continue
                if stopping:
                    self._finish(study, plan)
                    raise SweepExit(
                        1,
                        f"{len(failed)} of the {ran} trials run failed (last: {failed[-1]}): more than "
                        f"max_failure_rate={self.max_failure_rate} allows ({allowed} of this run's trials)",
                    )
                if others and plan.storage is not None:
                    if not announced:
                        numbers = ", ".join(str(t.number) for t in others)
                        log.info("waiting for %d trial(s) running in another process: %s", len(others), numbers)
                        if not heartbeat.enabled:
                            log.info(
                                "%s keeps no heartbeats: a worker that died on another machine leaves its "
                                "trials running, and this wait ends only with Ctrl-C (the study keeps all)",
                                masked(self.storage),
                            )
                        announced = True
                    time.sleep(min(self.heartbeat_interval or 5, 5))
                    scanned = 0.0
                    continue
                if ran == 0:
                    self._nothing_to_run(study, plan, done)
                return
        except KeyboardInterrupt as err:
            self._interrupted(study, plan, heartbeat, 143 if isinstance(err, Terminated) else 130)

    def _nothing_to_run(self, study: optuna.Study, plan: Plan, done: int) -> None:
        trials = study.get_trials(deepcopy=False)
        if trials and not any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials):
            reasons = sorted({t.user_attrs.get("fail_reason", "?") for t in trials if t.state == TrialState.FAIL})
            raise SweepExit(
                1,
                f"study {plan.name} already has {done} of {plan.n_trials} trials, and all of them failed "
                f"({'; '.join(reasons)[:300]}): nothing to run. Fix the cause and start another study "
                "(hydra.sweeper.study_name=NAME), or raise hydra.sweeper.n_trials to try more",
            )
        log.info("study %s already has %d of %d trials: nothing to run", plan.name, done, plan.n_trials)

    def _start(self, study: optuna.Study, plan: Plan, heartbeat: Heartbeat, launches: Launches, stored: int) -> bool:
        """Ask one trial and launch its job; False when the study reached its target first."""
        # Each draw is seeded with the sampler's seed offset by the trial's number: a rerun continues
        # the search, workers sharing the study draw apart, one seeded worker alone is reproducible.
        # Relative samplers draw inside ask() (the number is guessed from the trials stored),
        # independent ones when the parameters are suggested (the number is known).
        study.sampler = plan.make_sampler(stored)
        trial = study.ask()
        self.in_flight[trial.number] = trial
        heartbeat.add(trial)
        trial.set_user_attr("worker", self.worker)
        if self._surplus(study, plan, heartbeat, trial):
            return False
        study.sampler = plan.make_sampler(trial.number)
        try:
            [overrides] = self._configure_trials(
                [trial], plan.space.distributions, plan.space.fixed, list(plan.space.fixed_overrides)
            )
        except Exception as err:  # a custom search space that raises, overlapping keys
            self._forget(trial, heartbeat)
            fail_trial(study, trial, f"{type(err).__name__}: {err}")
            raise UserError(f"cannot build the trial's parameters: {err}") from None
        job = (
            *overrides,
            *job_overrides(study.study_name, trial.number, *self._job_channel()),
            f"hydra.sweep.dir={plan.sweep_dir}",
            f"hydra.sweep.subdir={trial.number}",
        )
        log.info("trial %d start: %s", trial.number, _params(trial.params))
        self.started[trial.number] = time.perf_counter()
        launches.start(trial.number, job)
        return True

    def _surplus(self, study: optuna.Study, plan: Plan, heartbeat: Heartbeat, trial: optuna.Trial) -> bool:
        """Workers sharing a study may ask at the same instant for its last place. Trial numbers are
        handed out in order, so the first n_trials trials that count (done, running or queued) run
        and a later one gives way: it ends FAIL (`surplus`, not counted) before any job starts, and
        parameters it took from the queue go back to it."""
        trials = study.get_trials(deepcopy=False)
        live = {t.number for t in _running(trials)} | {t.number for t in trials if t.state == TrialState.WAITING}
        ahead = sum(t.number < trial.number and (counts_toward_target(t) or t.number in live) for t in trials)
        if ahead < plan.n_trials:
            return False
        self._forget(trial, heartbeat)
        queued = recovery.queued_params(study, trial)
        attrs = {k: v for k, v in trial.user_attrs.items() if k != "worker"}
        if fail_trial(study, trial, recovery.SURPLUS) and queued:
            study.enqueue_trial(queued, user_attrs=attrs, skip_if_exists=False)
        log.info("trial %d not run: the study reached its target of %d trials", trial.number, plan.n_trials)
        return True

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any, plan: Plan, heartbeat: Heartbeat) -> str | None:
        """Record one finished job; returns the failure reason, or None."""
        job_dir = plan.sweep_dir / str(trial.number)
        seconds = time.perf_counter() - self.started.get(trial.number, time.perf_counter())
        self._forget(trial, heartbeat)
        try:
            metrics = read_metrics(job_dir)
            record_metrics(trial, metrics, job_dir)
            state, values, reason = self._outcome(ret, metrics)
            self._upload(trial, job_dir)
            if state == TrialState.FAIL:
                if not fail_trial(study, trial, reason):
                    raise optuna.exceptions.UpdateFinishedTrialError(reason)
                log.warning("trial %d failed after %.1f s: %s", trial.number, seconds, reason)
                return reason
            if state == TrialState.PRUNED:
                _tell(study, trial, None, TrialState.PRUNED)
                log.info("trial %d %s (%s)", trial.number, reason, _params(trial.params))
                return None
            _tell(study, trial, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning(
                "trial %d was finished by another worker while this one was stopped (failed as stale; "
                "its retry runs): this result is not recorded",
                trial.number,
            )
            return None
        except Exception as err:  # the storage or the file system failed around this one trial
            reason = _one_line(f"{type(err).__name__}: {err}")
            fail_trial(study, trial, reason)
            log.warning("trial %d failed: %s", trial.number, reason)
            return reason
        shown = ", ".join(f"{n}={v:.4g}" for n, v in zip(self._names(), values, strict=True))
        log.info(
            "trial %d end: %s in %.3g s (%s)",
            trial.number,
            shown,
            metrics.get("seconds", seconds),
            _params(trial.params),
        )
        return None

    def _outcome(self, ret: Any, metrics: dict[str, Any]) -> tuple[TrialState, list[float] | None, str]:
        """How a job ended: COMPLETE with its values, PRUNED, or FAIL with the reason."""
        if isinstance(ret, BaseException):
            return TrialState.FAIL, None, _one_line(f"{type(ret).__name__}: {ret}")
        try:
            value = ret.return_value
        except optuna.TrialPruned as err:  # an app that prunes itself
            return TrialState.PRUNED, None, f"pruned: {err}" if str(err) else "pruned"
        except Exception as err:  # the task's own exception, re-raised by JobReturn
            return TrialState.FAIL, None, _one_line(f"{type(err).__name__}: {err}")
        status = metrics.get("status", "ok")
        if status == "pruned":
            return TrialState.PRUNED, None, str(metrics.get("pruned_reason") or "pruned")
        if status != "ok":
            return TrialState.FAIL, None, str(status)
        n = len(self._get_directions())
        many = not isinstance(value, (str, bytes)) and hasattr(value, "__len__")
        try:
            values = [float(v) for v in value] if many else [float(value)]
        except (TypeError, ValueError):
            return TrialState.FAIL, None, f"the task returned {value!r}: not a number" + ("s" if n > 1 else "")
        if len(values) != n or (n == 1 and many):
            count = len(values) if many else 1
            return TrialState.FAIL, None, f"the task returned {count} value(s) for {n} direction(s): {value!r}"
        if not all(map(math.isfinite, values)):
            return TrialState.FAIL, None, f"non-finite result {value!r}"
        return TrialState.COMPLETE, values, ""

    def _upload(self, trial: optuna.Trial, job_dir: Path) -> None:
        """The trial's files, for the dashboard (optuna-dashboard ... --artifact-dir DIR)."""
        if not self.artifact_dir:
            return
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        store = FileSystemArtifactStore(self.artifact_dir)
        for name in ARTIFACTS:
            path = job_dir / name
            if path.is_file():
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)

    def _interrupted(self, study: optuna.Study, plan: Plan, heartbeat: Heartbeat, code: int) -> None:
        """Ctrl-C or SIGTERM: keep what finished, fail and requeue the rest, then summarize. The
        storage part cannot be interrupted; a second signal during the summary ends the process."""
        with _signals_during_interrupt(code) as again:
            for trial in list(self.in_flight.values()):
                self._forget(trial, heartbeat)
                job_dir = plan.sweep_dir / str(trial.number)
                metrics = read_metrics(job_dir)
                with contextlib.suppress(Exception):
                    record_metrics(trial, metrics, job_dir)
                values = self._values_from_metrics(metrics)
                if values is not None:
                    with contextlib.suppress(Exception):
                        _tell(study, trial, values)
                        continue
                if fail_trial(study, trial, "interrupted"):
                    queued = recovery.requeue(study, trial)
                    log.warning(
                        "trial %d interrupted: recorded as failed%s",
                        trial.number,
                        " and queued again" if queued else "",
                    )
            if self.launches is not None:
                self.launches.abandon()
            log.warning("sweep interrupted; run the same command again to resume")
            if not again.came:
                again.end_at_once = True
                self._finish(study, plan)
        raise SweepExit(code)

    def _values_from_metrics(self, metrics: dict[str, Any]) -> list[float] | None:
        """A job that finished just before an interrupt left its metrics (the project's own task)."""
        if metrics.get("status") != "ok" or not self.metric_names:
            return None
        values = [metrics.get(n) for n in self.metric_names]
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return [float(v) for v in values]
        return None

    def _forget(self, trial: optuna.Trial, heartbeat: Heartbeat) -> None:
        heartbeat.remove(trial)
        self.in_flight.pop(trial.number, None)
        self.started.pop(trial.number, None)

    def _progress(self, study: optuna.Study, plan: Plan) -> None:
        trials = study.get_trials(deepcopy=False)
        done = sum(map(counts_toward_target, trials))
        failed = sum(t.state == TrialState.FAIL and counts_toward_target(t) for t in trials)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        notes = [f"{n} {what}" for n, what in ((pruned, "pruned"), (failed, "failed")) if n]
        note = f" ({', '.join(notes)})" if notes else ""
        best = ""
        if complete and len(study.directions) == 1:
            b = study.best_trial
            best = f", best {self._names()[0]} {b.value:.4g} (trial {b.number})"
        elif complete:
            best = f", Pareto front of {len(study.best_trials)} trial(s)"
        log.info("progress: %d / %d trials done%s%s", done, plan.n_trials, note, best)

    def _finish(self, study: optuna.Study, plan: Plan) -> None:
        """optimization_results.yaml and the summary; a failure here is reported, never raised."""
        try:
            plan.sweep_dir.mkdir(parents=True, exist_ok=True)
            results = optimization_results(study, plan.sweep_dir)
            if results:
                OmegaConf.save(OmegaConf.create(results), plan.sweep_dir / "optimization_results.yaml")
            rows = rows_from_study(study)
            print(write_report(rows, plan.sweep_dir, study=study, metrics=self._names(), directions=_dirs(study)))
        except OSError as err:
            log.error("could not write the summary into %s: %s", plan.sweep_dir, err)

    def _names(self) -> list[str]:
        n = len(self._get_directions())
        return self.metric_names or (["value"] if n == 1 else [f"value_{i}" for i in range(n)])

    # -- names, folders, samplers ------------------------------------------------------------

    def _study_name(self, sp: space.Space, identity: space.Identity) -> str:
        named = any(o.startswith("hydra.sweeper.study_name=") for o in self.config.hydra.overrides.hydra)
        if not sp.adhoc or named:
            return self.study_name or str(self.config.hydra.job.name)
        # an ad-hoc sweep gets a study of its own, one per space and fixed configuration
        digest = space.Identity((), None, {"space": sp.digest(), "fixed": identity.digest()}).digest()
        data = OmegaConf.select(self.config, "data.name", default=None) or self.config.hydra.job.name
        size = OmegaConf.select(self.config, "hydra.runtime.choices.data_size", default=None)
        return "-".join(str(p) for p in ("adhoc", data, size, digest[:8]) if p)

    def _sweep_dir(self, name: str) -> Path:
        """hydra.sweep.dir, resolved with this study's name (it may interpolate the study name)."""
        hydra = OmegaConf.to_container(self.config.hydra, resolve=False)
        if self.sweep_dir_template is None:  # kept unresolved: each stage of a staged search resolves it anew
            self.sweep_dir_template = hydra["sweep"]["dir"]
        copy = OmegaConf.create({"hydra": hydra})
        copy.hydra.sweep.dir = self.sweep_dir_template
        copy.hydra.sweeper.study_name = name
        path = Path(str(copy.hydra.sweep.dir)).absolute()
        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.sweep.dir = str(path)  # where the launcher creates it
        return path

    def _mask_storage_in_jobs(self) -> None:
        """Jobs are composed from these overrides and write them to .hydra/hydra.yaml: no password."""
        if not has_password(self.storage):
            return
        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.overrides.hydra = mask_overrides(list(self.config.hydra.overrides.hydra))
            self.config.hydra.sweeper.storage = masked(self.storage)  # jobs must agree with it (Hydra checks)

    def _sampler_factory(self, grid: dict[str, list] | None) -> Callable[[int], Any]:
        cfg = self.sampler_cfg
        seed = cfg.get("seed") if cfg is not None else None

        if grid is not None:  # one instance: its grid ids index an order shuffled by the seed
            sampler = optuna.samplers.GridSampler(grid, seed=seed)
            return lambda _offset: sampler

        def make(offset: int) -> Any:
            return _instantiate_sampler(cfg if seed is None else OmegaConf.merge(cfg, {"seed": int(seed) + offset}))

        return make


# -- trials and their files ----------------------------------------------------------------


def optimization_results(study: optuna.Study, sweep_dir: Path) -> dict[str, Any] | None:
    """The stock plugin's results file: the best trial, or the Pareto front as `solutions`."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    if len(study.directions) > 1:
        front = [
            {"number": t.number, "params": t.params, "values": t.values, "dir": t.user_attrs.get("dir", "")}
            for t in study.best_trials
        ]
        return {"name": "optuna", "study_name": study.study_name, "solutions": front}
    best = study.best_trial
    return {
        "name": "optuna",
        "study_name": study.study_name,
        "best_trial": best.number,
        "best_dir": best.user_attrs.get("dir", str(sweep_dir / str(best.number))),
        "best_params": best.params,
        "best_value": best.value,
    }


def _tell(study: optuna.Study, trial: optuna.Trial, values: list[float] | None, state: Any = None) -> None:
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as err:  # GridSampler stops the study when its grid is used up; the trial is told
        if "Study.stop" not in str(err):
            raise


def _load(name: str, storage: Any) -> optuna.Study | None:
    if storage is None:
        return None
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _dirs(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def _is_grid_config(cfg: Any) -> bool:
    return cfg is not None and str(cfg.get("_target_", "")).endswith("GridSampler")


def _instantiate_sampler(cfg: Any) -> Any:
    return instantiate(cfg, _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"))


def read_metrics(job_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def record_metrics(trial: optuna.Trial, metrics: dict[str, Any], job_dir: Path) -> None:
    """Keep what the report needs in the storage itself (short values: the dashboard shows 1024
    characters); per-epoch curves are the intermediate values and the metrics.json artifact."""
    trial.set_user_attr("dir", str(job_dir))
    for key in METRIC_ATTRS:
        if key in metrics:
            value = metrics[key]
            trial.set_user_attr(key, round(value, 5) if isinstance(value, float) else value)


def _one_line(reason: str) -> str:
    return " ".join(reason.split())[:500]


def _running(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials a sweeper worker runs (a trial RUNNING without a worker was left by another tool)."""
    return [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# -- signals ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, SIGTERM Terminated; each is also recorded, to be raised again
    where Python swallowed it (see raise_pending_interrupt)."""

    def interrupt(signum: int, _frame: Any) -> None:
        PENDING_SIGNALS.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def unraisable(info: Any) -> None:
        # the interrupt raised inside a garbage-collector callback: already recorded, raised again
        # at the next check; Python would print it as "Exception ignored ... Traceback"
        if not (isinstance(info.exc_value, KeyboardInterrupt) and PENDING_SIGNALS):
            previous_hook(info)

    PENDING_SIGNALS.clear()
    try:
        previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        PENDING_SIGNALS.clear()  # the sweep is over: nothing in this process may raise them again
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            if signal.getsignal(s) is interrupt:  # not after an interrupt, which leaves them ignored
                signal.signal(s, handler)


class _AfterInterrupt:
    """What a further Ctrl-C or SIGTERM does once the sweep is being interrupted: while the storage is
    put in order, it is only noted (the summary is then skipped); during the summary, it ends the
    process at once."""

    def __init__(self, code: int) -> None:
        self.code, self.came, self.end_at_once = code, [], False

    def __call__(self, signum: int, _frame: Any) -> None:
        self.came.append(signum)
        if self.end_at_once:
            print("interrupted again: summary skipped; the study is saved", file=sys.stderr, flush=True)
            os._exit(self.code)


@contextlib.contextmanager
def _signals_during_interrupt(code: int) -> Iterator[_AfterInterrupt]:
    """One handler from the first interrupt to the exit, never the sweep's own again: a signal in
    a gap between two handlers would raise KeyboardInterrupt where nothing catches it. At the end
    signals are ignored: the storage is consistent, the exit is under way."""
    handler = _AfterInterrupt(code)
    PENDING_SIGNALS.clear()  # acted on now: no job or loop may raise it again
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield handler
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):
                signal.signal(s, signal.SIG_IGN)


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
