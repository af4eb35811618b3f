"""MLflow and TensorBoard: each trial a run under its study's, each step with its step number; read
back with MLflow's own client and TensorBoard's own event reader."""

import os

import pytest
from optuna.trial import TrialState

from .helpers import run_here, study

if os.environ.get("CI") == "true":  # installed by the dev extras: under CI a missing one fails, never skips
    import mlflow
    from tensorboard.backend.event_processing import event_accumulator
else:
    mlflow = pytest.importorskip("mlflow")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TRACKED = ("steps=3", "results=true", "hydra.sweeper.artifacts=[results.json]")


def runs_of(tmp_path, name="sphere"):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/outputs/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("hydra_study_sweeper.run") == "study"]
    children = {
        int(r.data.tags["trial"]): r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    return client, parent, children


def test_each_trial_is_an_mlflow_run_nested_under_its_studys_run(tmp_path):
    res = run_here(tmp_path, "hydra.sweeper.n_trials=3", *TRACKED, "hydra.sweeper.mlflow=true")
    assert res.returncode == 0, res.stderr
    client, parent, children = runs_of(tmp_path)
    trials = study(tmp_path).trials
    assert sorted(children) == [0, 1, 2] and parent.data.tags["study"] == "sphere"
    for number, run in children.items():
        t = trials[number]
        assert run.data.tags["study"] == "sphere" and run.info.run_name == f"trial {number}"
        assert run.data.params == {"x": str(t.params["x"]), "y": str(t.params["y"]), "steps": "3", "results": "True"}
        history = client.get_metric_history(run.info.run_id, "loss")  # logged by the job, step by step
        assert {m.step: m.value for m in history} == pytest.approx(t.intermediate_values)
        assert run.data.metrics["value"] == pytest.approx(t.value)  # the final value, by the sweeper
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "COMPLETE"
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["results.json"]
    # the same command with a higher target resumes the study: the same parent run, one more child
    res = run_here(tmp_path, "hydra.sweeper.n_trials=4", *TRACKED, "hydra.sweeper.mlflow=true")
    assert res.returncode == 0, res.stderr
    _, again, children = runs_of(tmp_path)
    assert again.info.run_id == parent.info.run_id and sorted(children) == [0, 1, 2, 3]


def test_a_pruned_trials_run_is_killed_with_the_reason(tmp_path):
    args = (
        "steps=6",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.n_trials=8",
    )
    res = run_here(tmp_path, *args, "hydra.sweeper.mlflow=true")
    assert res.returncode == 0, res.stderr
    _, _, children = runs_of(tmp_path)
    pruned = [t for t in study(tmp_path).trials if t.state == TrialState.PRUNED]
    assert pruned
    for t in pruned:
        run = children[t.number]
        assert run.info.status == "KILLED" and run.data.tags["state"] == "PRUNED"
        assert run.data.tags["pruned_reason"].startswith("pruned by MedianPruner")


def test_each_trials_steps_and_hyperparameters_are_tensorboard_events(tmp_path):
    res = run_here(tmp_path, "hydra.sweeper.n_trials=2", *TRACKED, "hydra.sweeper.tensorboard=true")
    assert res.returncode == 0, res.stderr
    from tensorboard.plugins.hparams import plugin_data_pb2

    for t in study(tmp_path).trials:
        events = event_accumulator.EventAccumulator(
            str(tmp_path / "outputs" / "tensorboard" / "sphere" / str(t.number))
        )
        events.Reload()
        assert {e.step: e.value for e in events.Scalars("loss")} == pytest.approx(t.intermediate_values)
        assert events.Scalars("final/value")[0].value == pytest.approx(t.value)
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        assert start.hparams["x"].number_value == pytest.approx(t.params["x"])
        assert start.hparams["state"].string_value == t.state.name
    assert "tensorboard --logdir" in res.stdout
