"""Parallel trials without lock-step, and many workers on one study reaching exactly its target,
on SQLite and on real servers (PostgreSQL, MariaDB, Redis); Ray and submitit launchers."""

import contextlib
import os
import signal
import subprocess
import time
import uuid
from types import SimpleNamespace

import optuna
import pytest
import sqlalchemy
from hydra_study_sweeper.job import STORAGE_ENV
from hydra_study_sweeper.launching import ray_init_options
from hydra_study_sweeper.loop import InFlight, Run, Scan, ask, surplus
from hydra_study_sweeper.recovery import SURPLUS, Heartbeat, counts_toward_target
from hydra_study_sweeper.storage import open_storage
from optuna.trial import TrialState

from .helpers import BEAT, LONG, SPHERE, finish, no_running, start, study, sweep, wait_running
from .test_storages import server, study_name  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow


def test_a_trial_that_ends_frees_its_place_at_once(tmp_path):
    # trial 0 sleeps 6 x 1 s; meanwhile the other place runs trials 1, 2, ... one after another (on a
    # loaded 2-core machine a joblib job's start-up can take a second, hence the margin)
    args = (
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=5",
        "seconds=1",
    )
    proc = start(tmp_path, *args, app=SPHERE)
    out = finish(proc, 180)
    assert proc.returncode == 0, out
    trials = optuna.load_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/sphere.db").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    slow = trials[0]
    # lock-step batches would start trial 2 only after trial 0 ended
    assert trials[2].datetime_start < slow.datetime_complete
    # two quick trials ran one after the other in the other place while the slow one ran (lock-step
    # batches of two would end at most one of them before it)
    assert sum(t.datetime_complete < slow.datetime_complete for t in trials[1:]) >= 2


def test_joblib_with_one_worker_runs_each_job_here_one_at_a_time(tmp_path):
    # joblib with one worker (n_jobs=1, or -1 on one core) runs a job in the calling thread: two such
    # at once shared Hydra's per-process state, and a job found hydra.runtime.output_dir missing
    args = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4")
    res = sweep(tmp_path, *args, "seconds=0.2", "results=true")
    assert res.returncode == 0, res.stderr
    assert "joblib has one worker here (hydra.launcher.n_jobs=1" in res.stdout
    assert "set hydra.launcher.n_jobs=2 for jobs in processes of their own" in res.stdout
    assert [t.state for t in study(tmp_path).trials] == [TrialState.COMPLETE] * 4
    assert len(list((tmp_path / "sweeps" / "sphere").glob("*/results.json"))) == 4


