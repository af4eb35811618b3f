import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from mlp_sweep import data
from mlp_sweep.model import build
from mlp_sweep.precision import autocast
from mlp_sweep.train import Averaged, cores, evaluate, fit, keep_freed_memory, set_threads, shifted


def run(cfg):
    splits = data.load(cfg.data, cfg.data_size, cfg.trainer.seed, "cpu")
    torch.manual_seed(cfg.trainer.seed)
    model = build(splits.in_features, splits.n_classes, **cfg.model, projection=splits.basis)
    metrics = fit(
        model,
        splits,
        instantiate(cfg.optimizer, _execution_whitelist_=("torch.optim.*",)),
        cfg.trainer,
        cfg.augment,
    )
    return model, splits, metrics


def test_loss_goes_down_on_digits(cfg_of):
    _, _, m = run(cfg_of("data=digits", "trainer.epochs=8", "trainer.patience=0"))
    losses = [row["train_loss"] for row in m.history]
    assert losses[-1] < 0.5 * losses[0]
    assert m.status == "ok" and m.epochs_run == 8 and m.val_acc > 0.8


def test_ten_images_are_memorized(cfg_of):
    """The course's sanity check: a net can fit 10 training images perfectly."""
    cfg = cfg_of(
        "data=digits",
        "data_size.train=10",
        "data_size.val=10",
        "trainer.epochs=60",
        "trainer.batch_size=10",
        "trainer.patience=0",
        "optimizer.lr=3e-3",
    )
    model, splits, m = run(cfg)
    assert evaluate(model, splits.x_train, splits.y_train)[1] == 1.0
    assert m.train_acc == 1.0


def test_early_stopping_restores_the_best_epoch(cfg_of):
    # a large lr makes val accuracy wander, so the last epoch is rarely the best
    cfg = cfg_of(
        "data=digits",
        "trainer.epochs=30",
        "trainer.patience=3",
        "optimizer.lr=0.05",
        "data_size.train=300",
        "data_size.val=200",
    )
    model, splits, m = run(cfg)
    best = max(m.history, key=lambda row: row["val_acc"])
    assert m.best_epoch == best["epoch"]
    assert m.epochs_run <= m.best_epoch + 3
    assert m.val_acc == pytest.approx(best["val_acc"])
    assert evaluate(model, splits.x_val, splits.y_val)[1] == pytest.approx(best["val_acc"])


def test_divergence_stops_with_status_and_finite_metrics(cfg_of):
    cfg = cfg_of("data=digits", "optimizer=sgd", "optimizer.lr=1e8", "trainer.epochs=5")
    _, _, m = run(cfg)
    assert m.status == "diverged"
    # it stopped at the diverging epoch, which is counted but has no history row, well before epoch 5
    assert m.epochs_run == len(m.history) + 1 and m.epochs_run < 5
    assert m.best_epoch == (max(m.history, key=lambda r: r["val_acc"])["epoch"] if m.history else 0)
    assert all(math.isfinite(v) for v in (m.val_acc, m.train_acc, m.test_acc))


def test_augmented_bf16_cosine_training_runs(cfg_of):
    cfg = cfg_of(
        "data=digits",
        "augment=full",
        "trainer.precision=bf16",
        "trainer.lr_schedule=cosine",
        "trainer.warmup_epochs=1",
        "trainer.epochs=3",
        "model.norm=layer",
        "model.activation=gelu",
        "optimizer=adamw",
        "trainer.label_smoothing=0.1",
    )
    _, _, m = run(cfg)
    assert m.status == "ok" and len(m.history) == 3 and m.val_acc > 0.2


def test_same_seed_same_result(cfg_of):
    cfg = cfg_of("data=digits", "trainer.epochs=2", "augment=flip_crop")
    first = run(cfg)[2].history[-1]["val_loss"]
    assert run(cfg)[2].history[-1]["val_loss"] == first
    other = run(cfg_of("data=digits", "trainer.epochs=2", "augment=flip_crop", "trainer.seed=1"))[2]
    assert other.history[-1]["val_loss"] != first


