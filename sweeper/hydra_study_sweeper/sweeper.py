"""The sweeper: settings and plan first, then each study's run, its end and its summary.

plan (plan.py) ─▶ open the study (study.py) ─▶ run loop (loop.py) ─▶ summary (summary.py)
                                             ╰▶ after an interrupt or a storage failure (cleanup.py)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from . import cleanup, compat, loop, plan, rungs, settings, staged, stock, summary
from .errors import StorageFailure, SweepExit
from .extras import Console, Extras, GpuSlots, Tracking, Watching
from .gpus import Slots, say_slots
from .jobs import Shape
from .launching import Launches, say_limits
from .recovery import Heartbeat
from .signals import exit_code, interrupting
from .space import directions_of_study
from .tracking import SweepTracker
from .watchdog import Watchdog, Watched

log = logging.getLogger(__name__)


class StudySweeper:
    def __init__(self, **raw: Any) -> None:
        self.settings = settings.parse(raw)
        self.configurator = stock.TrialConfigurator(self.settings.custom_search_space, self.settings.params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=Watched(task_function)
        )
        template = OmegaConf.to_container(config.hydra, resolve=False)["sweep"]["dir"]
        self.inputs = plan.Inputs(
            self.settings, config, launcher, hydra_context.config_loader, self.configurator, template
        )

    def sweep(self, arguments: list[str]) -> None:
        settings.check(self.settings)  # here, not at construction: Hydra would wrap it in a traceback
        rungs.parse(self.settings.fidelity, self.settings)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep logs its own lines
        try:
            compat.check()  # every private name of another library the sweeper relies on
        except RuntimeError as err:
            raise SweepExit(2, str(err)) from None
        for name in compat.LAUNCHER_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        if self.settings.stages:
            self.sweep_stages(arguments)
        else:
            self.run(plan.make(self.inputs, arguments))

    def run(self, p: plan.Plan) -> optuna.Study:
        """One study: open it, run it to its target, summarize it."""
        s = self.settings
        study = self.open(p)
        heartbeat = Heartbeat(p.storage, s.heartbeat_interval)
        launches = Launches(self.inputs.launcher)
        on = self.extras(p, launches)
        r = loop.Run(
            settings=s,
            plan=p,
            study=study,
            heartbeat=heartbeat,
            launches=launches,
            shape=Shape(self.inputs, p, study, env=on.job_env, fidelity=rungs.parse(s.fidelity, s)),
            allowed_failures=loop.allowed_failures(s, p, study),
            extras=on,
            capacity=min(s.n_jobs, len(p.gpu_slots)) if p.gpu_slots else s.n_jobs,
        )
        if p.gpu_slots:
            say_slots(p.gpu_slots, s.n_jobs)
        say_limits(s, launches, r.capacity)
        try:
            with interrupting():
                try:
                    loop.run(r)
                except KeyboardInterrupt as err:
                    raise cleanup.after_interrupt(r, exit_code(err), lambda: self.summarize(study, p)) from None
                except Exception as err:  # the storage failing anywhere in the loop ends the run cleanly
                    failure = StorageFailure.of(err, s.storage)
                    if failure is None:
                        raise
                    raise cleanup.after_storage_failure(r, failure) from None
        except SweepExit as err:
            if err.summarize:
                self.summarize(study, p)
            raise
        finally:
            heartbeat.stop()
            r.extras.sweep_ended(interrupted=False)
        self.summarize(study, p)
        return study

    def extras(self, p: plan.Plan, launches: Launches) -> Extras:
        """What plugs into this run's loop: the console's lines, GPU slots, the watchdog (for jobs in
        processes of their own: one in the sweeper's process cannot be stopped), MLflow, TensorBoard."""
        s = self.settings
        on: list = [Console(s.names)]
        if p.gpu_slots:
            on.append(GpuSlots(Slots(list(p.gpu_slots))))
        if launches.threaded:
            on.append(Watching(Watchdog(s.stall_timeout, s.trial_timeout, s.stop_grace, s.start_timeout)))
        if s.mlflow or s.tensorboard:
            on.append(Tracking(SweepTracker(s, p.name), s.names))
        return Extras(on)

    def open(self, p: plan.Plan) -> optuna.Study:
        from .study import open_study

        try:
            return open_study(self.settings, p, self.config)
        except StorageFailure as err:
            raise SweepExit(2, f"{err}; nothing was run") from None

    def sweep_stages(self, arguments: list[str]) -> None:
        """One study per stage; each after the first searches the space its predecessor's best
        trials narrowed. A rerun resumes the unfinished stage; finished ones have nothing to run."""
        stages = staged.parse_stages(self.settings.stages)
        rows, kept, p = [], None, None
        for i, stage in enumerate(stages):
            p = plan.make(self.inputs, arguments, stage=stage, kept=kept)
            log.info("stage %d of %d (%s): study %s", i + 1, len(stages), stage.suffix, p.name)
            study = self.run(p)
            kept = staged.kept_trials(study, stage.keep) if i + 1 < len(stages) else None
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            rows.append(
                {
                    "stage": stage.suffix,
                    "study": p.name,
                    "trials": len(complete),
                    "best": study.best_trial if complete else None,
                    "space": staged.space_attrs(p.space.distributions),
                }
            )
        base = self.settings.study_name or str(self.config.hydra.job.name)
        s = self.settings
        print(staged.report(rows, p.sweep_dir.parent / base, s.names[0], list(s.summary_columns), s.formats))

    def layout(self, study: optuna.Study) -> summary.Layout:
        s = self.settings
        from .wire import COMMAND_ATTR

        return summary.Layout(
            s.names,
            directions_of_study(study),
            list(s.summary_columns),
            s.formats,
            s.summary_hook,
            command=study.user_attrs.get(COMMAND_ATTR),
            rerun_group=s.rerun_group,
            rerun_dir=s.rerun_dir,
            rerun_skip=s.rerun_skip,
        )

    def summarize(self, study: optuna.Study, p: plan.Plan) -> None:
        """optimization_results.yaml and the summary; a failure here is reported, never raised."""
        try:
            write_summary(study, p.sweep_dir, self.layout(study), list(self.settings.summary_columns))
        except OSError as err:
            log.error("could not write the summary into %s: %s", p.sweep_dir, err)


def write_summary(study: optuna.Study, sweep_dir: Path, layout: summary.Layout, columns: list[str]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    results = summary.optimization_results(study, sweep_dir)
    if results:
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    print(summary.write(summary.rows_from_study(study, columns), sweep_dir, layout, study=study))
