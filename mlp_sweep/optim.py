"""Optimizers torch does not ship. Lion (Chen et al. 2023, "Symbolic Discovery of Optimization
Algorithms"): each weight moves by exactly lr a step, in the sign of a blend of the gradient and its
momentum; one state tensor a weight (Adam keeps two)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class Lion(torch.optim.Optimizer):
    """w <- w (1 - lr wd) - lr sign(b1 m + (1 - b1) g);  m <- b2 m + (1 - b2) g.

    The weight decay is decoupled and scaled by lr, as in AdamW: with an lr about 10x below
    AdamW's, a weight decay about 10x above it keeps lr x wd, the shrink a step, the same."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        b1, b2 = betas
        if not lr > 0:
            raise ValueError(f"Lion: lr={lr} must be > 0")
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Lion: betas={tuple(betas)} must each be in [0, 1)")
        if weight_decay < 0:
            raise ValueError(f"Lion: weight_decay={weight_decay} must be >= 0")
        super().__init__(params, {"lr": lr, "betas": (float(b1), float(b2)), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            momenta = []
            for p in params:
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                momenta.append(state["exp_avg"])
            (b1, b2), lr, wd = group["betas"], group["lr"], group["weight_decay"]
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            update = torch._foreach_lerp(momenta, grads, 1 - b1)  # b1 m + (1 - b1) g
            torch._foreach_sign_(update)
            torch._foreach_add_(params, update, alpha=-lr)
            torch._foreach_lerp_(momenta, grads, 1 - b2)
        return loss
