"""End-to-end sweeps on digits: presets, resume, failures, bad spaces. Most run in this process
(sweep_here); a first run's warnings and the joblib launcher's processes need a subprocess."""

import json
import subprocess
import sys

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from .conftest import write_archive
from .sweeps import (
    FAST,
    states,
    studies,
    study,
    sweep,
    sweep_here,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.slow


def test_tpe_default_runs_to_target_then_resumes_to_a_larger_one(tmp_path):
    res = sweep(tmp_path, *FAST, "hydra.sweeper.n_trials=3")
    assert res.returncode == 0, res.stderr
    s = study(tmp_path, "tpe-digits-20k")
    assert states(s.trials) == [TrialState.COMPLETE] * 3
    sweep_dir = tmp_path / "outputs" / "sweeps" / "tpe-digits-20k"
    first = {n: (sweep_dir / str(n) / "metrics.json").stat().st_mtime_ns for n in range(3)}
    log = res.stdout + res.stderr
    assert "trial 0 start: optimizer.lr=" in log and "trial 2 end: val_acc=" in log
    assert "progress: 3 / 3 trials done, best val_acc" in log
    # a first run in a fresh folder says nothing it did not cause: no warning about the experiment
    # files' folder a sweep creates, the digits' scaled size once, not once per trial
    assert "Warning" not in res.stderr, res.stderr
    assert log.count("exceeds the 1437 images of digits") == 1

    res = sweep_here(tmp_path, *FAST, "hydra.sweeper.n_trials=5")
    assert res.returncode == 0, res.stderr
    s = study(tmp_path, "tpe-digits-20k")
    assert [t.number for t in s.trials] == [0, 1, 2, 3, 4] and states(s.trials) == [TrialState.COMPLETE] * 5
    assert {n: (sweep_dir / str(n) / "metrics.json").stat().st_mtime_ns for n in range(3)} == first
    assert (sweep_dir / "4" / "metrics.json").is_file()
    assert s.trials[3].params != s.trials[0].params  # a rerun continues the search, no replay

    res = sweep_here(tmp_path, *FAST, "hydra.sweeper.n_trials=5")
    assert res.returncode == 0 and "already has 5 of 5 trials: nothing to run" in res.stdout + res.stderr
    assert len(study(tmp_path, "tpe-digits-20k").trials) == 5

    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = s.best_trial
    assert results["best_trial"] == best.number and results["best_value"] == pytest.approx(best.value)
    assert results["best_dir"] == str(sweep_dir / str(best.number))


def test_summary_files_agree_with_the_storage(tmp_path):
    assert sweep_here(tmp_path, *FAST, "hydra.sweeper.n_trials=5").returncode == 0
    s = study(tmp_path, "tpe-digits-20k")
    sweep_dir = tmp_path / "outputs" / "sweeps" / "tpe-digits-20k"
    import csv

    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert len(rows) == 5
    for row, trial in zip(sorted(rows, key=lambda r: int(r["number"])), s.trials, strict=True):
        assert float(row["val_acc"]) == pytest.approx(trial.value)
        assert float(row["model.hidden_size"]) == trial.params["model.hidden_size"]
        metrics = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert float(row["test_acc"]) == pytest.approx(metrics["test_acc"], abs=1e-5)  # stored rounded
    md = (sweep_dir / "summary.md").read_text()
    assert f"## Best trial: {s.best_trial.number}" in md and "| test |" in md
    for plot in ("history.png", "curves.png", "importances.png"):
        assert (sweep_dir / plot).stat().st_size > 5000


def test_journal_file_storage(tmp_path):
    args = (*FAST, "hydra.sweeper.n_trials=2", "hydra.sweeper.storage=journal:outputs/journal.log")
    assert sweep_here(tmp_path, *args).returncode == 0
    res = sweep_here(tmp_path, *args)
    assert res.returncode == 0 and "already has 2 of 2 trials" in res.stdout + res.stderr
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "outputs" / "journal.log"))
    s = optuna.load_study(study_name="tpe-digits-20k", storage=optuna.storages.JournalStorage(backend))
    assert states(s.trials) == [TrialState.COMPLETE] * 2


