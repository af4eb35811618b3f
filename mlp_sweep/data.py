"""Load a data set once per process, split it, standardize (and optionally whiten) it and keep it on
the device."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import pickle
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError

log = logging.getLogger(__name__)

PREPARED = "cifar10_uint8.npz"  # the project's own cache, same format as shared/cifar10
ARCHIVE = "cifar-10-python.tar.gz"
EXTRACTED = "cifar-10-batches-py"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
DIGITS_TEST = 360  # fixed, stratified held-out test set for digits (20 %)


@dataclass(frozen=True)
class Raw:
    """A data set as stored: images NHWC uint8, labels 0..n_classes-1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    max_value: float  # brightest pixel value (255 for CIFAR-10, 16 for digits)


@dataclass(frozen=True)
class Splits:
    """Standardized NCHW float images and int64 labels, all on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor  # per channel, shape (1, C, 1, 1), raw pixel units
    std: torch.Tensor
    max_value: float
    classes: tuple[str, ...]
    whiten: str = "none"  # none | pca | zca, fitted on x_train after the standardization
    basis: torch.Tensor | None = None  # data.project: (in_features, N), the first N principal directions

    @property
    def in_features(self) -> int:
        return self.x_train[0].numel()

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def load(data: Any, size: Any, seed: int, device: torch.device | str) -> Splits:
    """Splits for a data config and a data_size config; cached per process."""
    root = str(Path(data.root).expanduser().resolve()) if data.get("root") else None
    key = (data.name, root, data.get("download"), data.get("url"), data.get("md5"))
    raw = raw_images(*key)
    n_train, n_val = _sizes(raw, int(size.train), int(size.val), data.name, data.scale_to_fit)
    whiten = str(data.get("whiten") or "none")
    eps = float(data.get("whiten_eps", 1.0)) if whiten != "none" else 0.0
    project = int(data.get("project") or 0)
    pixels = int(np.prod(raw.x_train.shape[1:]))
    if project > pixels:
        raise UserError(
            f"data.project={project} exceeds the {pixels} inputs of data={data.name}: "
            f"choose 0 (every input) up to {pixels}"
        )
    return _splits(key, n_train, n_val, int(seed), str(device), whiten, eps, project)


@functools.lru_cache(maxsize=2)
def _splits(
    key: tuple, n_train: int, n_val: int, seed: int, device: str, whiten: str, eps: float, project: int = 0
) -> Splits:
    raw = raw_images(*key)
    train_idx, val_idx = stratified_split(raw.y_train, n_train, n_val, seed)
    x_train = _to_nchw(raw.x_train[train_idx], device)
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    x_train = (x_train - mean) / std
    spectrum = _eigen(x_train.flatten(1)) if whiten != "none" or project else None
    white = _whitening(*spectrum, whiten, eps) if whiten != "none" else None
    if white is not None:
        log.info("%s whitening (eps %g) fitted on the %d training images", whiten, eps, len(x_train))
    basis = None
    if project:
        # Whitening keeps the principal directions (ZCA rotates back onto them; PCA already is them).
        vectors = spectrum[2] if whiten != "pca" else torch.eye(len(spectrum[2]), dtype=torch.float64)
        basis = vectors[:, :project].to(x_train.dtype).contiguous()
        kept = spectrum[1][:project].sum() / spectrum[1].sum()
        log.info("the MLP sees the first %d principal components (%.1f%% of the variance)", project, 100 * kept)

    def whitened(x: torch.Tensor) -> torch.Tensor:
        if white is None:
            return x
        centre, matrix = white
        return ((x.flatten(1) - centre) @ matrix).view_as(x)

    def images(x: np.ndarray) -> torch.Tensor:
        return whitened((_to_nchw(x, device) - mean) / std)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.int64, device=device)

    return Splits(
        x_train=whitened(x_train),
        y_train=labels(raw.y_train[train_idx]),
        x_val=images(raw.x_train[val_idx]),
        y_val=labels(raw.y_train[val_idx]),
        x_test=images(raw.x_test),
        y_test=labels(raw.y_test),
        mean=mean,
        std=std,
        max_value=raw.max_value,
        classes=raw.classes,
        whiten=whiten,
        basis=basis,
    )


def whitening(x: torch.Tensor, kind: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, W) such that (x - centre) @ W has covariance U diag(l / (l + eps)) U^T over the rows
    of x (eigenvalues l, eigenvectors U of x's covariance): the identity where l >> eps, while eps
    keeps the directions of little variance (noise) from being blown up.
    pca: W = U diag((l + eps)^-1/2), components by falling variance, the pixel layout is gone;
    zca: W = U diag((l + eps)^-1/2) U^T, the whitened image closest to the original (still an image).
    Computed where x is (the training device); the eigendecomposition in float64."""
    return _whitening(*_eigen(x), kind, eps)


