"""The course's staged search on digits: each stage a study, the space narrowed by the best trials
of the stage before, their parameters queued first, a rerun resumes."""

import optuna
import pytest
from hydra_study_sweeper.staged import narrow
from optuna.trial import TrialState

from .sweeps import study, sweep_here

pytestmark = pytest.mark.slow


def stages(second: int) -> str:
    return f"hydra.sweeper.stages=[{{data_size:1k,n_trials:6,keep:0.34}},{{data_size:10k,n_trials:{second}}}]"


def test_staged_search_narrows_queues_the_best_and_resumes(tmp_path):
    args = ("hparams_search=staged", "data=digits", "trainer.epochs=3")
    res = sweep_here(tmp_path, *args, stages(2))
    assert res.returncode == 0, res.stderr
    first, second = study(tmp_path, "staged-digits-1k"), study(tmp_path, "staged-digits-10k")
    assert len(first.trials) == 6
    assert first.user_attrs["space.model.num_layers"] == "int [1, 5]"
    complete = sorted(first.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    kept = complete[:3]  # ceil(0.34 * 6)
    queued = [t.params or t.system_attrs["fixed_params"] for t in second.trials]
    assert queued == [t.params for t in kept]  # queued first, best first
    assert [t.state for t in second.trials] == [TrialState.COMPLETE] * 2 + [TrialState.WAITING]
    narrowed = narrow(first.trials[0].distributions, kept)
    for name, dist in narrowed.items():
        assert second.trials[0].distributions[name] == dist
        values = [t.params[name] for t in kept]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            assert set(dist.choices) == set(values)
        else:
            assert dist.low <= min(values) and max(values) <= dist.high
    report = tmp_path / "outputs" / "sweeps" / "staged-digits"
    md = (report / "stages.md").read_text()
    assert "| 1k | staged-digits-1k | 6 |" in md and "| 10k | staged-digits-10k | 2 |" in md
    assert md.splitlines()[2].count("val_acc") == 1  # the objective once, not again as a summary column
    assert (report / "stages.png").stat().st_size > 5000
    assert "# Staged search" in res.stdout

    res = sweep_here(tmp_path, *args, stages(3))  # the first stage is done; the second goes on
    assert res.returncode == 0, res.stderr
    assert "study staged-digits-1k already has 6 of 6 trials: nothing to run" in res.stdout + res.stderr
    assert len(study(tmp_path, "staged-digits-1k").trials) == 6
    assert [t.state for t in study(tmp_path, "staged-digits-10k").trials] == [TrialState.COMPLETE] * 3


def test_narrowing_works_on_the_log_scale_inside_the_original_space():
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import create_trial

    dists = {"lr": FloatDistribution(1e-5, 1e-1, log=True), "width": IntDistribution(50, 1000)}
    kept = [
        create_trial(params={"lr": lr, "width": w}, distributions=dists, value=0.5)
        for lr, w in [(1e-4, 60), (1e-3, 90)]
    ]
    out = narrow(dists, kept)
    assert out["lr"].log and 1e-5 <= out["lr"].low < 1e-4 and 1e-3 < out["lr"].high < 1e-2
    assert out["lr"].low == pytest.approx(1e-4 / 10**0.25) and out["lr"].high == pytest.approx(1e-3 * 10**0.25)
    assert out["width"].low == 50 and 90 < out["width"].high < 200


def test_the_multifidelity_preset_grows_the_training_images_of_the_best_configurations(tmp_path):
    args = ("hparams_search=multifidelity", "data=digits", "trainer.epochs=2", "hydra.sweeper.n_trials=6")
    res = sweep_here(tmp_path, *args, "hydra.sweeper.fidelity.min=100", "hydra.sweeper.fidelity.max=900")
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path, "multifidelity-digits").trials
    assert len(trials) == 6 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert trials[0].state == TrialState.COMPLETE  # the first configuration climbs every rung
    assert [d["at"] for d in trials[0].user_attrs["rungs"]] == [100, 300, 900]
    folder = tmp_path / "outputs" / "sweeps" / "multifidelity-digits" / "0"
    for rung, images in enumerate((100, 300, 900)):  # each rung's job trained on its images, validated on the same
        config = (folder / f"rung-{rung}" / ".hydra" / "config.yaml").read_text()
        assert f"train: {images}" in config and "val: 4000" in config
    assert "## Rungs: configurations per rung" in res.stdout
