"""A hung trial is stopped, its processes with it; a trial whose joblib worker the kernel kills
fails as killed, the trials caught up with it are queued again, and the sweep reaches its target.
Real processes and signals, through Hydra's joblib launcher."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra_study_sweeper.recovery import counts_toward_target
from optuna.trial import TrialState

from .helpers import finish, no_running, start, study, sweep, wait_until

pytestmark = pytest.mark.slow

JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def job_pid(tmp_path, number: int) -> int | None:
    path = tmp_path / "sweeps" / "sphere" / str(number) / ".sweeper-job.json"
    try:
        return json.loads(path.read_text())["pid"]
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("limit", ["hydra.sweeper.stall_timeout=3", "hydra.sweeper.trial_timeout=2"])
def test_a_hung_trial_is_stopped_with_its_children_and_the_sweep_goes_on(tmp_path, limit):
    args = (*JOBLIB, "mode=hang_first", "steps=2", "step_seconds=0.2", "hydra.sweeper.stop_grace=2", limit)
    began = time.monotonic()
    res = sweep(tmp_path, *args, "hydra.sweeper.n_trials=4", timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert time.monotonic() - began < 120  # not the 600 s the hung job would take
    trials = study(tmp_path).trials
    assert no_running(trials)
    hung = trials[0]
    assert hung.state == TrialState.FAIL
    reason = hung.user_attrs["fail_reason"]
    if "stall" in limit:
        assert reason.startswith("hung: no step reported for ") and "(hydra.sweeper.stall_timeout=3 s)" in reason
    else:
        assert reason.startswith("hung: still running ") and "past hydra.sweeper.trial_timeout=2 s" in reason
    assert reason.endswith("its processes were stopped")
    assert hung.user_attrs["last_value"] == 5.0  # the one step it reported
    assert counts_toward_target(hung)  # a trial that hangs would hang again: it is not rerun
    assert sum(map(counts_toward_target, trials)) == 4
    # the others completed; one still running in joblib's pool when it stopped the hung job's worker
    # (the pool stops them all) is queued again
    others = trials[1:]
    assert all(t.state == TrialState.COMPLETE or t.user_attrs["fail_reason"] == "interrupted" for t in others)
    assert sum(t.state == TrialState.COMPLETE for t in others) == 3
    child = int((tmp_path / "sweeps" / "sphere" / "0" / "child.pid").read_text())
    wait_until(lambda: not alive(child), None, "the hung job's child still runs", timeout=15)
    assert "trial 0 hung: " in res.stdout + res.stderr


def test_a_hung_submitit_job_is_stopped_and_told_without_waiting_for_submitit_to_notice(tmp_path):
    # submitit polls its jobs: its word that the stopped job ended comes many seconds later, so the
    # trial is told a few seconds after the SIGKILL (the late word is ignored)
    args = ("hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2", "mode=hang_first", "steps=2", "step_seconds=0.2")
    res = sweep(tmp_path, *args, "hydra.sweeper.stall_timeout=4", "hydra.sweeper.n_trials=3", timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    trials = study(tmp_path).trials
    assert no_running(trials) and sum(map(counts_toward_target, trials)) == 3
    assert trials[0].user_attrs["fail_reason"].startswith("hung: no step reported for ")
    assert trials[0].user_attrs["last_value"] == 5.0
    child = int((tmp_path / "sweeps" / "sphere" / "0" / "child.pid").read_text())
    wait_until(lambda: not alive(child), None, "the hung job's child still runs", timeout=15)
    assert "Traceback" not in res.stdout + res.stderr


def test_a_trial_whose_worker_is_killed_fails_as_killed_and_the_sweep_reaches_its_target(tmp_path):
    args = (*JOBLIB, "steps=20", "step_seconds=0.25", "hydra.sweeper.n_trials=5")
    proc = start(tmp_path, *args)
    wait_until(lambda: job_pid(tmp_path, 1) and job_pid(tmp_path, 0), proc, "trials 0 and 1 never ran", timeout=120)
    os.kill(job_pid(tmp_path, 1), signal.SIGKILL)  # as the kernel's out-of-memory killer does
    out = finish(proc, 300)
    assert proc.returncode == 0, out
    trials = study(tmp_path).trials
    assert no_running(trials)
    killed = trials[1]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["fail_reason"] == "killed by signal 9 (out of memory?)"
    assert counts_toward_target(killed)
    assert sum(map(counts_toward_target, trials)) == 5
    # trial 0 ran beside it in joblib's pool, which stops every worker when one dies: it was queued
    # again and a later trial ran its parameters, unless it had finished first
    first = trials[0]
    if first.state == TrialState.FAIL:
        assert first.user_attrs["fail_reason"] == "interrupted"
        assert any(t.params == first.params and t.state == TrialState.COMPLETE for t in trials[2:])
        assert "trial 0 was lost when joblib stopped its worker pool" in out
    else:
        assert first.state == TrialState.COMPLETE
    assert "Traceback" not in out


def test_a_stale_job_file_naming_a_live_process_never_gets_it_signalled(tmp_path):
    """Trial numbers restart in a reused sweep folder: the file an earlier job left in folder 0 names
    a process that now belongs to someone else. The watchdog stops the real hung job, not that one."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        folder = tmp_path / "sweeps" / "sphere" / "0"
        folder.mkdir(parents=True)
        (folder / ".sweeper-job.json").write_text(json.dumps({"host": socket.gethostname(), "pid": stranger.pid}))
        args = (*JOBLIB, "mode=hang_first", "steps=2", "step_seconds=0.2", "hydra.sweeper.stall_timeout=3")
        res = sweep(tmp_path, *args, "hydra.sweeper.stop_grace=2", "hydra.sweeper.n_trials=3", timeout=240)
        assert res.returncode == 0, res.stdout + res.stderr
        assert stranger.poll() is None, "the process named by the stale file was signalled"
        trials = study(tmp_path).trials
        assert trials[0].user_attrs["fail_reason"].startswith("hung: no step reported for ")
        assert job_pid(tmp_path, 0) != stranger.pid  # the real job wrote its own file
        child = int((folder / "child.pid").read_text())
        wait_until(lambda: not alive(child), None, "the real hung job's child still runs", timeout=15)
    finally:
        stranger.kill()
        stranger.wait()