def test_a_callback_that_says_stop_prunes_the_run_and_keeps_the_best_weights(cfg_of):
    cfg = cfg_of("data=digits", "trainer.epochs=10", "trainer.patience=0")
    seen = []

    def on_epoch(epoch, row):
        seen.append((epoch, row["val_acc"]))
        return epoch < 3

    splits = data.load(cfg.data, cfg.data_size, cfg.trainer.seed, "cpu")
    torch.manual_seed(0)
    model = build(splits.in_features, splits.n_classes, **cfg.model)
    optimizer = instantiate(cfg.optimizer, _execution_whitelist_=("torch.optim.*",))
    m = fit(model, splits, optimizer, cfg.trainer, cfg.augment, on_epoch=on_epoch)
    assert [e for e, _ in seen] == [1, 2, 3] and [row["epoch"] for row in m.history] == [1, 2, 3]
    assert m.status == "pruned" and m.epochs_run == 3 and m.epochs_planned == 10
    assert m.val_acc == pytest.approx(max(v for _, v in seen))


def test_the_average_follows_the_weights_with_its_decay():
    model = nn.Linear(3, 2)
    avg = Averaged(model, decay=0.8)
    start = model.weight.detach().clone()
    expected = start.clone()
    for t in range(40):
        with torch.no_grad():
            model.weight.add_(1.0)
        avg.update(model)
        d = min(0.8, (1 + t) / (10 + t))  # early steps forget the random start quickly
        expected = d * expected + (1 - d) * (start + t + 1)
    assert torch.allclose(avg.model.weight, expected, atol=1e-5)
    assert not torch.allclose(avg.model.weight, model.weight)
    assert not avg.model.weight.requires_grad


def test_ema_weights_are_validated_and_kept_and_are_not_the_raw_ones(cfg_of):
    common = ("data=digits", "trainer.epochs=1", "trainer.patience=0")
    raw_model, splits, _ = run(cfg_of(*common))
    ema_model, _, m = run(cfg_of(*common, "trainer.ema=0.9"))
    # both runs train the same raw weights (same seed); the EMA run keeps their average instead
    raw, kept = raw_model.state_dict(), ema_model.state_dict()
    assert any(not torch.allclose(raw[k], kept[k]) for k in raw)
    assert m.val_acc == evaluate(ema_model, splits.x_val, splits.y_val)[1] == m.history[0]["val_acc"]


def test_flip_tta_averages_the_probabilities_of_each_image_and_its_mirror():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    x, y = torch.randn(50, 3, 4, 4), torch.randint(0, 3, (50,))
    loss, acc = evaluate(model, x, y, flips=True)
    with torch.no_grad():
        probs = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    assert acc == (probs.argmax(1) == y).sum().item() / len(y)
    assert loss == pytest.approx(F.nll_loss(probs.log(), y).item(), rel=1e-5)
    assert (acc, loss) != evaluate(model, x, y)


