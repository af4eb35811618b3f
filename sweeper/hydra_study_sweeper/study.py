"""Opening a plan's study: created or loaded, with what defines it recorded once, its queue filled."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict, read_write

from . import space, staged
from .errors import StorageFailure, UserError
from .job import IN_PROCESS, PRUNER_TARGETS
from .plan import Plan
from .rerun import record_command
from .settings import Settings
from .urls import absolute, has_password, mask_overrides, masked
from .wire import STORAGE_ENV

log = logging.getLogger(__name__)


def open_study(settings: Settings, plan: Plan, config: DictConfig) -> optuna.Study:
    try:
        study = optuna.create_study(
            study_name=plan.name,
            storage=plan.storage,
            sampler=plan.make_sampler(0),
            pruner=pruner(settings),
            directions=list(plan.identity.directions),
            load_if_exists=True,
        )
        record(study, settings, plan, config)
        record_command(study)
        for params in plan.queued:  # once per study: a trial with these params is not queued again
            study.enqueue_trial(params, skip_if_exists=True)
    except Exception as err:
        StorageFailure.raise_if_storage(err, settings.storage)
        raise
    IN_PROCESS[plan.name] = (os.getpid(), study)  # jobs in this process report to it directly
    if plan.storage is not None and has_password(settings.storage):
        os.environ[STORAGE_ENV] = absolute(settings.storage)  # inherited by local jobs, never written to files
    mask_secrets_in_jobs(settings, config)
    log.info(
        "study %s in %s: target %d trials, sampler %s",
        plan.name,
        masked(settings.storage),
        plan.n_trials,
        type(study.sampler).__name__,
    )
    log.info("trial directories under %s", plan.sweep_dir)
    if settings.artifact_dir:
        Path(settings.artifact_dir).mkdir(parents=True, exist_ok=True)
    return study


def record(study: optuna.Study, settings: Settings, plan: Plan, config: DictConfig) -> None:
    """What defines the study and what a reviewer wants to know, once; widenings as they happen."""
    if not any(k.startswith(space.FIXED_PREFIX) for k in study.user_attrs):
        attrs = {**plan.identity.attrs(), **context(settings, config)}
        if plan.stage is not None:
            attrs.update(staged.space_attrs(plan.space.distributions))
        for key, value in attrs.items():
            study.set_user_attr(key, value)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    for param, change in plan.widened.items():
        study.set_user_attr(f"widened.{param}", f"{change} (allow_widening, {stamp})"[: space.MAX_ATTR])
        log.warning("study %s: %s widened on purpose: %s", plan.name, param, change)
    if plan.identity.metric_names and not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(plan.identity.metric_names))


def context(settings: Settings, config: DictConfig) -> dict[str, str]:
    """Study user attributes a person reviewing the study wants (each short): the command line,
    the config groups the app names in `context`, the sweeper's version."""
    choices = dict(config.hydra.runtime.choices)
    found = {"command": " ".join(mask_overrides(list(sys.argv[1:])))[: space.MAX_ATTR]}
    for key in settings.context:
        if choices.get(key):
            found[key] = str(choices[key])
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        found["sweeper_version"] = version("hydra-study-sweeper")
    return found


def pruner(settings: Settings) -> Any:
    if settings.pruner is None:
        return optuna.pruners.NopPruner()
    try:
        return instantiate(settings.pruner, _execution_whitelist_=PRUNER_TARGETS)
    except Exception as err:
        raise UserError(f"hydra.sweeper.pruner: {err}") from None


def mask_secrets_in_jobs(settings: Settings, config: DictConfig) -> None:
    """Jobs are composed from this config and its overrides and write them to .hydra/hydra.yaml:
    every URL setting with a password is masked there (jobs get the URLs through the environment)."""
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.overrides.hydra = mask_overrides(list(config.hydra.overrides.hydra))
        config.hydra.overrides.task = mask_overrides(list(config.hydra.overrides.task))
        for key, url in settings.secret_urls.items():
            config.hydra.sweeper[key] = masked(url)  # jobs must agree with it (Hydra checks)
