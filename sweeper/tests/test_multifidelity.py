"""Multi-fidelity search (`fidelity`): each trial a configuration, each rung a job with the key set;
a trial goes on to the next rung only in the best 1/eta of those that finished its rung when it
did. The sphere app's loss after `steps` steps is its value + 1/steps: more steps, lower loss, the
same order at every rung."""

import pytest
from hydra_study_sweeper.rungs import geometric, result_step
from optuna.trial import TrialState

from .helpers import BEAT, run_here, start, study, wait_until

RUNGS = ("hydra.sweeper.fidelity={key: steps, rungs: [1, 3, 9], eta: 3}",)


def check_promotions(trials, eta=3, top=2):
    """Every promotion followed the rule, as the stored rung values show: at the moment it was
    decided, the trial was in the best 1/eta (rounded up) of the trials that had finished that rung
    in its bracket, and those are exactly the ones the decision counted."""
    ends = {}  # (rung, start) -> [(decided at, trial number, value)]
    for t in trials:
        done = t.user_attrs.get("rungs", [])
        for d in done:
            if "ended" in d:
                ends.setdefault((d["rung"], done[0]["rung"]), []).append((d["ended"], t.number, d["value"]))
    promoted = 0
    for t in trials:
        done = t.user_attrs.get("rungs", [])
        assert [d["rung"] for d in done] == list(range(done[0]["rung"], done[0]["rung"] + len(done))) if done else True
        for d, after in zip(done, done[1:] + [None], strict=True):
            if d["rung"] == top:
                assert after is None and t.state == TrialState.COMPLETE and t.value == d["value"]
                continue
            earlier = [v for at, n, v in ends[(d["rung"], done[0]["rung"])] if at <= d["ended"] and n != t.number]
            rank = sum(v < d["value"] for v in earlier)
            if after is not None:
                promoted += 1
                assert rank * eta < len(earlier) + 1, (t.number, d, earlier)
                assert t.intermediate_values[result_step(d["rung"])] == d["value"]
            elif t.state == TrialState.PRUNED:
                assert rank * eta >= len(earlier) + 1, (t.number, d, earlier)
                assert t.value == d["value"] and "not in the best 1/3" in t.user_attrs["pruned_reason"]
    return promoted


def test_trials_climb_the_rungs_only_in_the_best_third_and_the_target_counts_configurations(tmp_path):
    res = run_here(tmp_path, *RUNGS, "hydra.sweeper.n_trials=12")
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path).trials
    assert len(trials) == 12 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert check_promotions(trials) >= 3
    for t in trials:
        base = t.params["x"] ** 2 + t.params["y"] ** 2
        for d in t.user_attrs["rungs"]:  # each rung ran with its own steps, in a folder of its own
            assert d["value"] == pytest.approx(base + 1 / d["at"])
            assert (tmp_path / "sweeps" / "sphere" / str(t.number) / f"rung-{d['rung']}" / "sphere.log").is_file()
        steps = sorted(t.intermediate_values)
        assert steps[-1] == result_step(len(t.user_attrs["rungs"]) - 1)  # how far it got, for the sampler
    assert trials[0].state == TrialState.COMPLETE  # the first to finish a rung always goes on
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert "++steps=9" in res.stdout  # the best trial's command reruns it at the top rung
    assert f"| {best.number} | complete |" in res.stdout and "configurations per rung" in res.stdout

    again = run_here(tmp_path, *RUNGS, "hydra.sweeper.n_trials=15")  # the same study, three more
    assert again.returncode == 0, again.stderr
    assert len(study(tmp_path).trials) == 15
    check_promotions(study(tmp_path).trials)


def test_epoch_reports_inside_a_rung_are_stored_after_the_earlier_rungs(tmp_path):
    res = run_here(tmp_path, *RUNGS, "hydra.sweeper.n_trials=2")
    assert res.returncode == 0, res.stderr
    first = study(tmp_path).trials[0]
    # rung 0: step 1; rung 1: steps 1001-1003; rung 2: steps 2001-2009; each rung's result at its last step
    assert sorted(first.intermediate_values) == [1, 999, *range(1001, 1004), 1999, *range(2001, 2010), 2999]
    assert first.intermediate_values[2009] == first.intermediate_values[2999] == first.value


def test_bad_fidelity_settings_are_refused_before_anything_runs(tmp_path):
    res = run_here(tmp_path, "hydra.sweeper.fidelity={key: steps, rungs: [9, 3], eta: 1}", "hydra.sweeper.repeats=2")
    assert res.returncode != 0
    assert "hydra.sweeper.fidelity.eta=1 is not allowed" in res.stderr
    assert "hydra.sweeper.fidelity.rungs=[9, 3] is not allowed" in res.stderr
    assert "hydra.sweeper.repeats=2 cannot be combined with hydra.sweeper.fidelity" in res.stderr
    assert not (tmp_path / "sphere.db").exists()


