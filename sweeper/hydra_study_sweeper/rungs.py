"""Multi-fidelity search (`fidelity`): asynchronous successive halving over any config key.

A trial is a configuration. It runs first at its bracket's lowest rung: a job with the fidelity key
overridden by that rung's value (`data_size.train=1000`). When the job ends, its value is stored as
the trial's intermediate value at the rung's last step, and the trial is promoted to the next rung
at once when that value is in the best 1/eta of all the values stored at this rung so far (its own
included, rounded up: the first to finish a rung always goes on); otherwise it ends PRUNED there.
No trial waits for a rung to fill, and no worker waits for another: the storage holds every
trial's rung values, so workers that share a study decide against the same numbers, each for the
trials it runs. A configuration that reaches the top rung and finishes there is COMPLETE with its
top-rung value; a PRUNED one keeps its highest rung's value (Optuna gives a pruned trial its last
intermediate value), and Optuna's TPE ranks pruned trials by how far they got, then by that value,
so configurations that did well on little data count for something in the next proposals.

Inside a rung, the app's reports (epochs) are stored from step rung * RUNG_STEPS on, so an epoch
pruner compares a trial only with others at the same rung and epoch. With `brackets: B` (Hyperband
style), trial N starts at rung N mod B and is compared only with trials that started where it did.

A retry (after Ctrl-C, SIGKILL or a lost worker) takes over the rungs its trial had finished and
goes on at the next one: no finished rung runs again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from .errors import UserError
from .job import instantiate_pruner
from .outcome import Outcome
from .pruners import judges_by_its_own_marks
from .recovery import stored_trial
from .wire import PRUNED_ATTR, RETRY_ATTR, RUNG_ENV, RUNG_STEPS, RUNGS_ATTR

log = logging.getLogger(__name__)


def result_step(rung: int) -> int:
    """The trial's step that holds its value at `rung`."""
    return rung * RUNG_STEPS + RUNG_STEPS - 1


def parse(raw: Any, settings: Any) -> Fidelity | None:
    """`hydra.sweeper.fidelity` checked: {key, rungs: [...]} or {key, min, max}, with eta and brackets."""
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise UserError(f"hydra.sweeper.fidelity={raw!r} is not allowed: use {{key: KEY, rungs: [...], eta: 3}}")
    bad, unknown = [], sorted(set(raw) - {"key", "rungs", "min", "max", "eta", "brackets"})
    if unknown:
        bad.append(f"hydra.sweeper.fidelity has unknown keys {unknown}: use key, rungs (or min and max), eta, brackets")
    key, eta, brackets = raw.get("key"), raw.get("eta", 3), raw.get("brackets", 1)
    if not (isinstance(key, str) and key):
        bad.append(
            f"hydra.sweeper.fidelity.key={key!r} is not allowed: use the config key to grow, e.g. data_size.train"
        )
    if not (isinstance(eta, int) and not isinstance(eta, bool) and eta >= 2):
        bad.append(f"hydra.sweeper.fidelity.eta={eta!r} is not allowed: use an integer >= 2")
        eta = 3
    rungs = raw.get("rungs")
    if rungs is None and "min" in raw and "max" in raw:
        rungs = geometric(raw["min"], raw["max"], eta)
    if not (isinstance(rungs, (list, tuple)) and len(rungs) >= 2 and all(_number(v) for v in rungs)) or list(
        rungs
    ) != sorted(set(rungs)):
        bad.append(
            f"hydra.sweeper.fidelity.rungs={rungs!r} is not allowed: use two or more increasing numbers "
            "(or min and max with eta)"
        )
        rungs = [0, 1]
    if not (isinstance(brackets, int) and not isinstance(brackets, bool) and 1 <= brackets <= len(rungs) - 1):
        bad.append(f"hydra.sweeper.fidelity.brackets={brackets!r} is not allowed: use 1 to {len(rungs) - 1}")
    for name, value in (("repeats", settings.repeats), ("stack", settings.stack)):
        if value != 1:
            bad.append(f"hydra.sweeper.{name}={value!r} cannot be combined with hydra.sweeper.fidelity: use {name}=1")
    if settings.pruner is not None and judges_by_its_own_marks(instantiate_pruner(settings.pruner_json)):
        bad.append(
            "hydra.sweeper.pruner: successive halving and Hyperband mark the epochs a trial passed, which a "
            "trial would carry from one rung into the next; inside fidelity rungs use median, percentile or none"
        )
    if settings.stages:
        bad.append("hydra.sweeper.stages cannot be combined with hydra.sweeper.fidelity: use one or the other")
    if len(settings.directions) != 1:
        bad.append("hydra.sweeper.fidelity needs a single objective: Optuna keeps no rung values for several")
    if bad:
        raise UserError("invalid sweep settings:\n  " + "\n  ".join(bad))
    return Fidelity(key, tuple(rungs), eta, brackets, settings.directions[0] == "maximize")


