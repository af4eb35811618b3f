"""optuna-dashboard serves a study made by a short sweep, read back through its HTTP API."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .sweeps import sweep_here

pytestmark = pytest.mark.slow  # a sweep, then the dashboard's server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_dashboard_reads_a_sweeps_study(tmp_path):
    beside = Path(sys.executable).parent / "optuna-dashboard"  # the venv's, even when it is not on PATH
    exe = str(beside) if beside.exists() else shutil.which("optuna-dashboard")
    assert exe, "optuna-dashboard is a dependency of the project and must be installed"
    res = sweep_here(tmp_path, "data=digits", "trainer.epochs=2", "hydra.sweeper.n_trials=3")
    assert res.returncode == 0, res.stderr
    port = free_port()
    # the README's command
    command = [exe, f"sqlite:///{tmp_path}/outputs/optuna.db", "--artifact-dir", f"{tmp_path}/outputs/artifacts"]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                summaries = get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        [summary] = summaries
        assert summary["study_name"] == "tpe-digits-20k"
        detail = get(f"{base}/api/studies/{summary['study_id']}")
        trials = detail["trials"]
        assert [t["number"] for t in trials] == [0, 1, 2]
        assert all(t["state"] == "Complete" and len(t["values"]) == 1 for t in trials)
        assert {p["name"] for p in trials[0]["params"]} >= {"optimizer.lr", "model.hidden_size"}
        assert detail["objective_names"] == ["val_acc"]  # not "Objective 0"
        for trial in trials:  # per-epoch values, and the trial's files
            assert [v["step"] for v in trial["intermediate_values"]] == [1, 2]
            assert {a["filename"] for a in trial["artifacts"]} == {"curves.png", "metrics.json", "config.yaml"}
        [artifact] = [a for a in trials[0]["artifacts"] if a["filename"] == "metrics.json"]
        url = f"{base}/artifacts/{summary['study_id']}/{trials[0]['trial_id']}/{artifact['artifact_id']}"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert json.loads(r.read())["val_acc"] == trials[0]["values"][0]
    finally:
        server.terminate()
        server.wait(timeout=10)
