"""Pure parts of the sweeper: queued trials, the target count, stored-space conflicts, identity,
signals."""

import os
import sys
import time

import optuna
import pytest
from hydra_study_sweeper.errors import UserError
from hydra_study_sweeper.plan import sampler_factory
from hydra_study_sweeper.recovery import counts_toward_target
from hydra_study_sweeper.space import Space, check_against_stored, check_enqueued
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

DISTS = {
    "optimizer.lr": FloatDistribution(1e-5, 1e-3, log=True),
    "model.hidden_size": IntDistribution(150, 400),
    "model.activation": CategoricalDistribution(["relu", "leaky_relu"]),
}
SPACE = Space(DISTS, {}, (), False, None)


def test_queued_trials_must_fit_the_space():
    check_enqueued([{"optimizer.lr": 1e-4, "model.activation": "relu"}], SPACE)
    with pytest.raises(UserError) as err:
        check_enqueued([{"optimizer.lr": 1e-1, "model.hiden": 3, "model.activation": "gelu"}], SPACE)
    message = str(err.value)
    assert "enqueue_trials[0].optimizer.lr=0.1 is outside float interval [1e-05, 0.001] log" in message
    assert "enqueue_trials[0].model.hiden: not a parameter of the search space" in message
    assert "model.activation='gelu' is outside choice('relu', 'leaky_relu')" in message


@pytest.mark.parametrize(
    "state, reason, counted",
    [
        (TrialState.COMPLETE, None, True),
        (TrialState.FAIL, "diverged", True),
        (TrialState.FAIL, "interrupted", False),
        (TrialState.FAIL, "stale", False),
    ],
)
def test_interrupted_and_stale_trials_do_not_count_toward_the_target(state, reason, counted):
    attrs = {"fail_reason": reason} if reason else {}
    trial = create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None, user_attrs=attrs)
    assert counts_toward_target(trial) is counted


