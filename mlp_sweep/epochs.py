"""The app's one epoch loop. Every learner of one data stream (a single run's model, or a stacked
network of many trials) trains over the same seeded batches, and every run's course through its
epochs (its history, best epoch, divergence, pruning, early stop) is judged in one place,
`Progress`, whichever learner it belongs to."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .augment import Batcher, Mixer
from .data import Splits

epoch_log = logging.getLogger("mlp_sweep.epochs")  # one line an epoch; a sweep keeps them in each trial's log file


class Learner(Protocol):
    """What the epoch loop drives: a single run (train.Single) or a stacked network (stacked.Network)."""

    epochs: int  # the most epochs any of its runs may take

    @property
    def running(self) -> bool: ...

    def begin_epoch(self) -> None: ...

    def step(self, xb: torch.Tensor, target: torch.Tensor, yb: torch.Tensor) -> None: ...

    def end_epoch(self, epoch: int, seconds: float, n: int) -> None: ...


def run_epochs(learners: list[Learner], splits: Splits, trainer: Any, augmentation: Any) -> None:
    """Train the learners over one stream of batches (order and augmentation drawn from
    trainer.seed, as a single run draws them) until none is running or the epochs are spent."""
    device, n = splits.x_train.device, len(splits.y_train)
    g, batch, mixer = data_stream(splits, trainer, augmentation)
    for epoch in range(1, max((learner.epochs for learner in learners), default=0) + 1):
        learners = [learner for learner in learners if learner.running]
        if not learners:
            break
        t0 = time.perf_counter()
        for learner in learners:
            learner.begin_epoch()
        order = torch.randperm(n, device=device, generator=g)
        for i in range(0, n, trainer.batch_size):
            idx = order[i : i + trainer.batch_size]
            xb, yb = batch(idx, g), splits.y_train[idx]
            xb, target = mixer(xb, yb, g) if mixer.on else (xb, yb)
            for learner in learners:
                learner.step(xb, target, yb)
        seconds = time.perf_counter() - t0
        for learner in learners:
            learner.end_epoch(epoch, seconds, n)


def data_stream(splits: Splits, trainer: Any, augmentation: Any) -> tuple[torch.Generator, Batcher, Mixer]:
    """What draws the training batches: the generator seeded by trainer.seed (batch order and
    augmentation), the batcher (augmentation) and the mixer (mixup, cutmix)."""
    g = torch.Generator(device=splits.x_train.device).manual_seed(int(trainer.seed))
    options = dict(augmentation)
    mixer = Mixer(options.pop("mixup", 0.0), options.pop("cutmix", 0.0), splits.n_classes, int(trainer.seed))
    batch = Batcher(splits.x_train, mean=splits.mean, std=splits.std, max_value=splits.max_value, **options)
    return g, batch, mixer


@dataclass(kw_only=True)
class Progress:
    """One run's course through its epochs: what it trained, its history, its best epoch so far, and
    whether it goes on. A single run has one; each member of a stack is one."""

    epochs: int = 0  # trainer.epochs
    patience: int = 0  # trainer.patience (0: no early stop)
    on_epoch: Callable[[int, dict[str, float]], bool] | None = None  # hears each epoch; False: pruned
    log: logging.Logger = field(default_factory=lambda: epoch_log)
    history: list[dict[str, float]] = field(default_factory=list)
    status: str = "ok"  # ok | diverged | pruned
    best_acc: float = -1.0
    best_epoch: int = 0
    train_seconds: float = 0.0
    images_seen: int = 0

    def trained(self, epoch: int, train_loss: float, seconds: float, n: int) -> bool:
        """Count an epoch's training; False (status diverged) when its loss is not finite."""
        self.train_seconds += seconds
        self.images_seen += n
        if math.isfinite(train_loss):
            return True
        self.status = "diverged"
        said = "epoch %d: training loss is %s; stopping, keeping epoch %d"
        self.log.warning(said, epoch, train_loss, self.best_epoch)
        return False

    def judged(self, row: dict[str, float], note: str = "") -> tuple[bool, bool]:
        """(improved, goes on) after a validated epoch: its line said, the pruner and the patience asked."""
        epoch = int(row["epoch"])
        self.history.append(row)
        improved = row["val_acc"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = row["val_acc"], epoch
        say_epoch(self.log, row, self.epochs, improved, note)
        if self.on_epoch is not None and not self.on_epoch(epoch, row):
            self.status = "pruned"
            return improved, False
        if self.patience and epoch - self.best_epoch >= self.patience:
            self.log.info("early stop: no better val_acc for %d epochs; best epoch %d", self.patience, self.best_epoch)
            return improved, False
        return improved, epoch < self.epochs


def epoch_row(
    epoch: int, train: tuple[float, float], val: tuple[float, float], seconds: float, train_seconds: float, n: int
) -> dict[str, float]:
    """An epoch's line of the history: (loss, accuracy) on the training batches and on validation,
    the epoch's seconds (validation included), and training images per second of training."""
    return {
        "epoch": epoch,
        "train_loss": train[0],
        "train_acc": train[1],
        "val_loss": val[0],
        "val_acc": val[1],
        "seconds": seconds,
        "images_per_second": n / train_seconds,
    }


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
