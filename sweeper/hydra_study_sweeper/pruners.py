"""Pruners of the sweeper's own, on top of Optuna's.

`Patient` makes any Optuna pruner wait for evidence: at a step (an epoch) it prunes only once
`min_trials` other trials have reported a value at that step. Optuna's median pruner has
`n_min_trials` for the same purpose; successive halving and Hyperband have none, and judge the
first trials at a rung against whatever reached it before them (one trial, or none):

    pruner:
      _target_: hydra_study_sweeper.pruners.Patient
      min_trials: 5
      pruner: {_target_: optuna.pruners.SuccessiveHalvingPruner, min_resource: 4, reduction_factor: 3}

The wrapped pruner is asked at every step all the same, so that successive halving records each
trial's rungs; only its verdict "stop" is held back while the evidence is too thin.
"""

from __future__ import annotations

import optuna
from optuna.pruners import BasePruner


class Patient(BasePruner):
    def __init__(self, pruner: BasePruner, min_trials: int = 5) -> None:
        if not isinstance(pruner, BasePruner):
            raise TypeError(f"pruner={pruner!r} is not an Optuna pruner (give its _target_)")
        if not (isinstance(min_trials, int) and not isinstance(min_trials, bool) and min_trials >= 0):
            raise ValueError(f"min_trials={min_trials!r} is not allowed: use an integer >= 0")
        self.pruner = pruner
        self.min_trials = min_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if not self.pruner.prune(study, trial):
            return False
        step = trial.last_step
        return step is not None and reached(study, step, trial.number) >= self.min_trials


def reached(study: optuna.Study, step: int, number: int) -> int:
    """How many trials other than `number` reported a value at `step`."""
    return sum(t.number != number and step in t.intermediate_values for t in study.get_trials(deepcopy=False))


def inner(pruner: BasePruner) -> BasePruner:
    """The pruner that decides (the one a Patient wraps)."""
    while isinstance(pruner, Patient):
        pruner = pruner.pruner
    return pruner
