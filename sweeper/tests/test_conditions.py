"""Conditional parameters written in YAML (hydra.sweeper.conditions): parsed, checked, suggested
parents first, absent where their conditions fail."""

import pytest
from hydra_study_sweeper.conditions import Condition, order, parse
from hydra_study_sweeper.errors import UserError
from optuna.distributions import CategoricalDistribution, FloatDistribution

from .helpers import run_here, study

SEARCHED = {
    "optimizer": CategoricalDistribution(["adam", "sgd"]),
    "optimizer.momentum": FloatDistribution(0.5, 0.9),
    "model.norm": CategoricalDistribution(["none", "batch", "layer"]),
    "model.dropout": FloatDistribution(0.0, 0.3),
}


def test_conditions_hold_for_the_values_they_name_or_all_but_those():
    found = parse({"optimizer.momentum": "optimizer=sgd", "model.dropout": ["model.norm!=batch"]}, SEARCHED, {})
    [momentum], [dropout] = found["optimizer.momentum"], found["model.dropout"]
    assert momentum == Condition("optimizer", ("sgd",), False)
    assert momentum.holds({"optimizer": "sgd"}) and not momentum.holds({"optimizer": "adam"})
    assert dropout.holds({"model.norm": "layer"}) and not dropout.holds({"model.norm": "batch"})
    assert not dropout.holds({})  # the parent is itself absent: so is the child
    assert parse({"model.dropout": "model.norm=none,layer"}, SEARCHED, {})["model.dropout"][0].values == (
        "none",
        "layer",
    )


def test_parents_are_suggested_before_their_children():
    conds = {"a": (Condition("b", ("1",), False),), "b": (Condition("c", ("x",), False),)}
    assert order(["a", "b", "c", "d"], conds) == ["c", "b", "a", "d"]


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ({"optimizer.momentun": "optimizer=sgd"}, "optimizer.momentun is not a parameter of the search space"),
        ({"optimizer.momentum": "optimizer"}, "is not a condition: write KEY=VALUE, KEY=V1,V2 or KEY!=VALUE"),
        ({"optimizer.momentum": "optimizer.momentum=0.5"}, "a parameter cannot depend on itself"),
        ({"optimizer.momentum": "trainer.seed=1"}, "trainer.seed is neither searched nor fixed in this sweep"),
        ({"optimizer": "model.norm=none", "model.norm": "optimizer=sgd"}, "depend on each other in a circle"),
    ],
)
def test_bad_conditions_name_the_key_and_what_is_allowed(conditions, message):
    with pytest.raises(UserError, match="invalid conditions, nothing was run") as err:
        parse(conditions, SEARCHED, {})
    assert message in str(err.value)


def test_a_parameter_is_suggested_only_where_its_condition_holds(tmp_path):
    # x exists only when y is not 0; there the job keeps the config's x = 1.0, so its value is 1
    res = run_here(tmp_path, "hydra.sweeper.n_trials=8", '+hydra.sweeper.conditions.x="y!=0"')
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path).trials
    assert {t.params["y"] for t in trials} == {-1, 0, 1}
    for t in trials:
        assert ("x" in t.params) == (t.params["y"] != 0)
        expected = t.params["x"] ** 2 + t.params["y"] ** 2 if "x" in t.params else 1.0
        assert t.value == pytest.approx(expected)


@pytest.mark.slow  # a sweep in a process of its own (signals, a second worker, joblib)
def test_a_grid_cannot_walk_conditional_parameters(tmp_path):
    res = run_here(tmp_path, "x=-1,1", "y=0,1", '+hydra.sweeper.conditions.x="y=1"')
    assert res.returncode == 2
    assert "conditional parameters (hydra.sweeper.conditions) cannot be walked as a grid" in res.stderr
    res = run_here(
        tmp_path, "hydra/sweeper/sampler=grid", "x=choice(-1,1)", "y=choice(0,1)", '+hydra.sweeper.conditions.x="y=1"'
    )
    assert res.returncode == 2, res.stdout
    assert "cannot be walked" in res.stderr
