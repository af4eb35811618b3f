"""What the project's own sweeps optimize: the direction follows optimized_metric, and a list of
metrics makes a multi-objective sweep with a Pareto front."""

import json

import pytest
import yaml
from optuna.study import StudyDirection

from .sweeps import FAST, study, sweep_here

pytestmark = pytest.mark.slow


def test_val_loss_is_minimized_and_every_file_names_the_same_best_trial(tmp_path):
    res = sweep_here(tmp_path, *FAST, "optimized_metric=val_loss", "hydra.sweeper.n_trials=4")
    assert res.returncode == 0, res.stderr
    s = study(tmp_path, "tpe-digits-20k")
    assert s.directions == [StudyDirection.MINIMIZE] and s.metric_names == ["val_loss"]
    best = min(s.trials, key=lambda t: t.value)
    assert s.best_trial.number == best.number
    sweep_dir = tmp_path / "outputs" / "sweeps" / "tpe-digits-20k"
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_trial"] == best.number
    assert f"## Best trial: {best.number}" in (sweep_dir / "summary.md").read_text()
    metrics = json.loads((sweep_dir / str(best.number) / "metrics.json").read_text())
    assert metrics["val_loss"] == pytest.approx(best.value)


def test_a_list_of_metrics_is_a_multi_objective_sweep(tmp_path):
    res = sweep_here(tmp_path, *FAST, "optimized_metric=[val_acc,params]", "hydra.sweeper.n_trials=5")
    assert res.returncode == 0, res.stderr
    s = study(tmp_path, "tpe-digits-20k")
    assert s.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert s.metric_names == ["val_acc", "params"]
    sweep_dir = tmp_path / "outputs" / "sweeps" / "tpe-digits-20k"
    for t in s.trials:
        metrics = json.loads((sweep_dir / str(t.number) / "metrics.json").read_text())
        assert t.values == pytest.approx([metrics["val_acc"], metrics["params"]])
        h, n = t.params["model.hidden_size"], t.params["model.num_layers"]
        assert metrics["params"] == 64 * h + h + (n - 2) * (h * h + h) + h * 10 + 10  # digits: 64 inputs, 10 classes
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert {x["number"] for x in results["solutions"]} == {t.number for t in s.best_trials}
    md = (sweep_dir / "summary.md").read_text()
    assert "## Pareto front" in md and "maximize val_acc, minimize params" in md
    assert (sweep_dir / "pareto.png").stat().st_size > 5000


@pytest.mark.parametrize(
    "value, message",
    [
        ("[val_acc,test_acc]", "optimized_metric=['val_acc', 'test_acc'] is not allowed"),
        ("[val_acc,val_acc]", "optimized_metric=['val_acc', 'val_acc'] is not allowed"),
    ],
)
def test_a_bad_metric_list_is_refused(tmp_path, value, message):
    res = sweep_here(tmp_path, *FAST, f"optimized_metric={value}")
    assert res.returncode == 2 and message in res.stderr
