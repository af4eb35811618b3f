"""Per-epoch values in Optuna and pruning, on digits: reported from the job's own process whatever
the launcher (joblib's and submitit's in subprocesses, the basic launcher's in this one), pruned
trials recorded as such, artifacts uploaded."""

import json

import pytest
from optuna.trial import TrialState

from .sweeps import study, sweep, sweep_here

pytestmark = pytest.mark.slow

PRUNE_EARLY = (
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.pruner.n_warmup_steps=1",
)


def test_intermediate_values_are_the_epochs_of_metrics_json(tmp_path):
    res = sweep_here(
        tmp_path, "data=digits", "trainer.epochs=4", "hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=none"
    )
    assert res.returncode == 0, res.stderr
    s = study(tmp_path, "tpe-digits-20k")
    assert s.metric_names == ["val_acc"]
    for t in s.trials:
        history = json.loads(
            (tmp_path / "outputs" / "sweeps" / s.study_name / str(t.number) / "metrics.json").read_text()
        )
        assert t.intermediate_values == {row["epoch"]: pytest.approx(row["val_acc"]) for row in history["history"]}
        assert all(len(str(v)) <= 1024 for v in t.user_attrs.values())
    attrs = s.user_attrs
    assert attrs["hparams_search"] == "tpe" and attrs["data"] == "digits" and attrs["data_size"] == "20k"
    assert "hydra.sweeper.n_trials=2" in attrs["command"] and attrs["sweeper_version"]
    log = res.stdout + res.stderr
    assert "epoch   1/4" not in log  # the console shows trials; the epochs stay in each trial's log
    assert "epoch   1/4" in (tmp_path / "outputs" / "sweeps" / s.study_name / "0" / "mlp_sweep.log").read_text()
    res = sweep_here(tmp_path, "data=digits", "trainer.epochs=4", "hydra.sweeper.n_trials=3", "verbose=true")
    assert res.returncode == 0 and "epoch   1/4" in res.stdout + res.stderr


def test_a_hopeless_trial_is_pruned_and_counts_toward_the_target(tmp_path):
    args = ("data=digits", "trainer.epochs=8", "trainer.patience=0", *PRUNE_EARLY, "hydra.sweeper.study_name=p")
    res = sweep_here(tmp_path, *args, "optimizer.lr=choice(1e-3,1e-8)", "model.hidden_size=32,64,128")
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path, "p").trials
    assert len(trials) == 6
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.params["optimizer.lr"] == 1e-8]
    assert pruned and any(t.state == TrialState.COMPLETE for t in trials if t.params["optimizer.lr"] == 1e-3)
    t = pruned[0]
    job = tmp_path / "outputs" / "sweeps" / "p" / str(t.number)
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "pruned" and metrics["epochs_run"] < 8 and (job / "model.pt").is_file()
    assert t.value == pytest.approx(t.intermediate_values[max(t.intermediate_values)])  # its last reported value
    assert f"pruned by MedianPruner at epoch {metrics['epochs_run']}: val_acc" in metrics["pruned_reason"]
    log = res.stdout + res.stderr
    assert f"trial {t.number} pruned by MedianPruner at epoch" in log and "pruned)" in log
    md = (tmp_path / "outputs" / "sweeps" / "p" / "summary.md").read_text()
    assert "| pruned |" in md and "pruning saved" in md
    assert list((tmp_path / "outputs" / "artifacts").glob("*"))  # the trials' files were uploaded


def test_pruning_through_the_joblib_launcher(tmp_path):
    args = ("data=digits", "trainer.epochs=6", "trainer.patience=0", *PRUNE_EARLY, "hydra.sweeper.study_name=j")
    res = sweep(
        tmp_path,
        *args,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "optimizer.lr=choice(1e-3,1e-8)",
        "model.hidden_size=32,64,128",
    )
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path, "j").trials
    assert all(len(t.intermediate_values) == (t.user_attrs["epochs_run"]) for t in trials)
    assert any(t.state == TrialState.PRUNED for t in trials)


def test_epochs_are_reported_from_submitit_jobs(tmp_path):
    args = ("data=digits", "trainer.epochs=6", "trainer.patience=0", *PRUNE_EARLY, "hydra.sweeper.study_name=s")
    res = sweep(
        tmp_path,
        *args,
        "hydra/launcher=submitit_local",
        "optimizer.lr=choice(1e-3,1e-8)",  # two trials: each a submitit job, a process of its own
    )
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path, "s").trials
    assert len(trials) == 2
    assert all(len(t.intermediate_values) == t.user_attrs["epochs_run"] > 0 for t in trials)


def test_an_in_memory_study_with_an_out_of_process_launcher_is_refused(tmp_path):
    res = sweep(
        tmp_path, "data=digits", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.storage=null"
    )
    assert res.returncode == 2 and "cannot report to it: give a storage" in res.stderr
    res = sweep_here(
        tmp_path, "data=digits", "trainer.epochs=3", "hydra.sweeper.storage=null", "hydra.sweeper.n_trials=2"
    )
    assert res.returncode == 0, res.stderr  # in-process jobs report to it directly
