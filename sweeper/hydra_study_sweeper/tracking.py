"""MLflow and TensorBoard, both off by default:

    hydra.sweeper.mlflow=true          # each trial an MLflow run, nested under one run per study
    hydra.sweeper.tensorboard=true     # each trial's steps as scalars in TENSORBOARD_DIR/STUDY/TRIAL/

MLflow: the study is an experiment of its name with one parent run (found again by its tags when
the study resumes); each trial a child run, made when its job starts, with the trial's parameters
and the tags `study` and `trial`. Its job logs each reported step (the objective, and whatever
metrics the app passes to its reporter) with that step; when the trial ends the sweeper logs its
final values and recorded attributes, uploads its files (the `artifacts` setting) and closes it:
FINISHED, FAILED, or KILLED for a pruned or interrupted one. `mlflow_uri` is any tracking URI
(default: an SQLite file under outputs/, no server).

TensorBoard: the job writes its steps' scalars into its trial's folder of event files; the sweeper
adds the trial's hyperparameters, its state (COMPLETE, PRUNED, FAIL: a column to filter on) and its
final values (the HParams tab), so `tensorboard --logdir DIR` compares trials. Both are written with
tensorboardX's SummaryWriter (no TensorFlow, no torch).

Neither can fail a trial or the sweep: a tracking error is said once and tracking stops there.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from .urls import absolute, masked, scrub
from .wire import FAIL_ATTR, MLFLOW_RUNS_ENV, MLFLOW_URI_ENV, PRUNED_ATTR, TENSORBOARD_ENV

log = logging.getLogger(__name__)
STUDY_TAG, TRIAL_TAG, KIND_TAG = "study", "trial", "hydra_study_sweeper.run"
OPEN: list[JobTracker] = []  # this job's trackers (a stack has one per member), closed at its end


def hand_to_jobs(uri: str) -> None:
    """The tracking URI reaches jobs through this process's environment (inherited by local jobs,
    passed to Ray's), never through their config files: it may hold a password."""
    os.environ[MLFLOW_URI_ENV] = uri


def numbers(values: dict[str, Any]) -> dict[str, float]:
    return {
        str(k): float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def close_job_trackers() -> None:
    """At a job's end (in its process): every tracker it opened writes out what it holds."""
    while OPEN:
        OPEN.pop().close()


class JobTracker:
    """The job's side: each step's values to the trial's MLflow run and TensorBoard folder."""

    def __init__(self, number: int) -> None:
        self.number, self.client, self.run_id, self.events = number, None, None, None
        runs = dict(p.split("=", 1) for p in os.environ.get(MLFLOW_RUNS_ENV, "").split(",") if "=" in p)
        if os.environ.get(MLFLOW_URI_ENV) and str(number) in runs:
            from mlflow import MlflowClient

            self.client, self.run_id = MlflowClient(tracking_uri=os.environ[MLFLOW_URI_ENV]), runs[str(number)]
        if os.environ.get(TENSORBOARD_ENV):
            from tensorboardX import SummaryWriter

            folder = str(Path(os.environ[TENSORBOARD_ENV]) / str(number))
            self.events = SummaryWriter(folder, filename_suffix=".steps", flush_secs=1)  # on disk within a second
        OPEN.append(self)

    @classmethod
    def of(cls, number: int) -> JobTracker | None:
        if not (os.environ.get(MLFLOW_RUNS_ENV) or os.environ.get(TENSORBOARD_ENV)):
            return None
        try:
            return cls(number)
        except Exception as err:  # noqa: BLE001 - tracking never fails a trial
            said = scrub(str(err), os.environ.get(MLFLOW_URI_ENV))
            log.warning("trial %d: tracking is off for this job: %s: %s", number, type(err).__name__, said)
            return None

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None

    def log(self, step: int, values: dict[str, Any]) -> None:
        found = numbers(values)
        if not found:
            return
        try:
            if self.client is not None:
                from mlflow.entities import Metric

                stamp = int(time.time() * 1000)
                metrics = [Metric(k, v, stamp, step) for k, v in found.items()]
                self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)
            if self.events is not None:
                for tag, value in found.items():
                    self.events.add_scalar(tag, value, step)
        except Exception as err:  # noqa: BLE001 - tracking never fails a trial
            said = scrub(str(err), os.environ.get(MLFLOW_URI_ENV))
            log.warning("trial %d: tracking stopped: %s: %s", self.number, type(err).__name__, said)
            self.client = self.events = None


