"""Training loop: seeded batches of in-memory tensors, mixup/cutmix, a moving average of the weights,
early stopping, divergence guard, flip test-time augmentation."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Batcher, Mixer
from .data import Splits
from .model import Projection
from .precision import autocast as precision_autocast
from .precision import resolve as resolve_precision

log = logging.getLogger(__name__)
epoch_log = logging.getLogger("mlp_sweep.epochs")  # one line an epoch; a sweep keeps them in each trial's log file

EVAL_BATCH = 4096  # images per forward pass when evaluating


@dataclass
class Metrics:
    train_acc: float  # of the best epoch's weights, on the un-augmented training split
    val_acc: float
    test_acc: float
    val_loss: float
    best_epoch: int  # 1-based; 0 = no epoch finished (diverged at once)
    epochs_run: int
    epochs_planned: int  # trainer.epochs: what pruning or early stopping saved is the difference
    status: str  # "ok" | "diverged" | "pruned"
    seconds: float  # whole fit, evaluation included
    images_per_second: float  # training images per second of training steps
    params: int  # trainable parameters of the model
    train_images: int
    train_tflop: float  # the training budget: (6 x params + 2 x fixed_params) x train_images x epochs_run, 1e12 FLOP
    history: list[dict[str, float]] = field(default_factory=list)
    val_acc_tta: float | None = None  # with trainer.tta: each image and its mirror image (and shifts), averaged
    test_acc_tta: float | None = None
    fixed_params: int = 0  # weights that are applied, never trained (data.project): forward only, 2 FLOP each
    val_acc_mirror: float | None = None  # with trainer.tta_shift: the image and its mirror image only
    test_acc_mirror: float | None = None
    precision: str = "fp32"  # what the products ran in: fp32 or bf16 (trainer.precision=auto resolved)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cores() -> int:
    """The cores this process may use (a SLURM allocation or `taskset` give fewer than the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Have glibc keep large freed blocks for reuse instead of returning them to the kernel.

    A training step allocates and frees the same large tensors every time (bf16 copies of the
    weights under autocast, their gradients). glibc hands blocks above its mmap threshold back to
    the kernel on free, so each step pays a page fault per 4 KiB to get them again: measured on a
    stack of 8 members in bf16, 5,559 faults and 23.1 ms a step, against 10 faults and 17.6 ms with
    this. Peak memory is unchanged; memory freed after a peak stays with the process. Skipped where
    the C library has no mallopt (not glibc) or where the user set MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_ themselves. True when applied."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


def set_threads(threads: int, parallel_jobs: int = 1) -> int:
    """Torch CPU threads: as asked, or the cores shared out among parallel jobs."""
    n = threads or max(1, cores() // max(1, parallel_jobs))
    torch.set_num_threads(n)
    return n


def fit(
    model: nn.Module,
    splits: Splits,
    make_optimizer: Callable[..., torch.optim.Optimizer],
    trainer: Any,
    augmentation: Any,
    on_epoch: Callable[[int, dict[str, float]], bool] | None = None,
) -> Metrics:
    """Train, keep the best epoch by val accuracy, restore it, and measure train/val/test.
    `on_epoch(epoch, row) -> keep going?` hears of every epoch (a sweep's pruning channel)."""
    start, device = time.perf_counter(), splits.x_train.device
    keep_freed_memory()
    model.to(device)
    optimizer = make_optimizer(model.parameters())
    schedule = lr_schedule(optimizer, trainer, math.ceil(len(splits.y_train) / trainer.batch_size))
    precision = resolve_precision(trainer.precision, device)[0]
    autocast = precision_autocast(device, precision)
    g, batch, mixer = data_stream(splits, trainer, augmentation)
    ema = Averaged(model, float(trainer.ema)) if trainer.get("ema") is not None else None
    judged = ema.model if ema else model  # what is validated, kept as the best epoch and saved

    best_acc, best_epoch, best_state = -1.0, 0, _snapshot(judged)
    status, history, train_seconds = "ok", [], 0.0
    for epoch in range(1, int(trainer.epochs) + 1):
        t0 = time.perf_counter()
        train_loss, train_acc = _train_epoch(
            model, optimizer, schedule, ema, batch, mixer, splits, trainer, autocast, g
        )
        epoch_train_seconds = time.perf_counter() - t0
        train_seconds += epoch_train_seconds
        if not math.isfinite(train_loss):
            status = "diverged"
            log.warning("epoch %d: training loss is %s; stopping, keeping epoch %d", epoch, train_loss, best_epoch)
            break
        row = _epoch_row(epoch, train_loss, train_acc, judged, splits, autocast, t0, epoch_train_seconds)
        history.append(row)
        improved = row["val_acc"] > best_acc
        if improved:
            best_acc, best_epoch, best_state = row["val_acc"], epoch, _snapshot(judged)
        say_epoch(epoch_log, row, int(trainer.epochs), improved)
        if on_epoch is not None and not on_epoch(epoch, row):
            status = "pruned"
            break
        if trainer.patience and epoch - best_epoch >= trainer.patience:
            epoch_log.info("early stop: no better val_acc for %d epochs; best epoch %d", trainer.patience, best_epoch)
            break

    model.load_state_dict(best_state)  # with trainer.ema, the averaged weights
    images_seen = len(splits.y_train) * (len(history) + (status == "diverged"))  # every epoch that trained
    return measure(model, splits, trainer, autocast, history, status, best_epoch, start, images_seen, train_seconds)


def _epoch_row(
    epoch: int,
    train_loss: float,
    train_acc: float,
    judged: nn.Module,
    splits: Splits,
    autocast: Any,
    t0: float,
    train_seconds: float,
) -> dict[str, float]:
    """An epoch's line of the history: its training figures, validation, and how long it took."""
    val_loss, val_acc = evaluate(judged, splits.x_val, splits.y_val, autocast)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "seconds": time.perf_counter() - t0,
        "images_per_second": len(splits.y_train) / train_seconds,
    }


def data_stream(splits: Splits, trainer: Any, augmentation: Any) -> tuple[torch.Generator, Batcher, Mixer]:
    """What draws the training batches: the generator seeded by trainer.seed (batch order and
    augmentation), the batcher (augmentation) and the mixer (mixup, cutmix)."""
    g = torch.Generator(device=splits.x_train.device).manual_seed(int(trainer.seed))
    options = dict(augmentation)
    mixer = Mixer(options.pop("mixup", 0.0), options.pop("cutmix", 0.0), splits.n_classes, int(trainer.seed))
    batch = Batcher(splits.x_train, mean=splits.mean, std=splits.std, max_value=splits.max_value, **options)
    return g, batch, mixer


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    ema: Averaged | None,
    batch: Batcher,
    mixer: Mixer,
    splits: Splits,
    trainer: Any,
    autocast: Any,
    g: torch.Generator,
) -> tuple[float, float]:
    """One pass over the training split in seeded order; its mean loss and accuracy."""
    device, n = splits.x_train.device, len(splits.y_train)
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    order = torch.randperm(n, device=device, generator=g)
    for i in range(0, n, trainer.batch_size):
        idx = order[i : i + trainer.batch_size]
        xb, yb = batch(idx, g), splits.y_train[idx]
        xb, target = mixer(xb, yb, g) if mixer.on else (xb, yb)
        with autocast:
            logits = model(xb)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=trainer.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if ema is not None:
            ema.update(model)
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == yb).sum()
    return loss_sum.item() / n, correct.item() / n


