"""The sweeper on a Hydra app of its own: single and multi-objective, bad returns,
command-line intervals, integer bounds."""

import shlex
import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from .helpers import SPHERE, run_here, study

pytestmark = pytest.mark.slow


def load(tmp_path, name="sphere"):
    return study(tmp_path, name)


def test_single_objective_app_needs_no_keys_of_ours(tmp_path):
    res = run_here(tmp_path)
    assert res.returncode == 0, res.stderr
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    for t in study.trials:  # the task's return value is the objective
        assert t.value == pytest.approx(t.params["x"] ** 2 + t.params["y"] ** 2)
    job_log = (tmp_path / "sweeps" / "sphere" / "3" / "sphere.log").read_text()
    out = res.stdout + res.stderr + job_log
    assert "job of trial 3 in study sphere" in res.stdout  # the job learns its trial from the environment
    assert "Using an existing study" not in out
    results = yaml.safe_load((tmp_path / "sweeps" / "sphere" / "optimization_results.yaml").read_text())
    best = min(study.trials, key=lambda t: t.value)
    assert results["best_trial"] == best.number and results["best_value"] == pytest.approx(best.value)
    md = (tmp_path / "sweeps" / "sphere" / "summary.md").read_text()
    assert f"## Best trial: {best.number}" in md and "minimize value" in md  # ranked by the study's direction
    rows = [line for line in md.splitlines() if line.startswith("| ") and "complete" in line]
    values = [float(r.split("|")[3]) for r in rows]
    assert values == sorted(values)


def test_multi_objective_app_gets_a_pareto_front(tmp_path):
    res = run_here(
        tmp_path,
        "mode=pair",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.study_name=pair",
    )
    assert res.returncode == 0, res.stderr
    study = load(tmp_path, "pair")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 10
    sweep_dir = tmp_path / "sweeps" / "pair"
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    front = {s["number"] for s in results["solutions"]}
    assert front == {t.number for t in study.best_trials} and front
    for s in results["solutions"]:  # no solution dominates another
        for o in results["solutions"]:
            a, b = s["values"], o["values"]
            assert not (all(x <= y for x, y in zip(a, b, strict=True)) and a != b)
    md = (sweep_dir / "summary.md").read_text()
    assert f"## Pareto front: {len(front)} trial(s)" in md
    assert (sweep_dir / "pareto.png").stat().st_size > 5000


@pytest.mark.parametrize(
    "mode, direction, reason",
    [
        ("nan_first", "minimize", "non-finite result nan"),
        ("short_first", "minimize", "returned 1 value(s) for 1 direction(s)"),
        ("single", "[minimize,minimize]", "returned 1 value(s) for 2 direction(s)"),
    ],
)
def test_a_bad_return_value_fails_that_trial_with_the_reason(tmp_path, mode, direction, reason):
    res = run_here(tmp_path, f"mode={mode}", f"hydra.sweeper.direction={direction}", "hydra.sweeper.n_trials=3")
    study = load(tmp_path)
    if mode == "single":  # every trial returns one value for two directions: the failure policy stops it
        assert res.returncode == 1 and "more than max_failure_rate" in res.stderr
        assert study.trials[0].state == TrialState.FAIL
    else:
        assert res.returncode == 0, res.stderr
        assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert reason in study.trials[0].user_attrs["fail_reason"]


def test_an_integer_interval_on_the_command_line_goes_to_the_sampler(tmp_path):
    res = run_here(tmp_path, "x=tag(log, int(interval(1, 400)))", "hydra.sweeper.n_trials=3")
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "target 3 trials, sampler TPESampler" in out
    [name] = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/sphere.db")]
    trials = load(tmp_path, name).trials
    assert len(trials) == 3
    assert trials[0].distributions["x"] == IntDistribution(1, 400, log=True)


def test_explicit_value_lists_on_the_command_line_make_a_full_grid(tmp_path):
    res = run_here(tmp_path, "x=1,2", "y=range(0,3)")
    assert res.returncode == 0, res.stderr
    assert "target 6 trials, sampler GridSampler" in res.stdout + res.stderr


