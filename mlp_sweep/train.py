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

from .data import Splits
from .epochs import Progress, epoch_row, run_epochs
from .model import Projection
from .precision import autocast as precision_autocast
from .precision import resolve as resolve_precision

log = logging.getLogger(__name__)

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
    """Torch CPU threads: as asked (trainer.threads), else OMP_NUM_THREADS where the environment
    sets it (as torch itself and every OpenMP program take it), else the cores shared out among
    parallel jobs."""
    n = threads or omp_threads() or max(1, cores() // max(1, parallel_jobs))
    torch.set_num_threads(n)
    return n


def omp_threads() -> int | None:
    """OMP_NUM_THREADS's count (its first, for a nested list such as 4,2); None where it is unset
    or no positive number (OpenMP ignores such a value too)."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


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
    autocast = precision_autocast(device, resolve_precision(trainer.precision, device)[0])
    ema = Averaged(model, float(trainer.ema)) if trainer.get("ema") is not None else None
    progress = Progress(epochs=int(trainer.epochs), patience=int(trainer.patience or 0), on_epoch=on_epoch)
    single = Single(model, optimizer, schedule, ema, autocast, splits, float(trainer.label_smoothing), progress)
    run_epochs([single], splits, trainer, augmentation)
    model.load_state_dict(single.best_state)  # with trainer.ema, the averaged weights
    return measure(model, splits, trainer, autocast, progress, start)


class Single:
    """A single run as a learner of the epoch loop: its model, optimizer, lr schedule and weight
    average; what it validates and keeps as its best epoch is the average where there is one."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        ema: Averaged | None,
        autocast: Any,
        splits: Splits,
        label_smoothing: float,
        progress: Progress,
    ) -> None:
        self.model, self.optimizer, self.schedule, self.ema, self.autocast = model, optimizer, schedule, ema, autocast
        self.splits, self.label_smoothing, self.progress = splits, label_smoothing, progress
        self.judged = ema.model if ema else model  # what is validated, kept as the best epoch and saved
        self.best_state = _snapshot(self.judged)
        self.epochs, self.running = progress.epochs, True
        self.loss_sum = self.correct = torch.zeros(())

    def begin_epoch(self) -> None:
        device = self.splits.x_train.device
        self.model.train()
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)

    def step(self, xb: torch.Tensor, target: torch.Tensor, yb: torch.Tensor) -> None:
        with self.autocast:
            logits = self.model(xb)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.loss_sum += loss.detach() * len(yb)
        self.correct += (logits.argmax(1) == yb).sum()

    def end_epoch(self, epoch: int, seconds: float, n: int) -> None:
        train_loss = self.loss_sum.item() / n
        if not self.progress.trained(epoch, train_loss, seconds, n):
            self.running = False
            return
        t0 = time.perf_counter()
        val = evaluate(self.judged, self.splits.x_val, self.splits.y_val, self.autocast)
        took = seconds + time.perf_counter() - t0
        row = epoch_row(epoch, (train_loss, self.correct.item() / n), val, took, seconds, n)
        improved, self.running = self.progress.judged(row)
        if improved:
            self.best_state = _snapshot(self.judged)


def measure(
    model: nn.Module,
    splits: Splits,
    trainer: Any,
    autocast: Any,
    progress: Progress,
    start: float,
) -> Metrics:
    """A trained model's figures (its best epoch already restored): accuracy on each split under the
    autocast it trained in (its precision is what metrics.json records), with flipped images too
    under trainer.tta, and the training budget it took."""
    precision = "bf16" if isinstance(autocast, torch.autocast) else "fp32"
    val_loss, val_acc = evaluate(model, splits.x_val, splits.y_val, autocast)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed = sum(m.basis.numel() for m in model.modules() if isinstance(m, Projection))
    history, status, train_seconds = progress.history, progress.status, progress.train_seconds
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
        best_epoch=progress.best_epoch,
        epochs_run=epochs_run,
        epochs_planned=int(trainer.epochs),
        status=status,
        seconds=time.perf_counter() - start,
        images_per_second=progress.images_seen / train_seconds if train_seconds else 0.0,
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