def draws(seed, n=6):
    """The first value each of n trials of a study draws, with the sweeper's sampler per trial."""
    make = sampler_factory(OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": seed}), None)
    study, values = optuna.create_study(), []
    for number in range(n):
        study.sampler = make(number)
        trial = study.ask()
        values.append(trial.suggest_float("x", 0, 1))
        study.tell(trial, 0.0)
    return values


def test_sampler_seeds_draw_sequences_of_their_own_and_each_is_reproducible():
    # seed + trial number, as it was, gave seed 1's trial n the draws of seed 0's trial n + 1
    zero, one = draws(0), draws(1)
    assert not set(zero) & set(one)
    assert draws(0) == zero


def test_stored_space_conflicts_are_found_before_any_trial():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.add_trial(
        create_trial(
            params={"model.activation": "relu"},
            value=0.5,
            distributions={"model.activation": DISTS["model.activation"]},
        )
    )
    check_against_stored(study, SPACE)
    changed = Space({**DISTS, "model.activation": CategoricalDistribution(["relu", "gelu"])}, {}, (), False, None)
    with pytest.raises(UserError, match=r"model.activation: choice\('relu', 'leaky_relu'\) in the study, choice"):
        check_against_stored(study, changed)
    wider = Space(
        {**DISTS, "model.activation": CategoricalDistribution(["relu", "leaky_relu", "gelu"])}, {}, (), False, None
    )
    with pytest.raises(UserError, match="allow_widening=true accepts"):
        check_against_stored(study, wider)
    assert list(check_against_stored(study, wider, allow_widening=True)) == ["model.activation"]
    other_kind = Space({**DISTS, "model.activation": IntDistribution(1, 3)}, {}, (), False, None)
    with pytest.raises(UserError, match="model.activation: int interval \\[1, 3\\] conflicts with choice"):
        check_against_stored(study, other_kind, allow_widening=True)


def test_the_tally_counts_as_a_full_pass_would_while_trials_are_added_and_finish():
    from hydra_study_sweeper.recovery import Tally

    study = optuna.create_study()
    tally, rng = Tally(), __import__("random").Random(0)
    for _ in range(300):
        roll = rng.random()
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if roll < 0.4 or not running:
            study.ask()
        elif roll < 0.5:
            study.enqueue_trial({})
        else:
            trial = rng.choice(running)
            reason = rng.choice(["interrupted", "stale", "diverged"])
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            state = rng.choice([TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED])
            values = [1.0] if state == TrialState.COMPLETE else None
            study._storage.set_trial_state_values(trial._trial_id, state, values)
        trials = study.get_trials(deepcopy=False)
        tally.update(trials)
        assert tally.counted == sum(map(counts_toward_target, trials))
        assert tally.open == {t.number for t in trials if not t.state.is_finished()}
        for number in (0, len(trials) // 2, len(trials)):
            live = {t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)}
            full = sum(t.number < number and (counts_toward_target(t) or t.number in live) for t in trials)
            assert tally.live_below(trials, number) == full


def test_a_long_summary_table_shows_the_best_hundred_and_the_csv_every_trial(tmp_path):
    from hydra_study_sweeper.summary import Layout, rows_from_study, write

    study = optuna.create_study()
    study.add_trials([create_trial(value=float(v), params={}, distributions={}) for v in range(150)])
    md = write(rows_from_study(study, []), tmp_path, Layout(["value"], ["minimize"], [], {}, None), study=study)
    table = [line for line in md.splitlines() if line.startswith("| ") and "complete" in line]
    assert len(table) == 100 and table[0].startswith("| 0 |") and table[-1].startswith("| 99 |")
    assert "... and 50 more trials, in the same order: summary.csv holds every trial." in md
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 151


def test_the_watchdog_finds_a_silent_job_but_not_while_the_storage_is_away(tmp_path):
    import json

    from hydra_study_sweeper.watchdog import Watchdog
    from hydra_study_sweeper.wire import JOB_FILE

    dog = Watchdog(stall_timeout=10, trial_timeout=None, stop_grace=30)
    token = dog.started("job", tmp_path)
    (tmp_path / JOB_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": token}))
    assert dog.look(now=100.0) == ([], [])  # first seen: it runs from now
    (tmp_path / JOB_FILE).touch()  # its first step
    assert dog.look(now=101.0) == ([], [])
    assert dog.look(now=108.0) == ([], [])
    assert dog.look(now=130.0, paused=True) == ([], [])  # 22 s of outage: jobs wait in report()
    [(key, w)], gone = dog.look(now=135.0)
    assert key == "job" and not gone
    assert w.hung == "hung: no step reported for 12 s (hydra.sweeper.stall_timeout=10 s)"
    assert "not here" in dog.stop(w)  # on another machine: not stopped from here


def test_a_jobs_start_up_is_judged_by_its_own_allowance_not_by_stall_timeout(tmp_path):
    import json

    from hydra_study_sweeper.watchdog import Watchdog
    from hydra_study_sweeper.wire import JOB_FILE

    for start_timeout, said in ((None, "stall_timeout + 60 s = 65 s"), (20, "start_timeout=20 s")):
        dog = Watchdog(stall_timeout=5, trial_timeout=None, stop_grace=30, start_timeout=start_timeout)
        token = dog.started("job", tmp_path)
        (tmp_path / JOB_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": token}))
        assert dog.look(now=100.0) == ([], [])
        assert dog.look(now=115.0) == ([], [])  # 15 s of start-up (imports, data): not silence
        [(_, w)], _ = dog.look(now=100.0 + (start_timeout or 65) + 1)
        assert w.hung.startswith("hung: no first step within ") and w.hung.endswith(f"(hydra.sweeper.{said})")


def test_the_watchdog_believes_only_the_job_file_of_the_launch_it_watches(tmp_path):
    """A folder reused by a later job (trial numbers restart) still holds the old job's file: it is
    removed before the launch, and a file without this launch's token is never read."""
    import json

    from hydra_study_sweeper.watchdog import Watchdog
    from hydra_study_sweeper.wire import JOB_FILE

    stale = {"host": __import__("socket").gethostname(), "pid": os.getpid(), "token": "an old job's"}
    (tmp_path / JOB_FILE).write_text(json.dumps(stale))
    dog = Watchdog(stall_timeout=1, trial_timeout=None, stop_grace=0)
    token = dog.started("job", tmp_path)
    assert not (tmp_path / JOB_FILE).exists() and token
    (tmp_path / JOB_FILE).write_text(json.dumps(stale))  # written again, as by a job of another sweep
    for now in (100.0, 110.0, 200.0):
        assert dog.look(now=now) == ([], [])
    assert dog.jobs["job"].pid is None  # never taken for this launch's job


def test_the_watchdog_signals_no_process_but_the_one_it_recorded(tmp_path):
    """Not the sweeper's own process (jobs in threads), not one of its ancestors, and not a process
    that got the recorded pid after the job's end (its start time differs)."""
    import socket
    import subprocess

    from hydra_study_sweeper.watchdog import Watch, Watchdog, ancestors, start_time

    dog = Watchdog(stall_timeout=1, trial_timeout=None, stop_grace=0)
    here = socket.gethostname()
    for pid in (os.getpid(), ancestors(os.getpid())[0]):
        w = Watch(tmp_path, host=here, pid=pid, start=start_time(pid), hung="hung: test")
        assert "inside this sweeper's process" in dog.stop(w)
        assert w.tree == () and w.kill_at is None
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reused = Watch(tmp_path, host=here, pid=stranger.pid, start=start_time(stranger.pid) - 1, hung="hung: test")
        assert dog.stop(reused) is None  # said ended; nothing signalled
        assert reused.tree == () and reused.given_up is not None
        dog.jobs["job"] = reused
        dog.ended("job")
        time.sleep(0.3)
        assert stranger.poll() is None  # alive
        started = start_time(stranger.pid)  # read before the signal: a process that ended has none
        mine = Watch(tmp_path, host=here, pid=stranger.pid, start=started, hung="hung: test")
        assert dog.stop(mine) is None and mine.tree == ((stranger.pid, started),)
        assert stranger.wait(timeout=10) == -15  # SIGTERM: it was the process recorded
    finally:
        stranger.kill()
        stranger.wait()


def test_a_lost_connection_is_waited_for_and_a_long_outage_ends_in_a_storage_failure(caplog):
    import sqlalchemy
    from hydra_study_sweeper.errors import StorageFailure
    from hydra_study_sweeper.outage import Outage

    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    calls = []

    def flaky(answer):
        calls.append(answer)
        if len(calls) < 3:
            raise optuna.exceptions.StorageInternalError("during the commit") from lost
        return answer

    outage = Outage("postgresql://db/x", limit=60)
    with caplog.at_level("WARNING"):
        assert outage.call("get_trial", flaky, 42) == 42
    assert len(calls) == 3 and outage.since is None and outage.ended is not None
    said = [r.getMessage() for r in caplog.records]
    assert any("is unreachable (connection refused): waiting up to 60 s" in m for m in said)
    assert any("answers again after" in m for m in said)
    with pytest.raises(ValueError):  # not a lost connection: raised at once
        outage.call("get_trial", lambda: (_ for _ in ()).throw(ValueError("bad")))

    def down():
        raise lost

    short = Outage("postgresql://db/y", limit=0.5)
    with pytest.raises(StorageFailure, match=r"unreachable for .*outage_timeout=0.5 s allows \(last error: conn"):
        short.call("get_trial", down)
    with pytest.raises(StorageFailure):  # given up: later calls fail at once, without waiting
        short.call("get_trial", lambda: 1)


def test_a_reset_that_failed_because_the_server_went_away_is_not_logged_with_its_traceback(caplog):
    """SQLAlchemy logs a connection it could not roll back on its way back to the pool at ERROR,
    traceback and all; during an outage that is noise beside the sweeper's own line (CI once saw
    it fail a MariaDB outage test). Other pool errors still show."""
    import logging

    from hydra_study_sweeper import outage as storage

    class OperationalError(Exception):  # a driver's own class, as pymysql raises it unwrapped
        pass

    storage.quiet_lost_resets()
    storage.quiet_lost_resets()  # once is enough: no second filter
    pool_log = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
    assert sum(isinstance(f, storage.LostReset) for f in pool_log.filters) == 1

    def reset_failed(err):
        try:
            raise err
        except Exception:
            pool_log.error("Exception during reset or similar", exc_info=True)

    with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"):
        reset_failed(OperationalError(2013, "Lost connection to MySQL server during query"))
        reset_failed(ConnectionResetError(104, "Connection reset by peer"))
        assert caplog.records == []
        reset_failed(ValueError("a bug, not an outage"))
        pool_log.error("something else entirely")
    assert [r.getMessage() for r in caplog.records] == ["Exception during reset or similar", "something else entirely"]


def halving(min_trials):
    from hydra_study_sweeper.pruners import Patient

    sha = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3, min_early_stopping_rate=0)
    return sha if min_trials is None else Patient(sha, min_trials=min_trials)


def at_rung(study, value):
    """A new trial reports `value` at step 1; whether the study's pruner stops it."""
    trial = study.ask()
    trial.report(value, 1)
    return trial.should_prune()


def test_patient_holds_back_a_stop_until_enough_other_trials_reached_the_step():
    bare = optuna.create_study(direction="maximize", pruner=halving(None))
    patient = optuna.create_study(direction="maximize", pruner=halving(3))
    for study in (bare, patient):
        assert not at_rung(study, 0.9)  # the first at its rung
    assert at_rung(bare, 0.1)  # halving alone judges the second trial against the first
    assert not at_rung(patient, 0.1)  # one other at this step: too little evidence
    assert not at_rung(patient, 0.8)
    assert at_rung(patient, 0.05)  # three others reached it: the wrapped pruner's stop stands
    assert not at_rung(patient, 0.95)  # and its "go on" always did


def test_patient_refuses_what_is_not_a_pruner_and_a_bad_count_and_unwraps_to_the_pruner_inside():
    from hydra_study_sweeper.pruners import Patient, inner

    with pytest.raises(TypeError, match="is not an Optuna pruner"):
        Patient("median")
    with pytest.raises(ValueError, match=r"min_trials=-1 is not allowed"):
        Patient(optuna.pruners.MedianPruner(), min_trials=-1)
    sha = halving(None)
    assert inner(Patient(Patient(sha, 1), 2)) is sha


def test_a_trial_pruned_by_patient_halving_says_what_it_was_compared_with():
    """The reason a job's reporter stores: the pruner inside the Patient, and the share of the
    trials at the rung it was not among."""
    from hydra_study_sweeper.job import IN_PROCESS, PRUNED_ATTR, Reporter, SweepTrial

    study = optuna.create_study(study_name="patient", direction="maximize", pruner=halving(3))
    for value in (0.9, 0.8, 0.7, 0.6):
        at_rung(study, value)
    late = study.ask()
    IN_PROCESS["patient"] = (os.getpid(), study)
    try:
        report = Reporter(SweepTrial("patient", late.number), name="val_acc", unit="epoch")
        assert report(1, 0.1) is False
    finally:
        del IN_PROCESS["patient"]
    said = "pruned by SuccessiveHalvingPruner at epoch 1: val_acc 0.1; not in the best 1/3 of the 5 trials"
    assert report.reason == said + " that reached this rung (epoch 1)"
    assert study.trials[late.number].user_attrs[PRUNED_ATTR] == report.reason


def test_the_sweepers_defaults_are_said_once_in_the_plugins_config():
    """Settings restates no default: each of its keys is one of StudySweeperConf's (direction is
    read as directions), which alone holds the defaults."""
    import dataclasses

    from hydra_plugins.hydra_study_sweeper.study_sweeper import StudySweeperConf
    from hydra_study_sweeper.settings import Settings

    fields = dataclasses.fields(Settings)
    assert [
        f.name for f in fields if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ] == []
    conf = {f.name for f in dataclasses.fields(StudySweeperConf)}
    assert {f.name for f in fields} - {"directions"} <= conf and "direction" in conf


def test_a_trial_of_this_worker_is_asked_once_and_told_once_through_the_run():
    from hydra_study_sweeper.loop import Run
    from hydra_study_sweeper.outcome import Outcome
    from hydra_study_sweeper.recovery import Heartbeat
    from hydra_study_sweeper.wire import WORKER_ATTR

    study = optuna.create_study()
    r = Run(None, None, study, Heartbeat(None, 60), None, None, allowed_failures=0)
    trial = study.ask()
    r.asked(trial)
    assert WORKER_ATTR in study.trials[0].user_attrs
    with pytest.raises(RuntimeError, match="asked twice"):
        r.asked(trial)
    assert r.tell(trial.number, Outcome(TrialState.COMPLETE, [1.5]))
    assert (study.trials[0].state, study.trials[0].value, r.told, r.in_flight) == (TrialState.COMPLETE, 1.5, 1, {})
    with pytest.raises(RuntimeError, match="told twice"):
        r.tell(trial.number, Outcome.failed("again"))
    other = study.ask()
    r.asked(other)
    study.tell(other, 2.0)  # finished elsewhere (another worker failed it as stale, say)
    assert not r.tell(other.number, Outcome.failed("late"), counted=False)
    assert (study.trials[1].value, r.told, r.in_flight) == (2.0, 1, {})