@pytest.mark.parametrize("value", ["int(interval(1.5, 3))", "tag(log, int(interval(1, 2.5)))"])
def test_an_integer_interval_needs_integer_bounds(tmp_path, value):
    res = run_here(tmp_path, f"x={value}")
    assert res.returncode == 2 and "of an integer interval is not an integer" in res.stderr
    assert not (tmp_path / "sphere.db").exists() or not optuna.get_all_study_summaries(
        f"sqlite:///{tmp_path}/sphere.db"
    )


def test_each_pareto_trial_gets_the_command_that_reruns_it(tmp_path):
    res = run_here(tmp_path, "mode=pair", "hydra.sweeper.direction=[minimize,minimize]", "hydra.sweeper.n_trials=6")
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "sweeps" / "sphere" / "summary.md").read_text()
    commands = [line.split("`")[1] for line in md.splitlines() if "Rerun as a single run: `" in line]
    front = study(tmp_path).best_trials
    assert len(commands) == len(front) >= 1
    wanted = {(f"x={t.params['x']!r}", f"y={t.params['y']!r}") for t in front}
    found = set()
    for line in commands:
        words = shlex.split(line)
        assert words[:2] == ["python", str(SPHERE)] and "mode=pair" in words
        found.add((next(w for w in words if w.startswith("x=")), next(w for w in words if w.startswith("y="))))
    assert found == wanted  # each Pareto trial's own parameters, exactly
    words = [sys.executable, *shlex.split(commands[0])[1:]]  # `python` of this test's environment
    run = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr  # it runs as a single run of the app
    assert "job of trial None" in run.stdout  # not a sweep's job


def test_a_trial_past_trial_timeout_fails_with_its_last_value_and_the_sweep_goes_on(tmp_path):
    args = ("steps=60", "step_seconds=0.05", "hydra.sweeper.trial_timeout=1", "hydra.sweeper.max_failure_rate=1")
    res = run_here(tmp_path, *args, "hydra.sweeper.n_trials=2")
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2, res.stdout + res.stderr
    for t in trials:
        reason = t.user_attrs["fail_reason"]
        assert reason.startswith("timeout: past hydra.sweeper.trial_timeout=1 s at step "), reason
        last = max(t.intermediate_values)
        assert 10 < last < 60  # stopped on time, not at the end (60 steps take 3 s)
        assert t.user_attrs["last_value"] == t.intermediate_values[last]


def test_no_trial_starts_after_the_sweep_timeout_and_a_rerun_goes_on(tmp_path):
    res = run_here(tmp_path, "seconds=0.5", "hydra.sweeper.timeout=2", "hydra.sweeper.n_trials=20")
    assert res.returncode == 0, res.stderr
    assert "time limit hydra.sweeper.timeout=2 s reached: no new trial starts" in res.stdout
    trials = study(tmp_path).trials  # trial 0 takes 3 s (six times the others): nothing starts after it
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    assert (tmp_path / "sweeps" / "sphere" / "summary.md").is_file()
    res = run_here(tmp_path, "seconds=0.5", "hydra.sweeper.timeout=60", "hydra.sweeper.n_trials=3")
    assert res.returncode == 0, res.stderr
    assert [t.state for t in study(tmp_path).trials] == [TrialState.COMPLETE] * 3


def test_bad_time_limits_are_refused(tmp_path):
    bad = ("hydra.sweeper.timeout=0", "hydra.sweeper.trial_timeout=-3", "hydra.sweeper.outage_timeout=-1")
    res = run_here(tmp_path, *bad)
    assert res.returncode == 2
    assert "hydra.sweeper.timeout=0.0 is not allowed: use seconds > 0, or null for no limit" in res.stderr
    assert "hydra.sweeper.trial_timeout=-3.0 is not allowed" in res.stderr
    assert "hydra.sweeper.outage_timeout=-1.0 is not allowed: use seconds >= 0 (0: do not wait)" in res.stderr
