"""Faults of the app's own, on digits: its objective and direction define the study, a full disk
under its model files (in a subprocess), config errors before torch (in a fresh interpreter)."""

import subprocess
import sys

import pytest
from optuna.trial import TrialState

from .conftest import run_cli
from .sweeps import FAST, states, studies, study, sweep_here

pytestmark = pytest.mark.slow


def test_a_changed_objective_or_direction_is_refused(tmp_path):
    assert sweep_here(tmp_path, *FAST, "hydra.sweeper.n_trials=2").returncode == 0
    for extra in (("optimized_metric=val_loss",), ("optimized_metric=val_loss", "hydra.sweeper.direction=minimize")):
        res = sweep_here(tmp_path, *FAST, "hydra.sweeper.n_trials=3", *extra)
        assert res.returncode == 2, res.stderr
        assert "study 'tpe-digits-20k' in sqlite:///outputs/optuna.db was made by another experiment" in res.stderr
        assert "directions: ['maximize'] in the study, ['minimize'] now" in res.stderr
        assert "metrics: ['val_acc'] in the study, ['val_loss'] now" in res.stderr
        assert "hydra.sweeper.study_name=NAME" in res.stderr
    assert studies(tmp_path) == {"tpe-digits-20k": 2}


def test_a_direction_that_contradicts_the_metric_is_refused(tmp_path):
    res = sweep_here(tmp_path, *FAST, "optimized_metric=val_loss", "hydra.sweeper.direction=maximize")
    assert res.returncode == 2
    assert "hydra.sweeper.direction=['maximize'] contradicts optimized_metric=['val_loss']" in res.stderr
    assert studies(tmp_path) == {}


def test_a_full_disk_fails_trials_with_the_reason_and_stops_cleanly(tmp_path):
    assert sweep_here(tmp_path, *FAST, "hydra.sweeper.n_trials=1").returncode == 0  # the database exists
    common = ("hydra.sweeper.study_name=disk", "model.num_layers=3")
    # 4096-wide layers make a 64 MB model.pt: past the file-size limit, while the database stays below it
    cmd = [sys.executable, "-m", "mlp_sweep", "-m", *FAST, *common, "model.hidden_size=4096,4095,4094"]
    res = subprocess.run(
        ["bash", "-c", 'ulimit -f 20000; exec "$@"', "bash", *cmd],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # torch reports the short write in its own words; every trial fails with them, and the failure
    # policy stops the sweep with a message, not a traceback
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "more than max_failure_rate=0.5 allows" in res.stderr
    trials = study(tmp_path, "disk").trials
    assert states(trials) == [TrialState.FAIL] * 2
    assert all("RuntimeError" in t.user_attrs["fail_reason"] for t in trials)


def test_a_config_error_answers_before_torch_is_imported(tmp_path):
    code = (
        "import sys, mlp_sweep.__main__, mlp_sweep.callbacks, mlp_sweep.checks, hydra_study_sweeper.sweeper; "
        "print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "False", res.stderr


def test_the_slurm_example_is_the_submitit_launcher_with_our_settings(tmp_path):
    res = run_cli("hydra/launcher=slurm", "--cfg", "hydra", "-p", "hydra.launcher", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "SlurmLauncher" in res.stdout and "max_num_timeout: 0" in res.stdout
