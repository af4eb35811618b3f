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

from typing import Any

import optuna
from optuna.pruners import BasePruner

from .compat import trial_id


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


class InRung(BasePruner):
    """The study's pruner asked about one rung of a multi-fidelity trial (hydra_study_sweeper.rungs),
    as if that rung were a study of its own: it sees that rung's steps only, counted from where
    the app counts them (so a warm-up holds in every rung), and as finished trials those that
    finished this rung. Optuna's median, percentile, threshold and patient pruners judge from
    what a study's get_trials and direction say, which is all this view has."""

    def __init__(self, pruner: BasePruner, rung: int, steps: int) -> None:
        self.pruner, self.rung, self.steps = pruner, rung, steps

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        view = RungView(study, self.rung, self.steps)
        return self.pruner.prune(view, view.seen(trial, finished=False))


class RungView:
    """A study's trials as one rung sees them (see InRung)."""

    def __init__(self, study: optuna.Study, rung: int, steps: int) -> None:
        self.study, self.first, self.last = study, rung * steps, rung * steps + steps - 1
        self.direction, self.directions = study.direction, study.directions

    def seen(self, t: optuna.trial.FrozenTrial, finished: bool) -> optuna.trial.FrozenTrial:
        steps = {s - self.first: v for s, v in t.intermediate_values.items() if self.first <= s < self.last}
        state = optuna.trial.TrialState.COMPLETE if finished else t.state
        value = t.intermediate_values[self.last] if finished else None
        return optuna.trial.FrozenTrial(
            number=t.number,
            state=state,
            value=value,
            datetime_start=t.datetime_start,
            datetime_complete=t.datetime_complete if finished else None,
            params=t.params,
            distributions=t.distributions,
            user_attrs=t.user_attrs,
            system_attrs={},
            intermediate_values=steps,
            trial_id=trial_id(t),
        )

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[optuna.trial.FrozenTrial]:
        found = []
        for t in self.study.get_trials(deepcopy=False):
            if not any(self.first <= s <= self.last for s in t.intermediate_values):
                continue
            seen = self.seen(t, finished=self.last in t.intermediate_values)
            if states is None or seen.state in states:
                found.append(seen)
        return found

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.get_trials()


def judges_by_its_own_marks(pruner: BasePruner) -> bool:
    """Successive halving and Hyperband keep per-trial marks of the rungs (epochs) a trial passed,
    which a multi-fidelity trial would carry from one data rung into the next."""
    found = inner(pruner)
    return isinstance(found, (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.HyperbandPruner))
