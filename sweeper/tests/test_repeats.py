"""Repeated seeds per configuration (repeats, seed_key): one trial = its configuration run with N
seeds, each a job with its own folder; the value is their mean, the spread is recorded."""

import json
import statistics

import pytest
from optuna.trial import TrialState

from .helpers import run_here, study, sweep

REPEATS = ("hydra.sweeper.repeats=3", "hydra.sweeper.seed_key=seed", "noise=0.1", "results=true")
RECORD = ("hydra.sweeper.results_file=results.json", "hydra.sweeper.record=[loss]")


def test_a_trial_is_the_mean_of_its_seeds_with_each_seeds_value_and_folder(tmp_path):
    res = run_here(tmp_path, "hydra.sweeper.n_trials=3", *REPEATS, *RECORD)
    assert res.returncode == 0, res.stderr
    for t in study(tmp_path).trials:
        assert t.state == TrialState.COMPLETE
        base = t.params["x"] ** 2 + t.params["y"] ** 2
        assert t.user_attrs["value_seeds"] == pytest.approx([base, base + 0.1, base + 0.2])  # seeds 0, 1, 2
        assert t.value == pytest.approx(base + 0.1)
        assert t.user_attrs["value_std"] == pytest.approx(statistics.stdev([0, 0.1, 0.2]))
        assert t.user_attrs["seeds"] == [0, 1, 2]
        folder = tmp_path / "sweeps" / "sphere" / str(t.number)
        for seed in (0, 1, 2):  # each seed's job in its own folder inside the trial's, with its own config
            job = folder / f"seed-{seed}"
            assert json.loads((job / "results.json").read_text())["loss"] == pytest.approx(base + 0.1 * seed)
            assert f"seed: {seed}" in (job / ".hydra" / "config.yaml").read_text()
        assert t.user_attrs["dir"] == str(folder / "seed-0")
        assert t.user_attrs["loss"] == pytest.approx(base + 0.1, abs=1e-4)  # recorded keys: the seeds' mean
    assert f"{t.value:.4g} ± 0.1 " in res.stdout  # the summary: mean ± std
    assert "(mean ± std over seeds 0, 1, 2)" in res.stdout
    assert "value_std" in (tmp_path / "sweeps" / "sphere" / "summary.csv").read_text().splitlines()[0]


@pytest.mark.slow  # a sweep in a process of its own (signals, a second worker, joblib)
def test_the_seeds_of_one_trial_run_side_by_side(tmp_path):
    # trial 0 sleeps 6 x 2 s in each seed's job; with three places its three seeds run at once
    args = (
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=3",
        "hydra.sweeper.n_jobs=3",
        "hydra.sweeper.n_trials=1",
        "seconds=2",
    )
    res = sweep(tmp_path, *args, *REPEATS, timeout=240)
    assert res.returncode == 0, res.stderr
    [t] = study(tmp_path).trials
    assert t.state == TrialState.COMPLETE
    folder = tmp_path / "sweeps" / "sphere" / "0"
    spans = []
    for seed in (0, 1, 2):  # Hydra writes a job's config as it starts; the app its results as it ends
        job = folder / f"seed-{seed}"
        spans.append(((job / ".hydra" / "config.yaml").stat().st_mtime, (job / "results.json").stat().st_mtime))
    assert all(a[0] < b[1] and b[0] < a[1] for a in spans for b in spans), spans  # all three ran at once


def test_pruning_decides_on_the_first_seed_and_a_pruned_trial_runs_no_more_seeds(tmp_path):
    # a median pruner that judges from the second trial on: trials behind the first are stopped
    args = (
        "steps=6",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.repeats=2",
        "hydra.sweeper.seed_key=seed",
        "results=true",
    )
    res = run_here(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path).trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "nothing was pruned"
    for t in pruned:
        folder = tmp_path / "sweeps" / "sphere" / str(t.number)
        assert (folder / "seed-0").is_dir() and not (folder / "seed-1").exists()  # its other seed never ran
        assert max(t.intermediate_values) < 6
    for t in trials:
        if t.state == TrialState.COMPLETE:  # the curve is the first seed's: one value per step
            assert sorted(t.intermediate_values) == list(range(1, 7))


def test_a_multi_objective_trial_has_the_mean_of_each_objective(tmp_path):
    res = run_here(
        tmp_path,
        "mode=pair",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.repeats=2",
        "hydra.sweeper.seed_key=seed",
        "noise=0.1",
    )
    assert res.returncode == 0, res.stderr
    for t in study(tmp_path).trials:
        x, y = t.params["x"], t.params["y"]
        assert t.values == pytest.approx([x**2 + y**2 + 0.05, (x - 2) ** 2 + (y - 1) ** 2])
        assert t.user_attrs["value_1_std"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("hydra.sweeper.repeats=2",), "hydra.sweeper.repeats=2 needs hydra.sweeper.seed_key"),
        (("hydra.sweeper.repeats=0", "hydra.sweeper.seed_key=seed"), "hydra.sweeper.repeats=0 is not allowed"),
        (
            ("hydra.sweeper.repeats=2", "hydra.sweeper.seed_key=noise"),
            "seed_key=noise: the config's value there is 0.0",
        ),
        (
            ("hydra.sweeper.repeats=2", "hydra.sweeper.seed_key=seed", "x=interval(-1,1)", "seed=choice(0,1)"),
            "which the search space sweeps (the sampler would tune it)",
        ),
        (
            ("hydra.sweeper.repeats=2", "hydra.sweeper.seed_key=seed", "x=-1,1", "seed=0,1"),
            "which the search space sweeps (the grid already sweeps it)",
        ),
        (
            ("hydra.sweeper.repeats=2", "hydra.sweeper.seed_key=seed", "hydra.sweeper.stack=2"),
            "with hydra.sweeper.stack=2",
        ),
    ],
)
def test_repeats_that_cannot_work_are_refused_before_anything_runs(tmp_path, args, message):
    res = run_here(tmp_path, *args)
    assert res.returncode == 2, res.stdout
    assert message in res.stderr
    assert not (tmp_path / "sweeps").exists()
