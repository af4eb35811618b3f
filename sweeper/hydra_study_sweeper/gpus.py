"""One GPU per job, or a share of one: with `n_jobs` jobs side by side in local processes, each job
is handed the GPU of a free slot as `CUDA_VISIBLE_DEVICES` (so it sees only that one), and the slot
is free again when the job ends.

    hydra.sweeper.gpus: auto      # the GPUs this machine shows (default); null: hand out none; [0, 2]: those
    hydra.sweeper.trials_per_gpu: null   # jobs sharing one GPU; null: n_jobs spread evenly over the GPUs

Only launchers that start local processes of their own get slots (joblib, submitit's local one):
the basic launcher runs jobs inside the sweeper's process, where CUDA is set up once, and Ray and
SLURM place GPUs by their own resource settings.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
from typing import Any

from .compat import launcher_kind
from .errors import UserError
from .wire import VISIBLE_ENV

log = logging.getLogger(__name__)


def visible() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES where set, else what `nvidia-smi -L` lists."""
    chosen = os.environ.get(VISIBLE_ENV)
    if chosen is not None:
        ids = [d.strip() for d in chosen.split(",") if d.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in listed.splitlines() if ln.startswith("GPU "))]


def slots(gpus: Any, per_gpu: int | None, n_jobs: int, launcher: Any) -> list[str]:
    """Each slot's GPU (a GPU appears once per job it may hold); [] when jobs get no GPU of their own."""
    name = type(launcher).__name__
    local = launcher_kind(launcher) in ("joblib", "local")
    if gpus is None or (gpus == "auto" and not local):
        return []
    if gpus == "auto":
        ids = visible()
    else:
        ids = [str(g) for g in gpus]
        if not local:
            raise UserError(
                f"hydra.sweeper.gpus={list(gpus)} hands GPUs to jobs in local processes of their own, which "
                f"{name} does not start: use hydra/launcher=joblib (or submitit_local), or hydra.sweeper.gpus=null "
                "(Ray and SLURM place GPUs by their own resource settings)"
            )
    if not ids:
        return []
    share = per_gpu if per_gpu is not None else max(1, math.ceil(n_jobs / len(ids)))
    return [gpu for gpu in ids for _ in range(share)]


def check(gpus: Any, per_gpu: Any) -> list[str]:
    """What is wrong with the two settings, one line each."""
    bad = []
    listed = (
        isinstance(gpus, (list, tuple))
        and gpus
        and all(isinstance(g, (int, str)) and not isinstance(g, bool) and str(g).strip() for g in gpus)
    )
    if not (gpus is None or gpus == "auto" or listed):
        bad.append(f"hydra.sweeper.gpus={gpus!r} is not allowed: use auto, null, or a list of GPU ids such as [0, 1]")
    if per_gpu is not None and not (isinstance(per_gpu, int) and not isinstance(per_gpu, bool) and per_gpu >= 1):
        bad.append(f"hydra.sweeper.trials_per_gpu={per_gpu!r} is not allowed: use an integer >= 1, or null")
    return bad


class Slots:
    """The free and taken slots of one run."""

    def __init__(self, gpus: list[str]) -> None:
        self.gpus = gpus
        self.taken: dict[int, int] = {}  # job (its first trial) -> slot index

    def __len__(self) -> int:
        return len(self.gpus)

    def take(self, job: int) -> str | None:
        """The GPU of a free slot for this job (None when no GPUs are handed out)."""
        if not self.gpus:
            return None
        free = next(i for i in range(len(self.gpus)) if i not in self.taken.values())
        self.taken[job] = free
        return self.gpus[free]

    def free(self, job: int) -> None:
        self.taken.pop(job, None)


def say_slots(gpu_slots: tuple[str, ...], n_jobs: int) -> None:
    ids = list(dict.fromkeys(gpu_slots))
    each = len(gpu_slots) // len(ids)
    at_once = min(n_jobs, len(gpu_slots))
    fewer = f"; n_jobs={n_jobs} runs {at_once} at a time" if at_once < n_jobs else ""
    log.info(
        "GPU %s: up to %d job(s) each, every job sees only its own (%s)%s",
        ", ".join(ids),
        each,
        VISIBLE_ENV,
        fewer,
    )
