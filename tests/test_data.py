import http.server
import threading
from functools import partial

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mlp_sweep import data
from mlp_sweep.errors import UserError

from .conftest import md5, write_archive


def cifar_cfg(root, **extra):
    return OmegaConf.create(
        {
            "name": "cifar10",
            "root": str(root),
            "download": False,
            "url": None,
            "md5": None,
            "scale_to_fit": False,
            **extra,
        }
    )


def size(train, val):
    return OmegaConf.create({"train": train, "val": val})


@pytest.fixture(autouse=True)
def fresh_cache():
    data.raw_images.cache_clear()
    data._splits.cache_clear()


def test_split_is_stratified_disjoint_and_seeded():
    y = np.repeat(np.arange(10), [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])
    train, val = data.stratified_split(y, 2000, 500, seed=1)
    assert len(train) == 2000 and len(val) == 500
    assert not set(train) & set(val)
    shares = np.bincount(y, minlength=10) / len(y)
    for idx in (train, val):
        got = np.bincount(y[idx], minlength=10) / len(idx)
        assert np.abs(got - shares).max() <= 1 / len(idx) + 1e-9
    again = data.stratified_split(y, 2000, 500, seed=1)
    other = data.stratified_split(y, 2000, 500, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again, strict=True))
    assert not np.array_equal(np.sort(val), np.sort(other[1]))


def test_split_can_take_everything():
    y = np.repeat(np.arange(3), [5, 7, 9])
    train, val = data.stratified_split(y, 15, 6, seed=0)
    assert sorted(np.concatenate([train, val])) == list(range(21))


def test_digits_standardized_with_train_statistics_only():
    cfg = OmegaConf.load("conf/data/digits.yaml")
    s = data.load(cfg, size(500, 200), seed=0, device="cpu")
    assert s.x_train.shape == (500, 1, 8, 8) and s.x_val.shape == (200, 1, 8, 8)
    assert s.x_test.shape == (360, 1, 8, 8) and s.in_features == 64 and s.n_classes == 10
    assert abs(s.x_train.mean().item()) < 1e-4
    assert abs(s.x_train.std().item() - 1) < 1e-3
    assert abs(s.x_val.mean().item()) > 1e-4  # val is scaled with the train statistics, not its own
    assert s.y_train.dtype == torch.int64


def test_digits_scales_an_oversized_request_keeping_the_ratio():
    cfg = OmegaConf.load("conf/data/digits.yaml")
    s = data.load(cfg, size(20000, 4000), seed=0, device="cpu")
    assert len(s.y_train) + len(s.y_val) == 1797 - 360
    assert len(s.y_train) / len(s.y_val) == pytest.approx(5, rel=0.02)


def test_cifar_request_beyond_the_data_names_the_keys(tmp_path):
    write_archive(tmp_path / data.ARCHIVE)
    with pytest.raises(UserError, match=r"data_size.train \+ data_size.val = 90 \+ 20 = 110 exceeds the 100"):
        data.load(cifar_cfg(tmp_path), size(90, 20), seed=0, device="cpu")


def test_archive_is_converted_once_into_the_prepared_file(tmp_path):
    train, test = write_archive(tmp_path / data.ARCHIVE)
    s = data.load(cifar_cfg(tmp_path), size(60, 40), seed=0, device="cpu")
    assert s.x_train.shape == (60, 3, 32, 32) and len(s.y_test) == 20
    raw = data.read_prepared(tmp_path / data.PREPARED)
    assert raw.x_train.shape == (100, 32, 32, 3) and raw.x_train.dtype == np.uint8
    first = train[0][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(raw.x_train[0], first)  # CHW rows became HWC images
    assert list(raw.y_test) == test[b"labels"]
    (tmp_path / data.ARCHIVE).unlink()
    data.raw_images.cache_clear()
    assert data.load(cifar_cfg(tmp_path), size(60, 40), seed=0, device="cpu").x_train.shape[0] == 60


def test_extracted_folder_is_accepted(tmp_path):
    import tarfile

    write_archive(tmp_path / "a.tar.gz")
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (tmp_path / "a.tar.gz").unlink()
    s = data.load(cifar_cfg(tmp_path), size(50, 10), seed=0, device="cpu")
    assert len(s.y_train) == 50 and (tmp_path / data.PREPARED).is_file()


@pytest.mark.parametrize("content", [b"not a zip at all", None])
def test_corrupt_or_truncated_prepared_file_names_the_file(tmp_path, content):
    path = tmp_path / data.PREPARED
    if content is None:  # a real npz cut short
        write_archive(tmp_path / data.ARCHIVE)
        data.load(cifar_cfg(tmp_path), size(50, 10), seed=0, device="cpu")
        path.write_bytes(path.read_bytes()[:5000])
        data.raw_images.cache_clear()
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=f"{path}.*corrupt or truncated"):
        data.load(cifar_cfg(tmp_path), size(50, 10), seed=0, device="cpu")