def exact_target(url, tmp_path, name, workers=3, n_trials=5):
    """`workers` processes on one study: it ends with exactly n_trials trials that count."""
    args = (f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={name}", f"hydra.sweeper.n_trials={n_trials}")
    procs = [start(tmp_path, *args, "seconds=0.1", app=SPHERE) for _ in range(workers)]
    outs = [finish(p, 240) for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, outs
    trials = optuna.load_study(study_name=name, storage=open_storage(url, 10, None)).trials
    ran = [t for t in trials if t.user_attrs.get("fail_reason") != "surplus"]
    assert [t.state for t in ran] == [TrialState.COMPLETE] * n_trials
    assert no_running(trials) and len({t.number for t in trials}) == len(trials)
    folders = sorted(int(p.name) for p in (tmp_path / "sweeps" / name).iterdir() if p.name.isdigit())
    assert folders == sorted(t.number for t in ran)  # a surplus trial never got a job
    for out in outs:  # each worker summarizes the whole study, once it is done
        assert f"\n{n_trials} complete\n" in out, out
        assert "Traceback" not in out
    return trials


def test_workers_on_a_sqlite_file_reach_exactly_the_target(tmp_path):
    exact_target(f"sqlite:///{tmp_path}/shared.db", tmp_path, "exact", workers=4, n_trials=6)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_workers_on_a_new_database_create_its_tables_once_and_reach_the_target(tmp_path, kind):
    """Workers starting together on an empty database race to create Optuna's tables: the losers
    retry instead of failing (seen: PostgreSQL's duplicate key on pg_type)."""
    with new_database(server(kind)) as url:
        exact_target(url, tmp_path, "race")


SOAK = os.environ.get("SWEEPER_SOAK") == "1"  # the full form: eight workers, 80 trials (about a minute a server)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_many_workers_on_one_server_study_count_exactly_its_target(tmp_path, kind):
    """Six processes started together on one study of 24 trials (SWEEPER_SOAK=1: eight and 80), on
    PostgreSQL and on MariaDB: exactly the target counts, numbers and folders unique, no worker
    exits non-zero (exact_target checks each), and the work was shared."""
    workers, n_trials = (8, 80) if SOAK else (6, 24)
    with new_database(server(kind)) as url:
        trials = exact_target(url, tmp_path, "many", workers=workers, n_trials=n_trials)
    assert len({t.user_attrs["worker"] for t in trials}) > 1


def test_workers_on_redis_reach_exactly_the_target(tmp_path, study_name):  # noqa: F811
    exact_target(server("redis"), tmp_path, study_name)


@contextlib.contextmanager
def new_database(url):
    """An empty database of this test's own on the server at `url`, dropped afterwards."""
    parts = sqlalchemy.engine.make_url(url)
    name = f"mlp_sweep_{uuid.uuid4().hex[:10]}"
    backend = parts.get_backend_name()
    admin = sqlalchemy.create_engine(
        parts.set(drivername="postgresql+psycopg" if backend == "postgresql" else "mysql+pymysql"),
        isolation_level="AUTOCOMMIT",
    )
    drop = f"DROP DATABASE {name} WITH (FORCE)" if backend == "postgresql" else f"DROP DATABASE {name}"
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        yield parts.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(sqlalchemy.text(drop))
        admin.dispose()


def test_a_trial_asked_after_others_filled_the_target_gives_its_place_back(tmp_path):
    """The race itself, made certain: a worker whose count is outdated asks one trial too many."""
    s = optuna.create_study(study_name="race", storage=f"sqlite:///{tmp_path}/race.db")
    done = s.ask()  # another worker's trial 0, finished
    s.tell(done, 1.0)
    elsewhere = s.ask()  # another worker's trial 1, running
    elsewhere.set_user_attr("worker", "elsewhere:1")
    s.enqueue_trial({"x": 1.5}, user_attrs={"retry_of": 7})
    late = s.ask()  # trial 2 takes the queued parameters

    def run(n_trials):  # only what surplus() uses
        plan = SimpleNamespace(n_trials=n_trials)
        return Run(None, plan, s, Heartbeat(None, 0), None, None, 0, in_flight={late.number: InFlight(late, 0.0)})

    assert not surplus(run(3), late)
    r = run(2)
    assert surplus(r, late)
    trials = s.get_trials()
    assert trials[2].state == TrialState.FAIL and trials[2].user_attrs["fail_reason"] == SURPLUS
    assert not counts_toward_target(trials[2]) and late.number not in r.in_flight
    [queued] = [t for t in trials if t.state == TrialState.WAITING]  # the parameters go back to the queue
    assert queued.system_attrs["fixed_params"] == {"x": 1.5} and queued.user_attrs == {"retry_of": 7}


def test_a_trial_failed_by_another_worker_while_its_parameters_are_drawn_is_let_go(tmp_path):
    """The race a server restart made (a local run with -n 4, two workers on PostgreSQL): the heartbeat lapsed
    in the outage, the other worker failed its new trial as stale while it drew the parameters, and
    the draw's write was refused. The worker asks again instead of stopping as if the space were bad."""
    s = optuna.create_study(study_name="taken", storage=f"sqlite:///{tmp_path}/taken.db")

    def configure(trial):  # the other worker ends the trial first; the draw then writes to it
        optuna.load_study(study_name="taken", storage=f"sqlite:///{tmp_path}/taken.db").tell(
            trial.number, state=TrialState.FAIL
        )
        trial.suggest_float("x", -1, 1)

    plan = SimpleNamespace(n_trials=5, storage=None, make_sampler=lambda _seed: optuna.samplers.RandomSampler(0))
    shape = SimpleNamespace(configure=configure, forget=lambda number: None)
    r = Run(None, plan, s, Heartbeat(None, 0), None, shape, 0, scan=Scan(0.0, 0, [], 5, 0))
    assert ask(r) is None  # not a UserError: nothing is wrong with the space
    assert not r.in_flight and r.told == 0
    assert [t.state for t in s.get_trials()] == [TrialState.FAIL]


# -- clusters: Ray, SLURM through submitit -------------------------------------------------------


def test_ray_runs_trials_side_by_side_and_they_report_their_steps(tmp_path):
    args = ("steps=4", "step_seconds=0.2", "hydra.sweeper.study_name=ray")
    ray = (
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
    )
    res = sweep(tmp_path, *args, *ray, "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=3", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    trials = study(tmp_path, "ray").trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) and len(trials) == 3
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in trials)
    assert trials[1].datetime_start < trials[0].datetime_complete  # two at a time


def test_a_killed_sweep_on_submitit_is_recovered_by_heartbeat(tmp_path):
    args = (*LONG, *BEAT, "hydra/launcher=submitit_local", "hydra.sweeper.n_trials=1")
    proc = start(tmp_path, *args)
    wait_running(tmp_path, "long", 0, proc)
    subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)  # the job, then its sweeper
    proc.send_signal(signal.SIGKILL)
    finish(proc, 30)
    time.sleep(4)  # past the grace period: trial 0's heartbeat has stopped
    res = sweep(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    trials = study(tmp_path, "long").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "stale" and trials[1].params == trials[0].params


def test_ray_jobs_get_a_storage_password_through_their_runtime_environment(monkeypatch):
    """Ray tasks on other nodes do not inherit the sweeper's environment: the URL that must stay out
    of the jobs' files travels in the runtime environment ray.init gives every task."""
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert ray_init_options({"num_cpus": 2}) == {"num_cpus": 2}
    monkeypatch.setenv(STORAGE_ENV, "postgresql://u:secret@db/x")
    options = ray_init_options({"num_cpus": 2, "runtime_env": {"env_vars": {"A": "1"}, "pip": ["x"]}})
    assert options["runtime_env"] == {"env_vars": {"A": "1", STORAGE_ENV: "postgresql://u:secret@db/x"}, "pip": ["x"]}
    assert options["num_cpus"] == 2
