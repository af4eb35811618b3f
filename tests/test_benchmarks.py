"""Every script in benchmarks/ still runs: each in its --tiny mode (seconds, figures not checked).

A benchmark whose code drifted from the project's (an argument that was renamed, a preset that
moved) fails here, not on the day someone wants its figures. A new script without --tiny fails too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT, real_cifar_dir

SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))  # _sweep.py: shared
ON_CIFAR = {"epoch_throughput"}  # reads the real file: the others' tiny modes use the bundled digits


def test_every_benchmark_is_listed():
    assert {p.stem for p in SCRIPTS} >= {"epoch_throughput", "sweep_overhead", "parallel", "pruning", "ablation"}


@pytest.mark.slow  # each script in a process of its own, 10 to 45 s
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_runs_in_its_tiny_mode(script, tmp_path):
    env = {**os.environ}
    if script.stem in ON_CIFAR:
        found = real_cifar_dir()
        if found is None:
            pytest.skip("the CIFAR-10 file is not here (set MLP_SWEEP_DATA_DIR or place ../shared/cifar10)")
        env["MLP_SWEEP_DATA_DIR"] = str(found)
    done = subprocess.run(
        [sys.executable, str(script), "--tiny"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    # a figure with its unit ("12.5 s", "71 %", "1.3x"), not a count that happens to precede a word ("2 seeds")
    assert re.search(r"\d+(\.\d+)?\s*(s|%|x|trials/h|images|GFLOP/s|epochs)(?![\w/])", done.stdout), done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert not (tmp_path / "outputs").exists()  # tiny runs leave nothing where they are started
