"""hydra.sweeper.stack=K: up to K trials a job, each still an ordinary trial of the study."""

from __future__ import annotations

import signal

import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from .helpers import BEAT, LONG, finish, run_here, start, study, sweep, wait_running


def test_a_stack_is_one_job_whose_members_are_ordinary_trials(tmp_path):
    res = run_here(tmp_path, "hydra.sweeper.stack=3", "hydra.sweeper.n_trials=7", "results=true")
    assert res.returncode == 0, res.stderr
    jobs = [line for line in res.stdout.splitlines() if line.startswith("stack of trials")]
    assert jobs == ["stack of trials [0, 1, 2]", "stack of trials [3, 4, 5]", "stack of trials [6]"]
    assert "trials 0, 1, 2 train together (stack of 3)" in res.stdout
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 7
    for t in trials:
        assert t.value == t.params["x"] ** 2 + t.params["y"] ** 2  # its own parameters, not the stack's first
        folder = tmp_path / "sweeps" / "sphere" / str(t.number)
        assert OmegaConf.load(folder / ".hydra" / "config.yaml").x == t.params["x"]
        assert (folder / "results.json").is_file()
        assert t.user_attrs["dir"] == str(folder)


def test_a_member_fails_alone(tmp_path):
    res = run_here(tmp_path, "hydra.sweeper.stack=3", "hydra.sweeper.n_trials=3", "mode=nan_first")
    assert res.returncode == 0, res.stderr
    t0, t1, t2 = study(tmp_path).trials
    assert t0.state == TrialState.FAIL and "non-finite" in t0.user_attrs["fail_reason"]
    assert t1.state == t2.state == TrialState.COMPLETE


def test_a_task_that_ignores_stacks_is_told_what_to_do(tmp_path):
    res = run_here(tmp_path, "hydra.sweeper.stack=2", "hydra.sweeper.n_trials=2", "stacks=false")
    assert res.returncode == 1
    reasons = {t.user_attrs["fail_reason"] for t in study(tmp_path).trials}
    assert len(reasons) == 1 and "hydra.sweeper.stack=1" in reasons.pop()


def test_a_bad_stack_size_is_refused_before_anything_runs(tmp_path):
    res = run_here(tmp_path, "hydra.sweeper.stack=0")
    assert res.returncode == 2
    assert "hydra.sweeper.stack=0 is not allowed: use an integer >= 1" in res.stderr
    assert not (tmp_path / "sphere.db").exists()


@pytest.mark.slow  # a sweep in a process of its own (signals, a second worker, joblib)
def test_an_interrupted_stack_queues_every_member_again_and_resumes_to_the_target(tmp_path):
    args = (*LONG, "hydra.sweeper.stack=3", "hydra.sweeper.n_trials=3")
    proc = start(tmp_path, *args)
    wait_running(tmp_path, "long", 0, proc)
    proc.send_signal(signal.SIGINT)
    out = finish(proc, 60)
    assert proc.returncode == 130, out
    trials = study(tmp_path, "long").trials
    assert [t.state for t in trials[:3]] == [TrialState.FAIL] * 3
    assert [t.state for t in trials[3:]] == [TrialState.WAITING] * 3
    assert sorted(t.user_attrs["retry_of"] for t in trials[3:]) == [0, 1, 2]
    res = run_here(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path, "long").trials
    assert len(trials) == 6 and [t.state for t in trials[3:]] == [TrialState.COMPLETE] * 3
    assert [t.params for t in trials[3:]] == [trials[t.user_attrs["retry_of"]].params for t in trials[3:]]


@pytest.mark.slow  # a sweep in a process of its own (signals, a second worker, joblib)
def test_stacks_run_side_by_side_through_joblib(tmp_path):
    res = sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.stack=2",
        "hydra.sweeper.n_trials=6",
    )
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert all(t.value == t.params["x"] ** 2 + t.params["y"] ** 2 for t in trials)
    assert res.stdout.count("train together (stack of 2)") == 3


def test_a_stacked_multi_objective_sweep_has_its_pareto_front(tmp_path):
    res = run_here(
        tmp_path,
        "mode=pair",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.stack=4",
        "hydra.sweeper.n_trials=8",
    )
    assert res.returncode == 0, res.stderr
    s = study(tmp_path)
    assert [t.state for t in s.trials] == [TrialState.COMPLETE] * 8
    for t in s.trials:
        x, y = t.params["x"], t.params["y"]
        assert t.values == [x**2 + y**2, (x - 2) ** 2 + (y - 1) ** 2]
    assert s.best_trials and (tmp_path / "sweeps" / "sphere" / "optimization_results.yaml").is_file()


@pytest.mark.slow  # a sweep in a process of its own (signals, a second worker, joblib)
def test_a_killed_stack_leaves_stale_members_that_a_rerun_fails_and_runs_again(tmp_path):
    args = (*LONG, *BEAT, "hydra.sweeper.stack=2", "hydra.sweeper.n_trials=2")
    proc = start(tmp_path, *args)
    wait_running(tmp_path, "long", 0, proc)
    proc.kill()
    proc.wait(timeout=30)
    assert [t.state for t in study(tmp_path, "long").trials] == [TrialState.RUNNING] * 2  # what SIGKILL leaves
    res = run_here(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    t0, t1, t2, t3 = study(tmp_path, "long").trials
    assert [t0.user_attrs["fail_reason"], t1.user_attrs["fail_reason"]] == ["stale", "stale"]
    assert [t2.state, t3.state] == [TrialState.COMPLETE] * 2
    assert sorted(t.user_attrs["retry_of"] for t in (t2, t3)) == [0, 1]
