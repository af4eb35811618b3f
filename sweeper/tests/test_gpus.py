"""One GPU per job, or a share of one: what each job is handed (CUDA_VISIBLE_DEVICES), without a GPU."""

import json
import os
import stat

import pytest
from hydra_study_sweeper.errors import UserError
from hydra_study_sweeper.gpus import Slots, slots, visible

from .helpers import run_here, study, sweep


class JoblibLauncher:  # stand-ins named as the launchers the sweeper tells apart
    pass


class BasicLauncher:
    pass


class RayLauncher:
    pass


def test_the_gpus_a_machine_shows_are_spread_evenly_over_the_jobs(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible() == ["3", "5"]
    assert slots("auto", None, 4, JoblibLauncher()) == ["3", "3", "5", "5"]
    assert slots("auto", None, 3, JoblibLauncher()) == ["3", "3", "5", "5"]  # 2 per GPU: 3 fit
    assert slots("auto", 1, 4, JoblibLauncher()) == ["3", "5"]  # one each: two jobs at a time
    assert slots("auto", 3, 2, JoblibLauncher()) == ["3", "3", "3", "5", "5", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert slots("auto", None, 4, JoblibLauncher()) == []  # no GPU: nothing handed out


def test_without_cuda_visible_devices_the_gpus_come_from_nvidia_smi(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: H200 (UUID: GPU-a)'\necho 'GPU 1: H200 (UUID: GPU-b)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert visible() == ["0", "1"]
    assert slots("auto", None, 2, JoblibLauncher()) == ["0", "1"]


def test_launchers_that_run_no_local_process_per_job_get_no_slots(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert slots("auto", None, 2, BasicLauncher()) == []  # jobs run in the sweeper's process
    assert slots("auto", None, 2, RayLauncher()) == []  # Ray places GPUs itself
    assert slots(None, None, 2, JoblibLauncher()) == []  # switched off
    with pytest.raises(UserError, match=r"hydra.sweeper.gpus=\['0', '1'\].*BasicLauncher.*hydra/launcher=joblib"):
        slots(["0", "1"], None, 2, BasicLauncher())


def test_a_slot_is_free_again_when_its_job_ends():
    s = Slots(["0", "0", "1"])
    assert [s.take(10), s.take(11), s.take(12)] == ["0", "0", "1"]
    s.free(11)
    assert s.take(13) == "0"  # the freed slot, not a fourth
    assert Slots([]).take(1) is None


def gpus_of(tmp_path, name="sphere"):
    trials = study(tmp_path, name).trials
    handed = {
        t.number: json.loads((tmp_path / "sweeps" / name / str(t.number) / "results.json").read_text())["gpu"]
        for t in trials
    }
    return trials, handed


def gpu_sweep(tmp_path, *args):
    """Two joblib places; each job writes the GPU it was handed into its results.json."""
    res = sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "results=true",
        *args,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr
    return (res, *gpus_of(tmp_path))


def overlapping(a, b):
    return a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete


@pytest.mark.slow
def test_jobs_side_by_side_each_see_only_their_own_gpu(tmp_path):
    res, trials, handed = gpu_sweep(tmp_path, "hydra.sweeper.n_trials=5", "seconds=0.4", "hydra.sweeper.gpus=[4,6]")
    assert "GPU 4, 6: up to 1 job(s) each, every job sees only its own (CUDA_VISIBLE_DEVICES)" in res.stdout
    assert set(handed.values()) == {"4", "6"}
    pairs = [(a, b) for a in trials for b in trials if a.number < b.number and overlapping(a, b)]
    assert pairs, "no two trials ran at the same time"
    assert all(handed[a.number] != handed[b.number] for a, b in pairs)  # never two on one GPU


@pytest.mark.slow
def test_fewer_gpu_slots_than_n_jobs_run_fewer_jobs_at_once(tmp_path):
    gpus = ("hydra.sweeper.gpus=[2]", "hydra.sweeper.trials_per_gpu=1")
    res, trials, handed = gpu_sweep(tmp_path, "hydra.sweeper.n_trials=3", "seconds=0.3", *gpus)
    assert "n_jobs=2 runs 1 at a time" in res.stdout
    assert set(handed.values()) == {"2"}
    assert not any(overlapping(a, b) for a in trials for b in trials if a.number < b.number)


def test_bad_gpu_settings_are_refused_before_anything_runs(tmp_path):
    res = run_here(tmp_path, "hydra.sweeper.gpus=many", "hydra.sweeper.trials_per_gpu=0")
    assert res.returncode == 2
    assert "hydra.sweeper.gpus='many' is not allowed: use auto, null, or a list of GPU ids" in res.stderr
    assert "hydra.sweeper.trials_per_gpu=0 is not allowed: use an integer >= 1, or null" in res.stderr
    assert not (tmp_path / "sphere.db").exists()