def test_report_command_rebuilds_the_summary_from_the_storage(tmp_path):
    assert sweep_here(tmp_path, *FAST, "hydra.sweeper.n_trials=2").returncode == 0
    out = tmp_path / "report"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlp_sweep.report",
            "--storage",
            f"sqlite:///{tmp_path}/outputs/optuna.db",
            "--study",
            "tpe-digits-20k",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "## Best trial" in res.stdout and len((out / "summary.csv").read_text().splitlines()) == 3
    res = subprocess.run(
        [sys.executable, "-m", "mlp_sweep.report", "--storage", f"sqlite:///{tmp_path}/x.db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "no such database file" in res.stderr


def test_random_preset(tmp_path):
    res = sweep_here(tmp_path, *FAST, "hparams_search=random", "hydra.sweeper.n_trials=2")
    assert res.returncode == 0, res.stderr
    assert "sampler RandomSampler" in res.stdout + res.stderr
    assert states(study(tmp_path, "random-digits-20k").trials) == [TrialState.COMPLETE] * 2


def test_grid_preset_runs_six_jobs_with_hydras_basic_sweeper(tmp_path):
    res = sweep_here(tmp_path, *FAST, "hparams_search=grid")
    assert res.returncode == 0, res.stderr
    [sweep_dir] = (tmp_path / "outputs" / "sweeps" / "grid-digits-20k").iterdir()
    assert sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()) == list(range(6))
    import csv

    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert {(r["optimizer.lr"], r["optimizer.weight_decay"]) for r in rows} == {
        (lr, wd) for lr in ("0.001", "0.0001", "1e-05") for wd in ("1e-05", "0.0001")
    }
    assert all(r["state"] == "COMPLETE" and float(r["val_acc"]) > 0 for r in rows)
    assert "## Best trial" in res.stdout and (sweep_dir / "history.png").is_file()
    assert studies(tmp_path) == {}  # the basic sweeper stores nothing in Optuna


def test_wide_preset_runs(tmp_path):
    res = sweep_here(tmp_path, *FAST, "hparams_search=wide", "hydra.sweeper.n_trials=2")
    assert res.returncode == 0, res.stderr
    first, second = study(tmp_path, "wide-digits-full").trials
    recipe = {"model.norm": "layer", "model.hidden_size": 1024, "optimizer.lr": 1e-3, "data.whiten_eps": 1.0}
    assert recipe.items() <= first.params.items()  # the zca_mlp recipe is queued first
    assert sweep_here(tmp_path, *FAST, "hparams_search=wide", "hydra.sweeper.n_trials=3").returncode == 0
    assert [t.params == first.params for t in study(tmp_path, "wide-digits-full").trials] == [True, False, False]


def test_adhoc_command_line_sweep_is_a_grid_of_its_own(tmp_path):
    res = sweep_here(tmp_path, *FAST, "optimizer.lr=1e-3,1e-2", "model.hidden_size=16,32")
    assert res.returncode == 0, res.stderr
    [(name, n)] = studies(tmp_path).items()
    assert name.startswith("adhoc-digits-20k-") and n == 4
    combos = {(t.params["optimizer.lr"], t.params["model.hidden_size"]) for t in study(tmp_path, name).trials}
    assert combos == {(lr, h) for lr in (1e-3, 1e-2) for h in (16, 32)}


def test_failed_and_diverged_trials_are_recorded_and_tolerated(tmp_path):
    write_archive(tmp_path / "cifar-10-python.tar.gz")  # 100 training images: data_size.train=1000 must fail
    env = {"MLP_SWEEP_DATA_DIR": str(tmp_path)}
    common = ("data=cifar10", "data_size.val=10", "trainer.epochs=1", "hydra.sweeper.study_name=f")
    res = sweep_here(tmp_path, *common, "data_size.train=1000,50", env=env)
    assert res.returncode == 0, res.stderr
    trials = {t.params["data_size.train"]: t for t in study(tmp_path, "f").trials}
    assert trials[50].state == TrialState.COMPLETE
    assert trials[1000].state == TrialState.FAIL
    assert "exceeds the 100 training images" in trials[1000].user_attrs["fail_reason"]

    res = sweep_here(tmp_path, *FAST, "optimizer=sgd", "optimizer.lr=1e-2,1e9", "hydra.sweeper.study_name=d")
    assert res.returncode == 0, res.stderr
    trials = {t.params["optimizer.lr"]: t for t in study(tmp_path, "d").trials}
    assert trials[1e9].state == TrialState.FAIL and trials[1e9].user_attrs["fail_reason"] == "diverged"
    assert trials[1e-2].state == TrialState.COMPLETE


def test_too_many_failures_stop_the_sweep(tmp_path):
    res = sweep_here(tmp_path, *FAST, "optimizer=sgd", "optimizer.lr=1e9,1e10", "hydra.sweeper.max_failure_rate=0")
    assert res.returncode == 1
    assert "more than max_failure_rate=0" in res.stdout + res.stderr
    [(name, n)] = studies(tmp_path).items()
    assert n == 1  # stopped after the first failure


@pytest.mark.parametrize(
    "args, message",
    [
        (("model.activation=choice(relu,swish)",), "model.activation='swish' is not allowed"),
        (("model.hiden=16,32",), "model.hiden: not a key of the config"),
        (("optimizer.lr=interval(1e-3,1e-5)",), "optimizer.lr=interval(1e-3,1e-5): `low <= high` must hold"),
        (("optimizer.lr=tag(log,interval(0,1e-3))",), "`low > 0` must hold for `log=True`"),
        (("optimizer.lr=-1e-3,1e-3",), "optimizer.lr=-0.001 is not allowed: use a number > 0"),
        (("augment=choice(none,foo)",), "augment='foo': not an option of group augment"),
        (("hydra.sweeper.n_trials=0",), "hydra.sweeper.n_trials=0 is not allowed"),
        (("hydra.sweeper.max_failure_rate=2",), "hydra.sweeper.max_failure_rate=2.0 is not allowed"),
    ],
)
def test_bad_search_space_is_rejected_before_any_trial(tmp_path, args, message):
    res = sweep_here(tmp_path, *FAST, *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr and "Traceback" not in res.stderr
    assert sum(studies(tmp_path).values()) == 0


def test_a_conflicting_space_cannot_poison_a_study(tmp_path):
    named = (*FAST, "hydra.sweeper.study_name=s")
    assert sweep_here(tmp_path, *named, "model.activation=choice(relu,tanh)").returncode == 0
    res = sweep_here(tmp_path, *named, "model.activation=choice(relu,gelu)")
    assert (
        res.returncode == 2
        and "model.activation: choice('relu', 'tanh') in the study, choice('relu', 'gelu') now" in res.stderr
    )
    res = sweep_here(tmp_path, *named, "model.activation=interval(0,1)")
    assert res.returncode == 2
    assert studies(tmp_path) == {"s": 2}
    res = sweep_here(tmp_path, *named, "model.activation=choice(relu,tanh)")  # the right command still works
    assert res.returncode == 0 and "already has 2 of 2" in res.stdout + res.stderr


def test_a_trial_past_trial_timeout_stops_and_says_so_in_its_metrics(tmp_path):
    args = ("data=digits", "trainer.epochs=500", "trainer.patience=0", "hydra/sweeper/pruner=none")
    res = sweep_here(tmp_path, *args, "hydra.sweeper.trial_timeout=3", "hydra.sweeper.n_trials=1")
    [t] = study(tmp_path, "tpe-digits-20k").trials
    assert t.state.name == "FAIL", res.stdout + res.stderr
    assert t.user_attrs["fail_reason"].startswith("timeout: past hydra.sweeper.trial_timeout=3 s at epoch ")
    metrics = json.loads((tmp_path / "outputs" / "sweeps" / "tpe-digits-20k" / "0" / "metrics.json").read_text())
    assert metrics["status"] == "timeout" and metrics["timeout_reason"] == t.user_attrs["fail_reason"]
    assert (
        0 < metrics["epochs_run"] < 500 and t.user_attrs["last_value"] == t.intermediate_values[metrics["epochs_run"]]
    )


def test_optimizers_preset_searches_each_optimizers_own_settings_only_in_its_trials(tmp_path):
    res = sweep_here(tmp_path, *FAST, "hparams_search=optimizers", "hydra.sweeper.n_trials=6")
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path, "optimizers-digits-20k").trials
    assert {t.params["optimizer"] for t in trials} >= {"sgd"} and len({t.params["optimizer"] for t in trials}) > 1
    for t in trials:
        config = OmegaConf.load(
            tmp_path / "outputs" / "sweeps" / "optimizers-digits-20k" / str(t.number) / ".hydra" / "config.yaml"
        )
        assert ("optimizer.momentum" in t.params) == (t.params["optimizer"] == "sgd")
        assert ("model.dropout" in t.params) == (t.params["model.norm"] != "batch")
        if t.params["optimizer"] == "sgd":
            assert config.optimizer.momentum == t.params["optimizer.momentum"]
        else:
            assert "momentum" not in config.optimizer  # Adam's config never got the key
        if t.params["model.norm"] == "batch":
            assert config.model.dropout == 0.0  # the config's own value


def test_a_conditional_key_is_checked_in_the_config_its_condition_selects(tmp_path):
    preset = tmp_path / "conf" / "hparams_search"
    preset.mkdir(parents=True)
    (preset / "typo.yaml").write_text(
        "# @package _global_\ndefaults:\n  - tpe\nhydra:\n  sweeper:\n    params:\n"
        "      optimizer: choice(adam, sgd)\n      optimizer.momentun: interval(0.5, 0.9)\n"
        "    conditions:\n      optimizer.momentun: optimizer=sgd\n"
    )
    res = sweep_here(tmp_path, *FAST, "--config-dir", str(tmp_path / "conf"), "hparams_search=typo")
    assert res.returncode == 2
    assert "optimizer.momentun: not a key of the config where optimizer=sgd" in res.stderr
    assert studies(tmp_path) == {}


def test_repeats_run_each_trial_with_several_seeds_and_take_their_mean(tmp_path):
    res = sweep_here(
        tmp_path, *FAST, "hydra.sweeper.n_trials=2", "hydra.sweeper.repeats=2", "hydra/sweeper/pruner=none"
    )
    assert res.returncode == 0, res.stderr
    for t in study(tmp_path, "tpe-digits-20k").trials:
        folder = tmp_path / "outputs" / "sweeps" / "tpe-digits-20k" / str(t.number)
        accs = [json.loads((folder / f"seed-{s}" / "metrics.json").read_text())["val_acc"] for s in (0, 1)]
        assert t.value == pytest.approx(sum(accs) / 2)
        assert t.user_attrs["val_acc_seeds"] == pytest.approx(accs)
        config = [yaml.safe_load((folder / f"seed-{s}" / ".hydra" / "config.yaml").read_text()) for s in (0, 1)]
        assert [c["trainer"]["seed"] for c in config] == [0, 1]
    assert "(mean ± std over seeds 0, 1)" in res.stdout


JOBLIB_2 = ("hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2")  # two worker processes, whatever the cores


def test_mlflow_and_tensorboard_get_each_epochs_metrics_of_every_trial(tmp_path):
    import mlflow  # an extra of the dev install: missing, this fails rather than skips
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    on = ("hydra.sweeper.mlflow=true", "hydra.sweeper.tensorboard=true", "hydra/sweeper/pruner=none")
    # the jobs log from joblib's worker processes, the sweeper from its own
    res = sweep(tmp_path, *FAST, "hydra.sweeper.n_trials=2", *on, "hydra/launcher=joblib", *JOBLIB_2)
    assert res.returncode == 0, res.stderr
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/outputs/mlflow.db")
    experiment = client.get_experiment_by_name("tpe-digits-20k")
    trials = study(tmp_path, "tpe-digits-20k").trials
    runs = client.search_runs([experiment.experiment_id], "tags.trial != ''")
    assert sorted(int(run.data.tags["trial"]) for run in runs) == [0, 1]  # one run per trial, none missing
    for run in runs:
        t = trials[int(run.data.tags["trial"])]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]  # the app's own
        assert steps == list(range(1, t.user_attrs["epochs_run"] + 1))
        assert run.data.metrics["test_acc"] == pytest.approx(t.user_attrs["test_acc"])
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"curves.png", "metrics.json"} <= names
        events = EventAccumulator(str(tmp_path / "outputs" / "tensorboard" / "tpe-digits-20k" / str(t.number)))
        events.Reload()
        assert [e.step for e in events.Scalars("val_loss")] == steps
