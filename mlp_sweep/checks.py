"""Reject a bad configuration before any work, naming the key, the value and what is allowed."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import UserError
from .precision import CHOICES as PRECISIONS

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu")  # model.py maps each to its module
NORMS = ("none", "batch", "layer")
BLOCKS = ("plain", "residual")  # model.build: plain layers or residual bottleneck blocks
WHITENING = ("none", "pca", "zca")
# what the task may return, and the direction a sweep optimizes it in; never test_*: the test set
# is only reported
OBJECTIVES = {"val_acc": "maximize", "val_loss": "minimize", "seconds": "minimize", "params": "minimize"}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _within(low: float, high: float, *, high_open: bool = True) -> Callable[[Any], bool]:
    return lambda v: _number(v) and low <= v and (v < high if high_open else v <= high)


def _one_of(*allowed: str) -> Callable[[Any], bool]:
    return lambda v: v in allowed


def _device(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None


# key -> (test, what is allowed); keys absent from a config (momentum for Adam) are skipped
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.name": (_one_of("cifar10", "digits"), "cifar10 or digits"),
    "data.whiten": (_one_of(*WHITENING), "one of " + ", ".join(WHITENING)),
    "data.whiten_eps": (lambda v: _number(v) and v > 0, "a number > 0 (added to each eigenvalue)"),
    "data.project": (_int_at_least(0), "an integer >= 0 (principal components the MLP sees; 0 = every input)"),
    "data_size.train": (_int_at_least(1), "an integer >= 1"),
    "data_size.val": (_int_at_least(1), "an integer >= 1"),
    "model.num_layers": (_int_at_least(1), "an integer >= 1 (Linear layers; 2 = one hidden layer)"),
    "model.hidden_size": (_int_at_least(1), "an integer >= 1"),
    "model.activation": (_one_of(*ACTIVATIONS), "one of " + ", ".join(ACTIVATIONS)),
    "model.norm": (_one_of(*NORMS), "one of " + ", ".join(NORMS)),
    "model.dropout": (_within(0, 1), "a number in [0, 1)"),
    "model.block": (_one_of(*BLOCKS), "plain or residual"),
    "model.expansion": (_int_at_least(1), "an integer >= 1 (a residual block's inner width / hidden_size)"),
    "optimizer.lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "optimizer.weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "optimizer.momentum": (_within(0, 1), "a number in [0, 1)"),
    "optimizer.nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "augment.flip": (lambda v: isinstance(v, bool) or v == "alternate", "true, false or alternate"),
    "augment.crop_padding": (_int_at_least(0), "an integer >= 0 (pixels)"),
    "augment.brightness": (_within(0, 1), "a number in [0, 1)"),
    "augment.saturation": (_within(0, 1), "a number in [0, 1)"),
    "augment.rotation": (_within(0, 180, high_open=False), "a number of degrees in [0, 180]"),
    "augment.mixup": (lambda v: _number(v) and v >= 0, "a number >= 0 (alpha of Beta(alpha, alpha); 0 = off)"),
    "augment.cutmix": (lambda v: _number(v) and v >= 0, "a number >= 0 (alpha of Beta(alpha, alpha); 0 = off)"),
    "trainer.epochs": (_int_at_least(1), "an integer >= 1"),
    "trainer.batch_size": (_int_at_least(1), "an integer >= 1"),
    "trainer.patience": (_int_at_least(0), "an integer >= 0 (0 = no early stopping)"),
    "trainer.lr_schedule": (_one_of("constant", "cosine"), "constant or cosine"),
    "trainer.warmup_epochs": (lambda v: _number(v) and v >= 0, "a number of epochs >= 0"),
    "trainer.label_smoothing": (_within(0, 1), "a number in [0, 1)"),
    "trainer.device": (_device, "auto, cpu, cuda or cuda:N"),
    "trainer.threads": (_int_at_least(0), "an integer >= 0 (0 = automatic)"),
    "trainer.precision": (_one_of(*PRECISIONS), "auto (bf16 on bf16 units), fp32 or bf16"),
    "trainer.seed": (_int_at_least(0), "an integer >= 0"),
    "trainer.init_seed": (lambda v: v is None or _int_at_least(0)(v), "null (= trainer.seed) or an integer >= 0"),
    "trainer.ema": (lambda v: v is None or _within(0, 1)(v) and v > 0, "null (off) or a decay in (0, 1), e.g. 0.999"),
    "trainer.tta": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.tta_shift": (_int_at_least(0), "an integer >= 0 (pixels; 0 = the mirror image only)"),
}
# options that move pixels or work in pixel units, which whitening replaces (PCA: by components)
SPATIAL = (
    "augment.flip",
    "augment.crop_padding",
    "augment.rotation",
    "augment.cutmix",
    "trainer.tta",
    "trainer.tta_shift",
)
COLOUR = ("augment.brightness", "augment.saturation")


def problems(cfg: DictConfig) -> list[str]:
    """Every rule the config breaks, one message each."""
    found = []
    for key, (ok, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        if not ok(value):
            found.append(f"{key}={value!r} is not allowed: use {allowed}")
    nesterov, momentum = OmegaConf.select(cfg, "optimizer.nesterov"), OmegaConf.select(cfg, "optimizer.momentum")
    if nesterov is True and _number(momentum) and momentum <= 0:
        found.append(f"optimizer.nesterov=True needs optimizer.momentum > 0, got {momentum!r}")
    found += _whitening_problems(cfg)
    shift = OmegaConf.select(cfg, "trainer.tta_shift", default=0)
    if _int_at_least(1)(shift) and OmegaConf.select(cfg, "trainer.tta") is not True:
        found.append(f"trainer.tta_shift={shift} needs trainer.tta=true (the shifted views join the mirror image)")
    found += _objective_problems(OmegaConf.select(cfg, "optimized_metric", default=_ABSENT))
    device = OmegaConf.select(cfg, "trainer.device")
    if _device(device) and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            found.append(f"trainer.device={device!r} is not available on this machine: use auto or cpu")
    return found


def _whitening_problems(cfg: DictConfig) -> list[str]:
    """PCA whitening turns images into components: nothing spatial applies to them any more.
    Colour jitter works in pixel units, which whitening of either kind leaves behind."""
    whiten = OmegaConf.select(cfg, "data.whiten", default="none")
    if whiten not in ("pca", "zca"):
        return []
    keys = COLOUR + (SPATIAL if whiten == "pca" else ())
    on = [f"{k}={v!r}" for k in keys if (v := OmegaConf.select(cfg, k, default=None)) not in (None, False, 0, 0.0)]
    if not on:
        return []
    what = "image augmentation and flipped test images" if whiten == "pca" else "colour jitter"
    fix = "use data.whiten=zca, or turn them off" if whiten == "pca" else "turn them off, or use data.whiten=none"
    return [f"data.whiten={whiten} does not go with {', '.join(on)}: {what} need pixels; {fix}"]


def metric_list(value: Any) -> list[Any]:
    """optimized_metric as a list: one name, or several for a multi-objective sweep."""
    return [value] if isinstance(value, str) else list(value)


def _objective_problems(value: Any) -> list[str]:
    if value is _ABSENT:
        return []
    allowed = "one of " + ", ".join(OBJECTIVES) + ", or a list of them (never a test metric)"
    names = metric_list(value) if isinstance(value, str) or OmegaConf.is_list(value) else [value]
    if not names or any(n not in OBJECTIVES for n in names) or len(set(names)) != len(names):
        shown = (
            value if isinstance(value, str) else OmegaConf.to_container(value) if OmegaConf.is_list(value) else value
        )
        return [f"optimized_metric={shown!r} is not allowed: use {allowed}"]
    return []


def directions(metrics: Any) -> list[str]:
    """The sweep directions that follow optimized_metric (the `mlp_sweep_directions` resolver)."""
    return [OBJECTIVES.get(str(m), "maximize") for m in metric_list(metrics)]


def check(cfg: DictConfig) -> None:
    found = problems(cfg)
    if found:
        raise UserError("invalid configuration:\n  " + "\n  ".join(found))


_ABSENT = object()