def say_epoch(logger: logging.Logger, row: dict[str, float], epochs: int, improved: bool, note: str = "") -> None:
    """The epoch's one line (a sweep keeps it in the trial's log file)."""
    logger.info(
        "epoch %3d/%d  train loss %.4f acc %6.2f%%  val loss %.4f acc %6.2f%%%s  %8s img/s%s",
        row["epoch"],
        epochs,
        row["train_loss"],
        100 * row["train_acc"],
        row["val_loss"],
        100 * row["val_acc"],
        " *" if improved else "  ",
        f"{row['images_per_second']:,.0f}",
        note,
    )


def measure(
    model: nn.Module,
    splits: Splits,
    trainer: Any,
    autocast: Any,
    history: list[dict[str, float]],
    status: str,
    best_epoch: int,
    start: float,
    images_seen: int,
    train_seconds: float,
) -> Metrics:
    """A trained model's figures (its best epoch already restored): accuracy on each split under the
    autocast it trained in (its precision is what metrics.json records), with flipped images too
    under trainer.tta, and the training budget it took."""
    precision = "bf16" if isinstance(autocast, torch.autocast) else "fp32"
    val_loss, val_acc = evaluate(model, splits.x_val, splits.y_val, autocast)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed = sum(m.basis.numel() for m in model.modules() if isinstance(m, Projection))
    n, epochs_run = len(splits.y_train), len(history) + (status == "diverged")
    tta = {}
    if trainer.get("tta"):
        shift = int(trainer.get("tta_shift") or 0)
        tta = {
            "val_acc_tta": evaluate(model, splits.x_val, splits.y_val, autocast, flips=True, shift=shift)[1],
            "test_acc_tta": evaluate(model, splits.x_test, splits.y_test, autocast, flips=True, shift=shift)[1],
        }
        if shift:  # what the shifts add beyond the mirror image
            tta["val_acc_mirror"] = evaluate(model, splits.x_val, splits.y_val, autocast, flips=True)[1]
            tta["test_acc_mirror"] = evaluate(model, splits.x_test, splits.y_test, autocast, flips=True)[1]
    return Metrics(
        train_acc=evaluate(model, splits.x_train, splits.y_train, autocast)[1],
        val_acc=val_acc,
        test_acc=evaluate(model, splits.x_test, splits.y_test, autocast)[1],
        val_loss=val_loss,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        epochs_planned=int(trainer.epochs),
        status=status,
        seconds=time.perf_counter() - start,
        images_per_second=images_seen / train_seconds if train_seconds else 0.0,
        params=params,
        train_images=n,
        train_tflop=(6 * params + 2 * fixed) * n * epochs_run / 1e12,
        history=history,
        fixed_params=fixed,
        precision=precision,
        **tta,
    )


