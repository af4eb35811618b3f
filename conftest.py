"""For both test folders: each pytest-xdist worker keeps to its own share of the cores.

Two workers on a 2-core machine, each training with as many torch threads as the machine has
cores (and each sweep it starts doing the same), made OpenMP's threads wait on each other: one
stack-versus-alone test took 21 s beside the other worker against 2 s alone. A worker pinned to its
share hands the pinning down to every process it starts, and the app's thread count follows the
cores it may use (mlp_sweep.train.cores)."""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cpus, index, workers = sorted(os.sched_getaffinity(0)), int(worker.removeprefix("gw")), int(count)
    if workers < 2:
        return
    # as many workers as cores or fewer: each its share; more: each one core, taken in turn
    os.sched_setaffinity(0, cpus[index::workers] if workers <= len(cpus) else [cpus[index % len(cpus)]])