def test_shifted_views_move_the_image_every_way_and_fill_the_border_with_zero():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5) + 1

    def moved(dy, dx):  # x moved down by dy and right by dx, zero where nothing moved in
        out = torch.zeros_like(x)
        rows, cols = slice(max(dy, 0), 5 + min(dy, 0)), slice(max(dx, 0), 5 + min(dx, 0))
        out[:, :, rows, cols] = x[:, :, max(-dy, 0) : 5 - max(dy, 0), max(-dx, 0) : 5 - max(dx, 0)]
        return out

    views = shifted(x, 2)
    expected = [moved(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    assert len(views) == 25 and torch.equal(views[0], x)
    assert all(sum(torch.equal(v, e) for e in expected) == 1 for v in views)
    assert all(any(torch.equal(v, e) for v in views) for e in expected)  # every move, once
    assert len(shifted(x, 0)) == 1 and shifted(x, 0)[0] is x


def test_shift_tta_averages_the_grid_of_views_and_their_mirror_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    x, y = torch.randn(50, 3, 4, 4), torch.randint(0, 3, (50,))
    loss, acc = evaluate(model, x, y, flips=True, shift=1)
    with torch.no_grad():
        views = [v for image in (x, x.flip(3)) for v in shifted(image, 1)]
        assert len(views) == 18
        probs = sum(model(v).softmax(1) for v in views) / 18
    assert acc == (probs.argmax(1) == y).sum().item() / len(y)
    assert loss == pytest.approx(F.nll_loss(probs.log(), y).item(), rel=1e-5)
    assert (acc, loss) != evaluate(model, x, y, flips=True)


def test_a_projected_model_counts_its_fixed_layer_as_forward_only(cfg_of):
    cfg = cfg_of("data=digits", "data.whiten=zca", "data.project=16", "trainer.epochs=4", "optimizer.lr=3e-3")
    model, splits, m = run(cfg)
    assert splits.basis.shape == (64, 16)
    trainable = sum(p.numel() for p in model.parameters())
    assert m.params == trainable == 16 * 200 + 200 + 200 * 10 + 10  # the first Linear sees 16 inputs
    assert m.fixed_params == 64 * 16
    assert m.train_tflop == pytest.approx((6 * trainable + 2 * 64 * 16) * len(splits.y_train) * 4 / 1e12)
    assert torch.equal(model[1].basis, splits.basis)  # fixed: the training left it as fitted
    assert m.status == "ok" and m.val_acc > 0.5


def test_tta_figures_are_reported_beside_the_plain_ones_only_when_asked(cfg_of):
    """Each figure is the one evaluate gives in the precision the run trained in."""
    model, splits, m = run(cfg_of("data=digits", "trainer.epochs=2", "trainer.tta=true"))
    amp = autocast(torch.device("cpu"), m.precision)
    assert m.val_acc_tta == evaluate(model, splits.x_val, splits.y_val, amp, flips=True)[1]
    assert m.test_acc_tta == evaluate(model, splits.x_test, splits.y_test, amp, flips=True)[1]
    assert m.val_acc == evaluate(model, splits.x_val, splits.y_val, amp)[1]  # the plain figure stays plain
    _, _, plain = run(cfg_of("data=digits", "trainer.epochs=2"))
    assert plain.val_acc_tta is None and plain.test_acc_tta is None
    model, splits, m = run(cfg_of("data=digits", "trainer.epochs=2", "trainer.tta=true", "trainer.tta_shift=1"))
    assert m.test_acc_tta == evaluate(model, splits.x_test, splits.y_test, amp, flips=True, shift=1)[1]
    assert m.test_acc_mirror == evaluate(model, splits.x_test, splits.y_test, amp, flips=True)[1]
    assert m.val_acc_mirror == evaluate(model, splits.x_val, splits.y_val, amp, flips=True)[1]


def test_whitened_mixed_averaged_training_learns(cfg_of):
    cfg = cfg_of(
        "data=digits",
        "data.whiten=zca",
        "augment.mixup=0.2",
        "augment.cutmix=0.5",
        "trainer.ema=0.95",
        "trainer.epochs=8",
        "trainer.patience=0",
        "optimizer.lr=3e-3",
    )
    _, _, m = run(cfg)
    assert m.status == "ok" and m.val_acc > 0.8


FAULTS = """
import resource, torch
from mlp_sweep.train import keep_freed_memory

def faults():  # a training step's pattern: the same large block allocated, written and freed
    for _ in range(10):
        torch.empty(8 << 20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.empty(8 << 20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

off = faults()
print(keep_freed_memory(), off, faults())
"""


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="page-fault counts of a Linux process")
def test_freed_blocks_are_kept_so_each_step_does_not_fault_its_memory_back_in():
    """32 MB allocated and freed 20 times: glibc's default returns it to the kernel each time
    (a page fault per 4 KiB to get it back); with keep_freed_memory it is reused. One fresh
    process measures both, glibc's default first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env, check=True)
    applied, off, on = done.stdout.split()
    if applied != "True":
        pytest.skip("this C library has no mallopt (not glibc)")
    assert int(off) > 20 * 4000  # about 8,192 faults a block
    assert int(on) < int(off) / 20


def test_the_users_own_malloc_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    keep_freed_memory.cache_clear()
    try:
        assert keep_freed_memory() is False
    finally:
        keep_freed_memory.cache_clear()


@pytest.mark.parametrize(
    "setting, env, expected",
    [
        (3, "1", 3),  # trainer.threads wins
        (0, "1", 1),
        (0, "2,1", 2),  # a nested list: the outer level's count
        (0, "many", None),  # not a number: as if unset
        (0, None, None),
    ],
)
def test_threads_follow_the_setting_then_omp_num_threads_then_the_cores(monkeypatch, setting, env, expected):
    before = torch.get_num_threads()
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    try:
        n = set_threads(setting, parallel_jobs=1)
        assert n == (expected or cores()) and torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)