class Averaged:
    """An exponential moving average of a model's weights, updated after every optimizer step:
    avg <- d avg + (1 - d) w, with d = min(decay, (1 + t) / (10 + t)) at step t, so that the first
    steps' random weights fade at once. Buffers (BatchNorm statistics) are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        mine, theirs = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(mine, theirs, 1 - d)
        for a, b in zip(self.model.buffers(), model.buffers(), strict=True):
            a.copy_(b)


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: Any = None, flips: bool = False, shift: int = 0
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, in large batches, eval mode. With flips, each image's class
    probabilities are the mean over its views: itself and its mirror image, and with shift > 0 each
    of those moved by every (dy, dx) with |dy|, |dx| <= shift pixels: 2 (2 shift + 1)^2 views
    (18 for shift 1, 50 for shift 2)."""
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(y), EVAL_BATCH):
        xb, yb = x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]
        with autocast or contextlib.nullcontext():
            if flips:
                views = [v for image in (xb, xb.flip(3)) for v in shifted(image, shift)]
                probs = sum(model(v).float().softmax(1) for v in views) / len(views)
                logits = probs.log()  # log of the mean probabilities
            else:
                logits = model(xb).float()
        loss += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    return loss.item() / len(y), correct.item() / len(y)


def shifted(x: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """x (NCHW) moved by every (dy, dx) with |dy|, |dx| <= shift pixels, x itself first; the
    uncovered border is zero (the mean, as the training crops pad). [x] for shift 0."""
    if shift <= 0:
        return [x]
    h, w, s = x.shape[2], x.shape[3], shift
    padded = F.pad(x, (s, s, s, s))
    moves = [(0, 0)] + [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1) if (dy, dx) != (0, 0)]
    return [padded[:, :, s - dy : s - dy + h, s - dx : s - dx + w] for dy, dx in moves]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def lr_schedule(optimizer: torch.optim.Optimizer, trainer: Any, steps_per_epoch: int) -> Any:
    """Per-step lr multiplier: none for constant; linear warmup then cosine decay to 0."""
    if trainer.lr_schedule == "constant":
        return None
    total = max(1, int(trainer.epochs) * steps_per_epoch)
    warmup = int(trainer.warmup_epochs * steps_per_epoch)

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