def test_wrong_shapes_in_prepared_file_are_rejected(tmp_path):
    path = tmp_path / data.PREPARED
    z = np.zeros((4, 32, 32, 3), np.uint8)
    np.savez(path, x_train=z[..., 0], y_train=np.zeros(4, np.uint8), x_test=z, y_test=np.zeros(4, np.uint8))
    with pytest.raises(UserError, match="expected format"):
        data.load(cifar_cfg(tmp_path), size(2, 1), seed=0, device="cpu")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over a folder holding a tiny official-format archive."""
    site = tmp_path / "site"
    site.mkdir()
    write_archive(site / data.ARCHIVE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{data.ARCHIVE}", md5(site / data.ARCHIVE)
    server.shutdown()


def test_download_checks_and_converts(tmp_path, served):
    url, checksum = served
    root = tmp_path / "empty"
    s = data.load(cifar_cfg(root, download=True, url=url, md5=checksum), size(50, 10), seed=0, device="cpu")
    assert len(s.y_train) == 50
    assert (root / data.PREPARED).is_file()


def test_failed_download_says_where_it_looked_and_what_to_do(tmp_path, served):
    url, _ = served
    root = tmp_path / "empty"
    cfg = cifar_cfg(root, download=True, url=url, md5="0" * 32)  # checksum mismatch
    with pytest.raises(UserError) as err:
        data.load(cfg, size(50, 10), seed=0, device="cpu")
    message = str(err.value)
    assert str(root) in message and "download failed" in message
    assert "MLP_SWEEP_DATA_DIR" in message and "data=digits" in message
    assert not (root / data.ARCHIVE).exists()  # no half-checked archive left behind


def test_offline_without_download_says_what_to_do(tmp_path):
    with pytest.raises(UserError, match="data.download=false.*MLP_SWEEP_DATA_DIR"):
        data.load(cifar_cfg(tmp_path), size(50, 10), seed=0, device="cpu")


def test_loaded_once_per_process(tmp_path):
    write_archive(tmp_path / data.ARCHIVE)
    cfg = cifar_cfg(tmp_path)
    a = data.load(cfg, size(50, 10), seed=0, device="cpu")
    b = data.load(cfg, size(50, 10), seed=0, device="cpu")
    assert a is b and data.raw_images.cache_info().misses == 1


def test_real_cifar10_file(cifar_dir):
    raw = data.read_prepared(cifar_dir / data.PREPARED)
    assert raw.x_train.shape == (50000, 32, 32, 3) and raw.x_test.shape == (10000, 32, 32, 3)
    assert list(raw.y_train[:10]) == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert np.bincount(raw.y_train).tolist() == [5000] * 10


def covariance(x):
    xc = x.flatten(1).double()
    xc = xc - xc.mean(0)
    return xc.T @ xc / (len(xc) - 1)


@pytest.mark.parametrize("kind", ["pca", "zca"])
def test_whitening_gives_an_identity_covariance(kind):
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(12, 12, generator=g) * torch.logspace(-1, 1, 12)  # correlated, scales 0.1 to 10
    x = torch.randn(4000, 12, generator=g) @ mixing + 3
    centre, w = data.whitening(x, kind, eps=1e-6)
    white = (x - centre) @ w
    assert torch.allclose(covariance(white), torch.eye(12, dtype=torch.float64), atol=2e-3)
    if kind == "zca":  # symmetric: the whitened data closest to the original
        assert torch.allclose(w, w.T, atol=1e-4)
    else:  # components by falling variance: column k is u_k / sqrt(l_k), so its norm grows with k
        norms = w.norm(dim=0)
        assert torch.all(norms[1:] >= norms[:-1] * (1 - 1e-4)) and norms[-1] > 10 * norms[0]
    # eps shrinks the directions of small variance: never blown up beyond the variance they have
    _, shrunk = data.whitening(x, kind, eps=1.0)
    assert torch.linalg.eigvalsh(covariance((x - centre) @ shrunk)).max() < 1


@pytest.mark.parametrize("kind", ["pca", "zca"])
def test_whitening_is_fitted_on_the_training_split_once_per_process(kind):
    cfg = OmegaConf.load("conf/data/digits.yaml")
    plain = data.load(cfg, size(1000, 200), seed=0, device="cpu")
    cfg.whiten, cfg.whiten_eps = kind, 1e-4
    s = data.load(cfg, size(1000, 200), seed=0, device="cpu")
    assert s.whiten == kind and s.x_train.shape == plain.x_train.shape
    # the training images: unit variance and uncorrelated along every direction in which they vary
    # (some digits pixels never do: they stay 0); no direction ends with more variance than 1
    values, vectors = torch.linalg.eigh(covariance(plain.x_train))
    k = int((values > 1e-2).sum())
    assert k > 40
    if kind == "zca":  # pixel space: look along the directions in which the pixels vary
        varying = vectors[:, values > 1e-2]
        block = varying.T @ covariance(s.x_train) @ varying
    else:  # components, the varying ones first
        block = covariance(s.x_train)[:k, :k]
    assert torch.allclose(block, torch.eye(k, dtype=torch.float64), atol=0.02)
    assert torch.linalg.eigvalsh(covariance(s.x_train)).max() < 1.001
    # val and test go through the transform fitted on train, not their own
    centre, w = data.whitening(plain.x_train.flatten(1), kind, 1e-4)
    for mine, before in ((s.x_val, plain.x_val), (s.x_test, plain.x_test)):
        assert torch.allclose(mine.flatten(1), (before.flatten(1) - centre) @ w, atol=1e-4)
    assert not torch.allclose(covariance(s.x_val), torch.eye(64, dtype=torch.float64), atol=0.05)
    assert data.load(cfg, size(1000, 200), seed=0, device="cpu") is s  # cached: no refit for the next trial
    cfg.whiten_eps = 1e-3
    assert data.load(cfg, size(1000, 200), seed=0, device="cpu") is not s


@pytest.mark.parametrize("kind", ["none", "zca"])
def test_project_keeps_the_principal_directions_of_the_training_images(kind):
    cfg = OmegaConf.load("conf/data/digits.yaml")
    cfg.whiten, cfg.project = kind, 12
    s = data.load(cfg, size(1000, 200), seed=0, device="cpu")
    assert s.basis.shape == (64, 12) and s.x_train.shape[1:] == (1, 8, 8)  # the images stay images
    assert torch.allclose(s.basis.T @ s.basis, torch.eye(12), atol=1e-5)  # orthonormal directions
    variances = torch.diagonal(s.basis.double().T @ covariance(s.x_train) @ s.basis.double())
    assert torch.all(variances[1:] <= variances[:-1] + 1e-6)  # by falling variance
    values = torch.linalg.eigvalsh(covariance(s.x_train)).flip(0)
    assert torch.allclose(variances, values[:12], rtol=1e-3, atol=1e-5)  # the largest there are


def test_project_beyond_the_inputs_is_refused():
    cfg = OmegaConf.load("conf/data/digits.yaml")
    cfg.project = 65
    with pytest.raises(UserError, match=r"data.project=65 exceeds the 64 inputs of data=digits: choose 0"):
        data.load(cfg, size(1000, 200), seed=0, device="cpu")


def test_digits_read_from_scikit_learns_table_are_what_load_digits_gives():
    from sklearn.datasets import load_digits

    from mlp_sweep.data import digits_table

    x, y = digits_table()
    bunch = load_digits()
    assert x.dtype == y.dtype == np.uint8
    np.testing.assert_array_equal(x, bunch.data.astype(np.uint8))
    np.testing.assert_array_equal(y, bunch.target.astype(np.uint8))