def geometric(low: Any, high: Any, eta: int) -> list:
    """min, min * eta, min * eta^2 ... below max, then max (whole numbers stay whole)."""
    if not (_number(low) and _number(high) and 0 < low < high):
        return []
    rungs, value = [], low
    while value < high:
        rungs.append(value)
        value = value * eta
    whole = isinstance(low, int) and isinstance(high, int)
    return [int(v) if whole else v for v in rungs] + [high]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Fidelity:
    key: str
    rungs: tuple
    eta: int
    brackets: int
    maximize: bool
    overrides: dict[int, tuple[str, ...]] = field(default_factory=dict)  # trial number -> its parameters
    began: dict[Any, float] = field(default_factory=dict)  # job key -> when it was made

    def first(self, study: optuna.Study, trial: optuna.Trial, overrides: tuple[str, ...]) -> int:
        """The rung a fresh trial starts at: its bracket's lowest, or for a retry, the one after the
        last its earlier trial finished (whose rung values it takes over)."""
        self.overrides[trial.number] = overrides
        done = taken_over(study, trial)
        if done:
            trial.set_user_attr(RUNGS_ATTR, done)
            for d in done:
                trial.report(d["value"], result_step(d["rung"]))
            return min(done[-1]["rung"] + 1, len(self.rungs) - 1)
        return trial.number % self.brackets

    def job(self, number: int, rung: int) -> tuple[Any, tuple[str, ...], str, dict[str, str]]:
        """A rung's job: its key, the trial's parameters with the fidelity key set, its folder (in
        the trial's) and what its environment adds."""
        key = (number, f"rung-{rung}")
        self.began[key] = time.monotonic()
        own = tuple(o for o in self.overrides[number] if o.split("=", 1)[0].lstrip("+~") != self.key)
        return key, (*own, f"++{self.key}={self.rungs[rung]}"), f"{number}/rung-{rung}", {RUNG_ENV: str(rung)}

    def ended(self, study: optuna.Study, trial: optuna.Trial, key: Any, result: Outcome, seconds: Any) -> Any:
        """A rung's job ended: the next rung to run (an int), or the trial's outcome."""
        rung = int(key[1].removeprefix("rung-"))
        began = self.began.pop(key, None)
        if result.state != TrialState.COMPLETE:
            return result
        [value] = result.values
        if not isinstance(seconds, (int, float)):
            seconds = None if began is None else round(time.monotonic() - began, 3)
        done = [*stored_trial(study, trial).user_attrs.get(RUNGS_ATTR, []), {"rung": rung, "at": self.rungs[rung]}]
        done[-1].update(value=value, seconds=seconds)
        trial.set_user_attr(RUNGS_ATTR, done)  # first: other workers compare it within its bracket
        trial.report(value, result_step(rung))
        if rung == len(self.rungs) - 1:
            return result
        rank, finished = standing(study, trial.number, rung, done[0]["rung"], value, self.maximize)
        done[-1].update(rank=rank + 1, of=finished, ended=time.time())  # what the decision saw
        trial.set_user_attr(RUNGS_ATTR, done)
        if rank * self.eta < finished:
            log.info(
                "trial %d goes on to rung %d (%s=%s): %.4g is number %d of the %d that finished rung %d",
                *(trial.number, rung + 1, self.key, self.rungs[rung + 1], value, rank + 1, finished, rung),
            )
            return rung + 1
        reason = (
            f"stopped at rung {rung} ({self.key}={self.rungs[rung]}): {value:.4g} is number {rank + 1} of the "
            f"{finished} configurations that finished it, not in the best 1/{self.eta}"
        )
        trial.set_user_attr(PRUNED_ATTR, reason)
        return replace(result, state=TrialState.PRUNED, values=None, reason=reason)

    def forget(self, number: int) -> None:
        self.overrides.pop(number, None)


def standing(study: optuna.Study, number: int, rung: int, start: int, value: float, maximize: bool) -> tuple[int, int]:
    """How many configurations of this bracket did better at `rung` than `value`, and how many
    finished it (this one included)."""
    step, better, finished = result_step(rung), 0, 1
    for t in study.get_trials(deepcopy=False):
        if t.number == number or step not in t.intermediate_values or start_rung(t) != start:
            continue
        finished += 1
        other = t.intermediate_values[step]
        better += other > value if maximize else other < value
    return better, finished


def start_rung(t: optuna.trial.FrozenTrial) -> int | None:
    done = t.user_attrs.get(RUNGS_ATTR)
    return done[0]["rung"] if done else None


def taken_over(study: optuna.Study, trial: optuna.Trial) -> list[dict]:
    """The rungs a retry's earlier trials finished (the furthest of them), [] for a fresh trial."""
    first = trial.user_attrs.get(RETRY_ATTR)
    if first is None:
        return []
    chain = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number < trial.number and (t.number == first or t.user_attrs.get(RETRY_ATTR) == first)
    ]
    return max((t.user_attrs.get(RUNGS_ATTR, []) for t in chain), key=len, default=[])
