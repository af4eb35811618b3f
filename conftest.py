"""For both test folders: each pytest-xdist worker trains with its share of the cores' threads.

Two workers on a 2-core machine, each training with as many torch threads as the machine has
cores (and each sweep it starts doing the same), made OpenMP's threads wait on each other: one
stack-versus-alone test took 21 s beside the other worker against 2 s alone. So each worker sets
OMP_NUM_THREADS to its share before torch is imported; every process it starts inherits it, and the
app's thread count follows it (mlp_sweep.train.set_threads). The workers are not pinned to cores:
a pinned worker kept its tests' many processes (six sweep workers on one study, a joblib pool) on
one core while the other worker slept in a test that waits for a timeout."""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or int(count) < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, cpus // int(count)))
