"""How a finished job becomes a told trial: what it left (its return, its results file, its
artifacts), what that means (COMPLETE with values, PRUNED, FAIL with a reason), and the one place
where the sweeper tells Optuna."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .wire import DIR_ATTR, FAIL_ATTR, PRUNED_ATTR


@dataclass(frozen=True)
class Outcome:
    state: TrialState
    values: list[float] | None = None
    reason: str = ""

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(TrialState.FAIL, None, one_line(reason))


class JobLost(Exception):
    """A job the sweeper stopped (hung) or whose process died: its trials fail with this reason;
    `again`: they were only caught up in another job's end, and are queued again; `last`: keep each
    trial's last reported value."""

    def __init__(self, reason: str, again: bool = False, last: bool = False) -> None:
        super().__init__(reason)
        self.again, self.last = again, last


def tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> bool:
    """Record the outcome; False when the trial was already finished (by another worker that
    failed it as stale while this one was stopped)."""
    try:
        if outcome.state == TrialState.FAIL:
            trial.set_user_attr(FAIL_ATTR, outcome.reason)
        study.tell(trial, outcome.values, state=outcome.state)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        return False
    except RuntimeError as err:  # GridSampler stops the study when its grid is used up; the trial is told
        if "Study.stop" not in str(err):
            raise
    return True


def of_job(
    ret: Any, results: dict[str, Any], n_values: int, pruned: str | None, timed_out: str | None = None
) -> Outcome:
    """A job's outcome from its return (or the launcher's error), its results file and whether
    its reporter was told to stop (by the pruner, or by trial_timeout)."""
    if timed_out:
        return Outcome.failed(timed_out)
    if isinstance(ret, JobLost):
        return Outcome.failed(str(ret))
    if isinstance(ret, BaseException):
        return Outcome.failed(f"{type(ret).__name__}: {ret}")
    try:
        value = ret.return_value
    except optuna.TrialPruned as err:  # an app that prunes itself
        return Outcome(TrialState.PRUNED, None, pruned or (f"pruned: {err}" if str(err) else "pruned"))
    except Exception as err:  # the task's own exception, re-raised by JobReturn
        return Outcome.failed(f"{type(err).__name__}: {err}")
    status = results.get("status", "ok")
    if pruned or status == "pruned":
        return Outcome(TrialState.PRUNED, None, pruned or str(results.get(PRUNED_ATTR) or "pruned"))
    if status != "ok":
        return Outcome.failed(str(status))
    return of_value(value, n_values)


class Part:
    """One member's share of a stacked job's return, read as a single job's return is."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @property
    def return_value(self) -> Any:
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


def of_stack(ret: Any, numbers: list[int]) -> dict[int, Any]:
    """Each member's part of a stacked job's return: the job's error is every member's; a result
    dict gives each trial number its own (a trial it leaves out fails alone)."""
    if isinstance(ret, BaseException):
        return dict.fromkeys(numbers, ret)
    try:
        value = ret.return_value
    except BaseException:  # noqa: BLE001 - the task's error, raised again for each member
        return dict.fromkeys(numbers, ret)
    if not isinstance(value, Mapping):
        err = TypeError(
            f"the stacked job of trials {numbers} returned {value!r}, not one result per trial number: "
            "does the task train stacks (hydra_study_sweeper.job.stack())? Else set hydra.sweeper.stack=1"
        )
        return dict.fromkeys(numbers, err)
    found = {int(k): v for k, v in value.items()}
    missing = LookupError(f"the stacked job returned no result for this trial (it returned {sorted(found)})")
    return {n: Part(found[n]) if n in found else missing for n in numbers}


def of_value(value: Any, n_values: int) -> Outcome:
    many = not isinstance(value, (str, bytes)) and hasattr(value, "__len__")
    try:
        values = [float(v) for v in value] if many else [float(value)]
    except (TypeError, ValueError):
        return Outcome.failed(f"the task returned {value!r}: not a number" + ("s" if n_values > 1 else ""))
    if len(values) != n_values or (n_values == 1 and many):
        count = len(values) if many else 1
        return Outcome.failed(f"the task returned {count} value(s) for {n_values} direction(s): {value!r}")
    if not all(map(math.isfinite, values)):
        return Outcome.failed(f"non-finite result {value!r}")
    return Outcome(TrialState.COMPLETE, values)


def values_left(results: dict[str, Any], names: tuple[str, ...] | None) -> list[float] | None:
    """The values a job that ended just before an interrupt left in its results file, or None."""
    if results.get("status", "ok") != "ok" or not names:
        return None
    values = [results.get(n) for n in names]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return [float(v) for v in values]
    return None


def read_results(job_dir: Path, name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    try:
        found = json.loads((job_dir / name).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def record(trial: optuna.Trial, results: dict[str, Any], keys: tuple[str, ...], job_dir: Path) -> None:
    """Keep the job's folder and the recorded keys of its results as user attributes (short values:
    the dashboard shows 1024 characters)."""
    trial.set_user_attr(DIR_ATTR, str(job_dir))
    for key in keys:
        if key in results:
            value = results[key]
            trial.set_user_attr(key, round(value, 5) if isinstance(value, float) else value)


def upload(trial: optuna.Trial, job_dir: Path, artifact_dir: str | None, names: tuple[str, ...]) -> None:
    """The trial's files, for the dashboard (optuna-dashboard ... --artifact-dir DIR)."""
    if not artifact_dir or not names:
        return
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    store = FileSystemArtifactStore(artifact_dir)
    for name in names:
        path = job_dir / name
        if path.is_file():
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def one_line(reason: str) -> str:
    return " ".join(reason.split())[:500]