def _eigen(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean row, eigenvalues by falling size, eigenvectors as columns; both float64) of the rows of x."""
    centre = x.mean(0)
    xc = x - centre
    cov = (xc.T @ xc).double() / max(1, len(x) - 1)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    return centre, values.flip(0).clamp_min(0), vectors.flip(1)


def _whitening(
    centre: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor, kind: str, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    matrix = vectors * (values + eps).rsqrt()
    if kind == "zca":
        matrix = matrix @ vectors.T
    return centre, matrix.to(centre.dtype)


def _to_nchw(x: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float().contiguous()


def _sizes(raw: Raw, n_train: int, n_val: int, name: str, scale_to_fit: bool) -> tuple[int, int]:
    pool = len(raw.y_train)
    if n_train + n_val <= pool:
        return n_train, n_val
    if not scale_to_fit:
        raise UserError(
            f"data_size.train + data_size.val = {n_train} + {n_val} = {n_train + n_val} exceeds "
            f"the {pool} training images of data={name}; choose at most {pool} in all "
            "(data_size=full uses 45000 + 5000)"
        )
    scale = pool / (n_train + n_val)
    new_val = max(1, round(n_val * scale))
    _say_scaled(n_train, n_val, pool, name, pool - new_val, new_val)
    return pool - new_val, new_val


@functools.lru_cache(maxsize=16)
def _say_scaled(*sizes: Any) -> None:
    """Said once a process (a sweep's trials in one process would each say it again)."""
    log.info("data_size %d + %d exceeds the %d images of %s: scaled to %d + %d", *sizes)


def stratified_split(y: np.ndarray, n_train: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train and val index arrays with class shares as in y, drawn with a seeded RNG."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    val_counts = _allocate(n_val, counts)
    train_counts = _allocate(n_train, counts - val_counts)
    train, val = [], []
    for c, n_v, n_t in zip(classes, val_counts, train_counts, strict=True):
        idx = rng.permutation(np.flatnonzero(y == c))
        val.append(idx[:n_v])
        train.append(idx[n_v : n_v + n_t])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _allocate(n: int, caps: np.ndarray) -> np.ndarray:
    """Split n into integer parts proportional to caps (largest remainder), none above its cap."""
    quota = n * caps / caps.sum()
    parts = np.floor(quota).astype(np.int64)
    extra = n - parts.sum()
    parts[np.argsort(parts - quota, kind="stable")[:extra]] += 1
    return parts


@functools.lru_cache(maxsize=2)
def raw_images(name: str, root: str | None, download: bool, url: str | None, md5: str | None) -> Raw:
    if name == "digits":
        return _digits()
    if name == "cifar10":
        return _cifar10(Path(root), download, url, md5)
    raise UserError(f"data.name={name!r} is not a known data set; choose cifar10 or digits")


def _digits() -> Raw:
    x, y = digits_table()
    x = x.reshape(-1, 8, 8, 1)  # (1797, 8, 8, 1), values 0..16
    rest, test = stratified_split(y, len(y) - DIGITS_TEST, DIGITS_TEST, seed=0)
    classes = tuple(str(c) for c in range(10))
    return Raw(x[rest], y[rest], x[test], y[test], classes, max_value=16.0)


def digits_table() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (1797 x 64 pixels, 1797 labels), uint8. Read straight from the
    table scikit-learn ships (64 pixel columns, then the label): importing sklearn.datasets takes
    about 2 s, most of a tiny run's start; load_digits() where the table is not found there."""
    spec = importlib.util.find_spec("sklearn")
    table = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if table is not None and table.is_file():
        rows = np.loadtxt(table, delimiter=",", dtype=np.uint8)
        if rows.shape == (1797, 65):
            return np.ascontiguousarray(rows[:, :64]), np.ascontiguousarray(rows[:, 64])
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.uint8), bunch.target.astype(np.uint8)


def _cifar10(root: Path, download: bool, url: str | None, md5: str | None) -> Raw:
    prepared = root / PREPARED
    if prepared.is_file():
        return read_prepared(prepared)
    for source in (root / ARCHIVE, root / EXTRACTED):
        if source.exists():
            return _convert(source, prepared)
    if not download:
        raise UserError(_missing(root, "data.download=false"))
    try:
        from torchvision.datasets.utils import download_url

        log.info("downloading %s into %s", url, root)
        download_url(url, str(root), filename=ARCHIVE, md5=md5)
    except Exception as err:  # any network or checksum failure ends in the same advice
        (root / ARCHIVE).unlink(missing_ok=True)
        raise UserError(_missing(root, f"the download failed: {err}")) from None
    return _convert(root / ARCHIVE, prepared)


def _missing(root: Path, why: str) -> str:
    return (
        f"CIFAR-10 was not found in {root} (searched for {PREPARED}, {ARCHIVE} and {EXTRACTED}/), "
        f"and {why}. Ways forward: set MLP_SWEEP_DATA_DIR (or data.root) to a directory that holds "
        f"one of those, place the official {ARCHIVE} in {root}, or run offline with data=digits."
    )


def read_prepared(path: Path) -> Raw:
    """Read and check a cifar10_uint8.npz file."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(
            f"the data file {path} is corrupt or truncated ({err}); delete it to rebuild it from the official archive"
        ) from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if (
            x.dtype != np.uint8
            or x.ndim != 4
            or x.shape[1:] != (32, 32, 3)
            or y.shape != (len(x),)
            or (y.size and int(y.max()) > 9)
        ):
            raise UserError(
                f"the data file {path} does not hold CIFAR-10 in the expected format: x_{split} "
                f"{x.dtype}{x.shape}, y_{split} {y.dtype}{y.shape} (expected uint8 (N, 32, 32, 3) "
                "and labels 0..9 of shape (N,)); delete it to rebuild it"
            )
    return Raw(**{k: v.astype(np.uint8) for k, v in arrays.items()}, classes=CIFAR10_CLASSES, max_value=255.0)


def _convert(source: Path, prepared: Path) -> Raw:
    """Read the official python-pickle batches (archive or folder) and write the prepared file."""
    try:
        if source.is_dir():
            train = [_batch(source / f"data_batch_{i}") for i in range(1, 6)]
            test = _batch(source / "test_batch")
        else:
            with tarfile.open(source, "r:gz") as tar:

                def member(name: str) -> Any:
                    f = tar.extractfile(f"{EXTRACTED}/{name}")
                    if f is None:
                        raise KeyError(name)
                    return _unpickle(f)

                train = [member(f"data_batch_{i}") for i in range(1, 6)]
                test = member("test_batch")
    except (OSError, EOFError, KeyError, ValueError, tarfile.TarError, pickle.UnpicklingError) as err:
        raise UserError(f"the CIFAR-10 archive {source} is corrupt or incomplete ({err!r})") from None
    raw = Raw(
        x_train=np.concatenate([_images(b) for b in train]),
        y_train=np.concatenate([_labels(b) for b in train]),
        x_test=_images(test),
        y_test=_labels(test),
        classes=CIFAR10_CLASSES,
        max_value=255.0,
    )
    _write_prepared(raw, prepared)
    return raw


def _batch(path: Path) -> dict:
    with open(path, "rb") as f:
        return _unpickle(f)


def _unpickle(f: Any) -> dict:
    return pickle.load(f, encoding="bytes")


def _images(batch: dict) -> np.ndarray:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _labels(batch: dict) -> np.ndarray:
    return np.asarray(batch[b"labels"], dtype=np.uint8)


def _write_prepared(raw: Raw, path: Path) -> None:
    """Write atomically, so an interrupted write never leaves a truncated cache behind."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.part")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x_train=raw.x_train, y_train=raw.y_train, x_test=raw.x_test, y_test=raw.y_test)
        os.replace(tmp, path)
        log.info("wrote %s", path)
    except OSError as err:
        log.warning("could not cache the converted data as %s (%s); converting again next time", path, err)
