"""Conditional parameters: a parameter of the search space that exists only when others take
certain values, written beside `params` in YAML:

    params:
      optimizer: choice(adam, sgd)
      optimizer.momentum: interval(0.8, 0.99)
      model.norm: choice(none, layer, batch)
      model.dropout: interval(0.0, 0.3)
    conditions:
      optimizer.momentum: optimizer=sgd            # only when optimizer is sgd
      model.dropout: model.norm!=batch             # any value but batch (several: a=x,y / a!=x,y)

A list of conditions must all hold. A trial whose conditions fail for a parameter never suggests it
(Optuna's define-by-run: the parameter is absent from the trial) and its job gets no override for
it, so the key keeps the config's value. Parameters are suggested parents first; a condition on a
parameter that is itself inactive fails. A condition may also name a key fixed on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from .errors import UserError
from .settings import as_list


@dataclass(frozen=True)
class Condition:
    key: str
    values: tuple[str, ...]
    negated: bool  # != : any value but these

    def holds(self, known: dict[str, Any]) -> bool:
        if self.key not in known:  # the parent is inactive in this trial
            return False
        return (shown(known[self.key]) in self.values) != self.negated

    def __str__(self) -> str:
        return f"{self.key}{'!=' if self.negated else '='}{','.join(self.values)}"


def shown(value: Any) -> str:
    """A value as written in a condition (choice values arrive as their YAML types)."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse(raw: Any, searched: dict[str, Any], fixed: dict[str, Any]) -> dict[str, tuple[Condition, ...]]:
    """Each conditional parameter's conditions, checked: the parameter is searched, each condition
    names a searched or fixed key and values, and no parameter depends on itself."""
    found, bad = {}, []
    for name, text in (raw or {}).items():
        name = str(name)
        where = f"hydra.sweeper.conditions.{name}"
        if name not in searched:
            bad.append(f"{where}: {name} is not a parameter of the search space ({', '.join(searched)})")
            continue
        conds = []
        for line in as_list(text):
            cond = _one(str(line))
            if cond is None:
                bad.append(f"{where}={line!r} is not a condition: write KEY=VALUE, KEY=V1,V2 or KEY!=VALUE")
            elif cond.key == name:
                bad.append(f"{where}={line!r}: a parameter cannot depend on itself")
            elif cond.key not in searched and cond.key not in fixed:
                bad.append(f"{where}={line!r}: {cond.key} is neither searched nor fixed in this sweep")
            else:
                conds.append(cond)
        found[name] = tuple(conds)
    if not bad:
        try:
            order(list(searched), found)
        except UserError as err:
            bad.append(str(err))
    if bad:
        raise UserError("invalid conditions, nothing was run:\n  " + "\n  ".join(bad))
    return found


def _one(line: str) -> Condition | None:
    negated = "!=" in line
    key, sep, values = line.partition("!=" if negated else "=")
    key, items = key.strip(), tuple(v.strip() for v in values.split(",") if v.strip())
    if not sep or not key or not items:
        return None
    return Condition(key, items, negated)


def order(names: list[str], conditions: dict[str, tuple[Condition, ...]]) -> list[str]:
    """The parameters, each after those its conditions name (otherwise as written)."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = " -> ".join((*path, name))
            raise UserError(f"hydra.sweeper.conditions: the parameters depend on each other in a circle ({cycle})")
        visiting.add(name)
        for cond in conditions.get(name, ()):
            if cond.key in names:
                visit(cond.key, (*path, name))
        visiting.discard(name)
        done.append(name)

    for name in names:
        visit(name, ())
    return done


def active(trial: Any, distributions: dict[str, Any], fixed: dict[str, Any], conditions: dict) -> dict[str, Any]:
    """The distributions this trial has (suggested here, parents first), in that order."""
    if not conditions:
        return distributions
    known = {k: _typed(v) for k, v in fixed.items()}
    out = {}
    for name in order(list(distributions), conditions):
        if all(c.holds(known) for c in conditions.get(name, ())):
            out[name] = distributions[name]
            known[name] = suggest(trial, name, distributions[name])
    return out


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """A value of `distribution` from the trial, through Optuna's public suggest calls (each makes
    the same distribution again from its bounds)."""
    d = distribution
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)


def _typed(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value
