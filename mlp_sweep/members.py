"""Which trials of a stack train together (the same data stream, the same network shape), and one
member's own state: its config, its seeds, its history and best weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .data import Splits
from .epochs import Progress
from .model import build
from .precision import autocast, resolve
from .train import Metrics, measure

OPTIMIZERS = {  # target -> the settings a stack's members must share (lr and weight_decay are each member's)
    "torch.optim.Adam": ("betas", "eps", "amsgrad", "maximize", "capturable", "differentiable"),
    "torch.optim.AdamW": ("betas", "eps", "amsgrad", "maximize", "capturable", "differentiable"),
    "torch.optim.SGD": ("momentum", "dampening", "nesterov", "maximize", "differentiable"),
}
PER_STREAM = ("batch_size", "seed", "device", "precision", "lr_schedule", "warmup_epochs")


def stream_key(cfg: DictConfig) -> str:
    """What members must share to train on the same batches: the data, its size, the augmentation,
    the batch size and the seed that orders and augments them, the schedule's shape."""
    t = cfg.trainer
    shared = {k: t.get(k) for k in PER_STREAM}
    if t.lr_schedule != "constant":
        shared["epochs"] = t.epochs  # a cosine schedule's length
    parts = {"data": cfg.data, "data_size": cfg.data_size, "augment": cfg.augment, "trainer": shared}
    return json.dumps(OmegaConf.to_container(OmegaConf.create(parts), resolve=True), sort_keys=True, default=str)


def network_key(cfg: DictConfig) -> str | None:
    """What members must share to be one network; None for a member this module cannot stack."""
    m, t, opt = cfg.model, cfg.trainer, OmegaConf.to_container(cfg.optimizer, resolve=True)
    target = opt.get("_target_")
    if m.norm != "none" or t.get("ema") is not None or target not in OPTIMIZERS:
        return None
    if cfg.data.get("project") or m.get("block", "plain") != "plain":  # trained alone, beside the stack
        return None
    if opt.get("amsgrad") or opt.get("maximize") or opt.get("differentiable") or opt.get("capturable"):
        return None
    known = {"_target_", "_partial_", "lr", "weight_decay", "fused", "foreach", *OPTIMIZERS[target]}
    if set(opt) - known:
        return None
    # one activation a network: ReLU and LeakyReLU members in one network cost a per-member slope
    # (a where and a float32 product a layer), which measured slower than two networks
    family = m.activation
    shared = {k: opt.get(k) for k in OPTIMIZERS[target]}
    return json.dumps({"layers": m.num_layers, "act": family, "opt": target, **shared}, sort_keys=True, default=str)


@dataclass
class Member(Progress):
    """One trial of the stack: its config, its course through the epochs (as a single run's
    Progress) and, once trained, its metrics and best weights."""

    number: int
    cfg: DictConfig
    reporter: Any = None  # the sweep's channel to the member's trial (its reason when pruned)
    # filled in by training
    best: list[torch.Tensor] | None = None  # its unpadded weights of the best epoch, as build() names them
    metrics: Metrics | None = None
    model: nn.Module | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        self.epochs = int(self.cfg.trainer.epochs)
        self.patience = int(self.cfg.trainer.patience or 0)

    def dropout_generator(self, device: torch.device) -> torch.Generator:
        """The member's own stream of dropout masks (it goes with the member when others leave)."""
        if self.generator is None:
            self.generator = torch.Generator(device=device).manual_seed(self.init_seed() + 7919)
        return self.generator

    @property
    def width(self) -> int:
        return int(self.cfg.model.hidden_size)

    def init_seed(self) -> int:
        seed = self.cfg.trainer.get("init_seed")
        return int(self.cfg.trainer.seed if seed is None else seed)

    def final(self, splits: Splits, start: float) -> Metrics:
        """The best epoch restored into the member's own nn.Sequential, measured as a single run is."""
        model = self.alone(splits.in_features, splits.n_classes).to(splits.x_train.device)
        if self.best is not None:
            linears = [layer for layer in model if isinstance(layer, nn.Linear)]
            with torch.no_grad():
                for j, linear in enumerate(linears):
                    linear.weight.copy_(self.best[2 * j])
                    linear.bias.copy_(self.best[2 * j + 1])
        self.model = model
        device, t = splits.x_train.device, self.cfg.trainer
        amp = autocast(device, resolve(t.precision, device)[0])
        return measure(model, splits, t, amp, self, start)

    def alone(self, in_features: int, n_classes: int) -> nn.Sequential:
        """The member as a single run builds it (same seed, same initial weights)."""
        torch.manual_seed(self.init_seed())
        return build(in_features, n_classes, **self.cfg.model)