class SweepTracker:
    """The sweeper's side: the study's parent run, each trial's run, and each trial's end."""

    def __init__(self, settings: Any, study_name: str) -> None:
        self.study = study_name
        self.uri = absolute(settings.mlflow_uri) if settings.mlflow else None
        self.board = Path(settings.tensorboard_dir).absolute() / study_name if settings.tensorboard else None
        self.artifacts = tuple(settings.artifacts)
        self.runs: dict[int, str] = {}
        self.client = self.experiment = self.parent = self.hparams = None
        if self.uri:
            self._guard("cannot open the MLflow tracking store", self._open)
        if self.board is not None:
            log.info("TensorBoard: tensorboard --logdir %s", self.board.parent)

    @property
    def on(self) -> bool:
        return self.client is not None or self.board is not None

    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - tracking never fails the sweep
            said = scrub(str(err), self.uri)
            log.warning("%s (%s: %s): MLflow tracking is off for the rest of this run", what, type(err).__name__, said)
            self.client = None
            return None

    def _open(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        found = client.get_experiment_by_name(self.study)
        if found is not None:
            experiment = found.experiment_id
        else:
            location = None
            if self.uri.startswith("sqlite:///"):  # the files beside the database, not where the sweep started
                location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlruns" / self.study).as_uri()
            experiment = client.create_experiment(self.study, artifact_location=location)
        query = f"tags.`{KIND_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{self.study}'"
        parents = client.search_runs([experiment], query, max_results=1)
        if parents:
            self.parent = parents[0].info.run_id
            client.update_run(self.parent, status="RUNNING")
        else:
            tags = {KIND_TAG: "study", STUDY_TAG: self.study}
            self.parent = client.create_run(experiment, tags=tags, run_name=self.study).info.run_id
        self.client, self.experiment = client, experiment
        hand_to_jobs(self.uri)
        log.info("MLflow: experiment %s in %s, study run %s", self.study, masked(self.uri), self.parent)

    def started(self, number: int, params: dict[str, Any]) -> None:
        """The trial's run, made before its job starts."""
        if self.client is None:
            return
        tags = {"mlflow.parentRunId": self.parent, KIND_TAG: "trial", STUDY_TAG: self.study, TRIAL_TAG: str(number)}

        def make() -> None:
            from mlflow.entities import Param

            run = self.client.create_run(self.experiment, tags=tags, run_name=f"trial {number}")
            shown = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
            self.client.log_batch(run.info.run_id, params=shown, synchronous=True)
            self.runs[number] = run.info.run_id

        self._guard(f"cannot make the MLflow run of trial {number}", make)

    def job_env(self, numbers: list[int]) -> dict[str, str]:
        """What a job of these trials needs in its environment to log its steps."""
        env = {}
        runs = ",".join(f"{n}={self.runs[n]}" for n in numbers if n in self.runs)
        if self.client is not None and runs:
            env = {MLFLOW_RUNS_ENV: runs}  # the URI is in the environment already (hand_to_jobs)
        if self.board is not None:
            env[TENSORBOARD_ENV] = str(self.board)
        return env

    def ended(self, trial: Any, attrs: dict, result: Any, names: list[str], job_dir: Path | None) -> None:
        """The trial's end: final values and recorded attributes, its files, its status."""
        params, state = dict(trial.params), result.state.name
        final = {**numbers(attrs), **dict(zip(names, result.values or [], strict=False))}
        run_id = self.runs.pop(trial.number, None)
        if self.client is not None and run_id is not None:
            self._guard(
                f"cannot finish the MLflow run of trial {trial.number}",
                self._end_run,
                run_id,
                state,
                final,
                attrs,
                job_dir,
            )
        if self.board is not None:
            try:
                if self.hparams is None:  # the study's writer; each trial's summary goes into its folder
                    from tensorboardX import SummaryWriter

                    self.hparams = SummaryWriter(str(self.board), filename_suffix=".study")
                shown = {str(k): v if isinstance(v, (bool, int, float)) else str(v) for k, v in params.items()}
                finals = {f"final/{k}": v for k, v in numbers(final).items()}
                self.hparams.add_hparams({**shown, "state": state}, finals, name=str(trial.number))
            except Exception as err:  # noqa: BLE001 - tracking never fails the sweep
                log.warning("TensorBoard: trial %d not written (%s: %s)", trial.number, type(err).__name__, err)

    def _end_run(self, run_id: str, state: str, final: dict, attrs: dict, job_dir: Path | None) -> None:
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, 0) for k, v in numbers(final).items()]
        tags = [RunTag("state", state)] + [
            RunTag(k, str(attrs[k])[:5000]) for k in (FAIL_ATTR, PRUNED_ATTR) if k in attrs
        ]
        self.client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True)
        for name in self.artifacts if job_dir is not None else ():
            path = job_dir / name
            if path.is_file():
                self.client.log_artifact(
                    run_id, str(path), artifact_path=str(Path(name).parent) if "/" in name else None
                )
        self.client.set_terminated(run_id, {"COMPLETE": "FINISHED", "FAIL": "FAILED"}.get(state, "KILLED"))

    def interrupted(self) -> None:
        """Runs of trials that were in flight: KILLED (their trials are queued again)."""
        for run_id in list(self.runs.values()) if self.client is not None else ():
            self._guard("cannot close an MLflow run", self.client.set_terminated, run_id, "KILLED")
        self.runs.clear()
        self.close()

    def close(self) -> None:
        if self.hparams is not None:
            self.hparams.close()
            self.hparams = None
        if self.client is not None and self.parent is not None:
            self._guard("cannot close the study's MLflow run", self.client.set_terminated, self.parent, "FINISHED")