def test_rungs_from_a_minimum_and_a_maximum_grow_by_eta():
    assert geometric(1000, 20000, 3) == [1000, 3000, 9000, 20000]
    assert geometric(1000, 9000, 3) == [1000, 3000, 9000]
    assert geometric(0.1, 1.0, 2) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])


def test_brackets_start_trials_at_different_rungs_and_compare_them_within_their_bracket(tmp_path):
    res = run_here(
        tmp_path,
        "hydra.sweeper.fidelity={key: steps, rungs: [1, 3, 9], eta: 3, brackets: 2}",
        "hydra.sweeper.n_trials=8",
    )
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path).trials
    assert [t.user_attrs["rungs"][0]["rung"] for t in trials] == [0, 1] * 4
    check_promotions(trials)


@pytest.mark.slow  # two sweeper processes on one study
def test_two_workers_share_one_study_and_promote_without_duplicates(tmp_path):
    args = (*RUNGS, "hydra.sweeper.n_trials=16", "step_seconds=0.05", *BEAT)
    procs = [start(tmp_path, *args) for _ in range(2)]
    for proc in procs:
        proc.wait(timeout=300)
        proc.log.close()
        assert proc.returncode == 0, proc.log.name
    trials = study(tmp_path).trials
    assert len(trials) == 16 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both worked
    check_promotions(trials)
    ran = sorted(
        p.relative_to(tmp_path / "sweeps" / "sphere") for p in (tmp_path / "sweeps" / "sphere").glob("*/rung-*")
    )
    assert len(ran) == sum(len(t.user_attrs["rungs"]) for t in trials)  # each rung of each trial ran once


@pytest.mark.slow  # SIGKILL
def test_a_rerun_after_sigkill_mid_rung_goes_on_at_that_rung(tmp_path):
    args = ("hydra.sweeper.fidelity={key: steps, rungs: [2, 200]}", "step_seconds=0.05", *BEAT)
    proc = start(tmp_path, *args, "hydra.sweeper.n_trials=1")
    rung1 = tmp_path / "sweeps" / "sphere" / "0" / "rung-1" / "sphere.log"
    wait_until(lambda: rung1.is_file() and "step 2 of" in rung1.read_text(), proc, "trial 0 at rung 1")
    proc.kill()
    proc.wait(timeout=30)
    res = run_here(tmp_path, *args, "hydra.sweeper.n_trials=1")
    assert res.returncode == 0, res.stderr
    killed, retry = study(tmp_path).trials
    assert killed.state == TrialState.FAIL and retry.user_attrs["retry_of"] == 0
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    [rung0] = killed.user_attrs["rungs"]
    assert retry.user_attrs["rungs"][0] == rung0  # taken over, not run again
    assert retry.intermediate_values[result_step(0)] == rung0["value"]
    assert not (tmp_path / "sweeps" / "sphere" / "1" / "rung-0").exists()
    assert (tmp_path / "sweeps" / "sphere" / "1" / "rung-1" / "sphere.log").is_file()


def test_an_epoch_pruner_inside_a_rung_sees_that_rung_alone_with_its_warm_up():
    import optuna
    from hydra_study_sweeper.pruners import InRung
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(direction="minimize")
    dist = {"x": FloatDistribution(0, 1)}
    for _ in range(5):  # finished rung 1 (steps 1001-1003, result at 1999), then stopped at rung 2
        steps = {1: 2.0, 999: 2.0, 1001: 1.0, 1002: 1.0, 1003: 1.0, 1999: 1.0, 2001: 0.5}
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": 0.5}, distributions=dist, intermediate_values=steps, state=TrialState.PRUNED
            )
        )
    judged = optuna.trial.create_trial(
        params={"x": 0.1},
        distributions=dist,
        state=TrialState.PRUNED,
        intermediate_values={1: 1.5, 999: 1.5, 1001: 3.0, 1002: 3.0, 1003: 3.0},
    )
    median = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    assert not median.prune(study, judged)  # as Optuna sees the study: no completed trial to compare with
    assert InRung(median, 1, 1000).prune(study, judged)  # worse than those that finished rung 1, at its steps
    warm = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    assert not InRung(warm, 1, 1000).prune(study, judged)  # rung 1's third step: still warming up
    assert not InRung(median, 2, 1000).prune(study, judged)  # nobody finished rung 2


def test_a_pruner_that_marks_epochs_is_refused_inside_rungs(tmp_path):
    res = run_here(tmp_path, *RUNGS, "hydra/sweeper/pruner=successive_halving")
    assert res.returncode != 0 and "inside fidelity rungs use median, percentile or none" in res.stderr
