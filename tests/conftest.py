"""Shared fixtures: composed configs, the real CIFAR-10 file when present, tiny official archives."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def real_cifar_dir() -> Path | None:
    """Where the full CIFAR-10 file is: $MLP_SWEEP_DATA_DIR, else ../shared/cifar10 beside the checkout."""
    for candidate in (os.environ.get("MLP_SWEEP_DATA_DIR"), ROOT.parent / "shared" / "cifar10"):
        if candidate and (Path(candidate) / "cifar10_uint8.npz").is_file():
            return Path(candidate)
    return None


@pytest.fixture
def cifar_dir() -> Path:
    found = real_cifar_dir()
    if found is None:
        pytest.skip("the CIFAR-10 file is not here (set MLP_SWEEP_DATA_DIR or place ../shared/cifar10)")
    return found


@pytest.fixture
def cfg_of():
    """compose(overrides) with the project's config, as Hydra would build it for a run."""

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF)):
            return compose(config_name="config", overrides=list(overrides))

    return make


def tiny_batches(per_batch: int = 20, seed: int = 0) -> tuple[list[dict], dict]:
    """Official-format CIFAR-10 batches (bytes keys, CHW rows of 3072 uint8) with random content."""
    rng = np.random.default_rng(seed)

    def batch() -> dict:
        return {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
        }

    return [batch() for _ in range(5)], batch()


def write_archive(path: Path, per_batch: int = 20) -> tuple[list[dict], dict]:
    """A cifar-10-python.tar.gz laid out like the official one; returns its batches."""
    train, test = tiny_batches(per_batch)
    with tarfile.open(path, "w:gz") as tar:
        named = [(f"data_batch_{i + 1}", b) for i, b in enumerate(train)] + [("test_batch", test)]
        named.append(("batches.meta", {b"label_names": [b"airplane"] * 10}))
        for name, obj in named:
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return train, test


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m mlp_sweep ARGS` in a subprocess, as a user would type it."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)  # users see Hydra's short errors, so do the tests
    return subprocess.run(
        [sys.executable, "-m", "mlp_sweep", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