def test_a_hung_job_in_a_thread_of_the_sweeper_is_said_and_never_signalled(tmp_path):
    """A launcher that runs jobs in threads (the test app's `threads`) runs them inside the sweeper's
    process: a hung one is found and its trial failed, but the sweeper signals neither itself nor its
    parent."""
    args = ("hydra/launcher=threads", "mode=hang_first", "steps=2", "step_seconds=0.2", "hydra.sweeper.stall_timeout=3")
    plugin = str(Path(__file__).parent / "apps" / "threads")  # where Hydra finds the `threads` launcher
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [plugin, os.environ.get("PYTHONPATH")]))}
    proc = start(tmp_path, *args, "hydra.sweeper.n_trials=3", env=env)  # to a file: the hung child keeps pipes
    out = finish(proc, 240)
    try:
        assert proc.returncode == 0, out  # a SIGTERM to itself would end it with -15
        assert "it runs inside this sweeper's process" in out and "cannot be stopped from this worker" in out
        trials = study(tmp_path).trials
        assert trials[0].user_attrs["fail_reason"].startswith("hung: no step reported for ")
        assert sum(map(counts_toward_target, trials)) == 3 and no_running(trials)
    finally:  # the hung thread's child outlives the sweep: nobody could stop it
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((tmp_path / "sweeps" / "sphere" / "0" / "child.pid").read_text()), signal.SIGKILL)


def test_trials_that_all_hang_stop_the_sweep_with_what_to_change(tmp_path):
    """A limit shorter than every trial's silence would use up the study's target with nothing to
    show: after two hung trials and nothing else, no further one starts, and the message names the
    settings to raise. A trial lost with joblib's pool between them (trial 1: stopping hung trial 0's
    worker stops the pool before trial 1's own limit) is queued again, not counted as one that ended:
    counted, it hid the rule, and hung trials went on until max_failure_rate stopped the sweep."""
    limits = ("hydra.sweeper.stall_timeout=2", "hydra.sweeper.start_timeout=8", "hydra.sweeper.stop_grace=1")
    args = (*JOBLIB, "mode=hang_first", "seconds=12", *limits, "hydra.sweeper.n_trials=10")
    res = sweep(tmp_path, *args, timeout=240)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "trials this run ended were stopped as hung" in out and "hydra.sweeper.start_timeout" in out
    assert "trial 1 was lost when joblib stopped its worker pool" in out
    trials = study(tmp_path).trials
    assert trials[1].user_attrs["fail_reason"] == "interrupted" and not counts_toward_target(trials[1])
    assert trials[0].user_attrs["fail_reason"].startswith("hung: no step reported for ")
    later = [t for t in trials[2:] if counts_toward_target(t)]
    assert 2 <= 1 + len(later) <= 3  # not the whole target of 10
    assert all(t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("hung: no first step within ")
               for t in later)  # fmt: skip
