"""What a job launched by the project's sweeper knows of its trial, whatever the app.

The sweeper passes the study name and trial number to each job through Hydra's
`hydra.job.env_set`, so an app needs no keys of its own; a task reads them with `current_trial()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TRIAL_ENV = "MLP_SWEEP_TRIAL"
STUDY_ENV = "MLP_SWEEP_STUDY"


@dataclass(frozen=True)
class SweepTrial:
    study: str
    number: int


def current_trial() -> SweepTrial | None:
    """The Optuna trial this job runs for, or None outside a sweep of the project's sweeper."""
    number = os.environ.get(TRIAL_ENV)
    if number is None or not number.isdigit():
        return None
    return SweepTrial(study=os.environ.get(STUDY_ENV, ""), number=int(number))


def job_overrides(study: str, number: int) -> tuple[str, str]:
    """The Hydra overrides that hand a job its trial (`++`: adds the keys or replaces them)."""
    quoted = "'" + study.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"++hydra.job.env_set.{STUDY_ENV}={quoted}", f"++hydra.job.env_set.{TRIAL_ENV}={number}"
