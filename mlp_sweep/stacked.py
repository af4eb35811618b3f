"""Stacked training: the members of a stack (trials of one sweep) trained together over shared batches.

Members that share a depth, an activation and an optimizer form one network: its first
layer is one wide matrix product over the shared batch (in_features x the sum of the members'
widths, unpadded), later layers are batched products (K, H, H) over widths padded to the widest,
the padded units held at exactly zero. Each member keeps its own learning rate, weight decay,
dropout, label smoothing, initialization seed, width, epochs and
patience. Members that need a different data stream (another data size, batch size, seed or
augmentation) train after each other; those whose model this module does not stack (batch or
layer norm, residual blocks, a fixed projection, a weight average, an unknown optimizer)
train alone with `train.fit`.

What a member sees is what it would see alone: the same batch order and augmentation (drawn from
`trainer.seed`), the same initial weights (`trainer.init_seed`, else `trainer.seed`, then
`model.build`), the same Adam / AdamW / SGD arithmetic, its own early stopping and restored best
epoch, and the final metrics measured by `train.evaluate` on its own `nn.Sequential`. Only float
rounding differs (wide products sum in another order), and dropout masks, which come from the
member's own generator instead of the global one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from .data import Splits
from .epochs import epoch_row, run_epochs
from .members import Member
from .precision import autocast, resolve
from .train import EVAL_BATCH, keep_freed_memory, lr_schedule

log = logging.getLogger(__name__)


class Stack:
    """K members of one network key as stacked tensors. The first layer, which holds most of the
    work, is unpadded: its weights are the members' rows one after another (sum of widths, in), one
    product over the shared batch. Later layers are batched products (K, out, in) over the widths
    padded to the widest; padded units are held at zero: their weights start at zero, and with an
    activation that is 0 at 0 (all but sigmoid, which is masked) they get zero gradients, so no
    optimizer moves them (weight decay of zero is zero). Each member's slices are contiguous, so
    torch's own optimizer kernels update them with the member's own lr and weight decay. Members
    leave at epoch ends, and what they leave is not computed any more."""

    def __init__(self, members: list[Member], in_features: int, n_classes: int, device: torch.device) -> None:
        self.members, self.device = list(members), device
        self.layers = int(members[0].cfg.model.num_layers)
        self.activation = str(members[0].cfg.model.activation)
        self.optimizer = OmegaConf.to_container(members[0].cfg.optimizer, resolve=True)
        self.kind = str(self.optimizer["_target_"]).rsplit(".", 1)[-1]
        self.in_features, self.n_classes = in_features, n_classes
        k, first = len(members), [self.out_width(m, 0) for m in members]
        width = max(m.width for m in members)
        self.weights = [torch.zeros(sum(first), in_features, device=device)]
        self.biases = [torch.zeros(sum(first), device=device)]
        for j in range(1, self.layers):
            out = width if j < self.layers - 1 else n_classes
            self.weights.append(torch.zeros(k, out, width, device=device))
            self.biases.append(torch.zeros(k, out, device=device))
        offsets = [sum(first[:i]) for i in range(k)]
        for i, m in enumerate(members):
            linears = [layer for layer in m.alone(in_features, n_classes) if isinstance(layer, nn.Linear)]
            for j, linear in enumerate(linears):
                out, inp = linear.weight.shape
                if j == 0:
                    self.weights[0][offsets[i] : offsets[i] + out] = linear.weight.detach()
                    self.biases[0][offsets[i] : offsets[i] + out] = linear.bias.detach()
                else:
                    self.weights[j][i, :out, :inp] = linear.weight.detach()
                    self.biases[j][i, :out] = linear.bias.detach()
        self.moments = [[torch.zeros_like(p) for p in self.params] for _ in range(1 if self.kind == "SGD" else 2)]
        self.steps = [[torch.zeros((), device=device) for _ in self.params] for _ in members]
        self._vectors()

    def out_width(self, m: Member, layer: int) -> int:
        return m.width if layer < self.layers - 1 else self.n_classes

    def _vectors(self) -> None:
        """Per-member settings as tensors, where each member's units are, and fresh leaves."""
        ms, dev = self.members, self.device

        def vec(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, device=dev, dtype=torch.float32)

        first = [self.out_width(m, 0) for m in ms]
        self.rows = [(sum(first[:i]), sum(first[: i + 1])) for i in range(len(ms))]  # first-layer rows
        self.width = self.weights[1].shape[2] if self.layers > 1 else 0
        self.dropout = [float(m.cfg.model.dropout) for m in ms]
        self.drops = any(p > 0 for p in self.dropout)
        self.smoothing = vec([float(m.cfg.trainer.label_smoothing) for m in ms])
        self.generators = [m.dropout_generator(dev) for m in ms]
        self.padded = self.layers > 1 and any(m.width < self.width for m in ms)
        # where each first-layer unit goes in the padded (K * width) layout of the later layers
        self.pad_index = torch.tensor(
            [k * self.width + j for k, d in enumerate(first) for j in range(d)], device=dev, dtype=torch.long
        )
        self.unit_mask = (torch.arange(self.width, device=dev)[None, :] < vec([m.width for m in ms])[:, None]).float()
        for p in self.params:
            p.requires_grad_(True)
        self.updates, self.settings = optimizer_calls(self)

    @property
    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    # -- the network
    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """x (B, ...) -> logits (K, B, C)."""
        k, b = len(self.members), x.shape[0]
        h = torch.addmm(self.biases[0], x.flatten(1), self.weights[0].t())  # (B, sum of first widths)
        if self.layers == 1:
            return h.view(b, k, -1).transpose(0, 1)
        h = self._activate(h)
        if train and self.drops:
            h = h * torch.cat([self._keep(i, (b, hi - lo), h.dtype) for i, (lo, hi) in enumerate(self.rows)], dim=1)
        if self.padded:
            h = h.new_zeros(b, k * self.width).index_copy(1, self.pad_index, h)
        h = h.view(b, k, self.width).transpose(0, 1)  # (K, B, width)
        for i in range(1, self.layers):
            h = torch.baddbmm(self.biases[i][:, None, :], h, self.weights[i].transpose(1, 2))
            if i < self.layers - 1:
                h = self._activate(h)
                if self.padded and self.activation == "sigmoid":  # the one activation not 0 at 0
                    h = h * self.unit_mask[:, None, :].to(h.dtype)  # padded units stay exactly zero
                if train and self.drops:
                    keep = [self._keep(j, (b, m.width), h.dtype) for j, m in enumerate(self.members)]
                    h = h * torch.stack([F.pad(t, (0, self.width - t.shape[1])) for t in keep])
        return h

    def _activate(self, h: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(h)
        if self.activation == "leaky_relu":
            return F.leaky_relu(h)  # nn.LeakyReLU's default slope, as model.build's
        if self.activation == "tanh":
            return torch.tanh(h)
        if self.activation == "sigmoid":
            return torch.sigmoid(h)
        return F.gelu(h)

    def _keep(self, position: int, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """The member's dropout mask, scaled as nn.Dropout scales it, from its own generator, in the
        activations' dtype (a float32 mask would turn bf16 activations back into float32)."""
        p = self.dropout[position]
        if p <= 0:
            return torch.ones(shape, device=self.device, dtype=dtype)
        keep = torch.rand(shape, device=self.device, generator=self.generators[position]) >= p
        return (keep / (1 - p)).to(dtype)

    def slices(self, tensors: list[torch.Tensor], position: int) -> list[torch.Tensor]:
        lo, hi = self.rows[position]
        n = len(self.weights)
        return [t[lo:hi] if i % n == 0 else t[position] for i, t in enumerate(tensors)]

    # -- members leaving
    def keep(self, alive: list[int]) -> None:
        """Only the members at these positions go on; the rest's width is not computed any more."""
        if len(alive) == len(self.members):
            return
        if not alive:
            self.members = []
            return
        rows = torch.tensor([r for i in alive for r in range(*self.rows[i])], device=self.device, dtype=torch.long)
        idx = torch.tensor(alive, device=self.device)
        width = max(self.members[i].width for i in alive)
        n = len(self.weights)

        def take(t: torch.Tensor, index: int) -> torch.Tensor:
            if index % n == 0:  # the first layer's weight or bias
                return t.index_select(0, rows).contiguous()
            t = t.index_select(0, idx)
            if index < n:
                t = t[:, : (width if index < n - 1 else t.shape[1]), :width]
            elif index - n < n - 1:
                t = t[:, :width]
            return t.contiguous()

        params = [take(p.detach(), i) for i, p in enumerate(self.params)]
        self.moments = [[take(t, i) for i, t in enumerate(ts)] for ts in self.moments]
        self.steps = [self.steps[i] for i in alive]
        self.weights, self.biases = params[:n], params[n:]
        self.members = [self.members[i] for i in alive]
        self._vectors()


def member_losses(s: Stack, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy (K,), with its own label smoothing; target: labels (B,)
    or soft targets (B, C), as F.cross_entropy takes them."""
    logp = torch.log_softmax(logits, dim=-1)
    if target.dim() == 1:
        nll = -logp.gather(-1, target.expand(logp.shape[0], -1)[..., None]).squeeze(-1)
    else:
        nll = -(logp * target).sum(-1)
    smooth = -logp.mean(-1)
    eps = s.smoothing[:, None]
    return ((1 - eps) * nll + eps * smooth).mean(-1)


def member_weights(s: Stack, position: int) -> list[torch.Tensor]:
    """The member's own (unpadded) weight and bias of each layer, as build()'s Linear layers hold them."""
    m, (lo, hi) = s.members[position], s.rows[position]
    out = [s.weights[0][lo:hi].detach().clone(), s.biases[0][lo:hi].detach().clone()]
    prev = m.width
    for j in range(1, s.layers):
        d = s.out_width(m, j)
        w, b = s.weights[j][position, :d, :prev], s.biases[j][position, :d]
        out += [w.detach().clone(), b.detach().clone()]
        prev = d
    return out


def optimizer_calls(s: Stack) -> tuple[list[tuple], dict[str, Any]]:
    """What each member's optimizer call takes besides its gradients, worked out when the stack is
    made or members leave, not at every step: its slices of the weights and of the optimizer state,
    its lr and weight decay; and the settings the members share."""
    o, updates = s.optimizer, []
    for k, m in enumerate(s.members):
        mine = s.slices(s.params, k)
        if s.kind == "SGD":
            momentum = float(o.get("momentum", 0.0) or 0.0)
            state = (s.slices(s.moments[0], k) if momentum else [None] * len(mine),)
        else:
            state = (s.slices(s.moments[0], k), s.slices(s.moments[1], k), [], s.steps[k])
        wd = float(m.cfg.optimizer.get("weight_decay", 0.0) or 0.0)
        updates.append((mine, state, float(m.cfg.optimizer.lr), wd))
    shared = {"foreach": o.get("foreach"), "fused": o.get("fused"), "maximize": False}
    if s.kind == "SGD":
        settings = {
            **shared,
            "momentum": float(o.get("momentum", 0.0) or 0.0),
            "dampening": float(o.get("dampening", 0.0) or 0.0),
            "nesterov": bool(o.get("nesterov", False)),
        }
    else:
        b1, b2 = o.get("betas", (0.9, 0.999))
        settings = {
            **shared,
            "decoupled_weight_decay": s.kind == "AdamW",
            "amsgrad": False,
            "beta1": float(b1),
            "beta2": float(b2),
            "eps": float(o.get("eps", 1e-8)),
        }
    return updates, settings


@torch.no_grad()
def optimizer_step(s: Stack, lr_factor: float) -> None:
    """torch's own Adam / AdamW / SGD, called once per member on its slices of the stack's tensors,
    with the member's own lr (times the schedule's factor) and weight decay."""
    from torch.optim.adam import adam
    from torch.optim.sgd import sgd

    params = s.params
    grads = [p.grad for p in params]
    for k, (mine, state, lr, wd) in enumerate(s.updates):
        their_grads = s.slices(grads, k)
        if s.kind == "SGD":
            sgd(mine, their_grads, state[0], lr=lr * lr_factor, weight_decay=wd, **s.settings)
        else:
            adam(mine, their_grads, *state, lr=lr * lr_factor, weight_decay=wd, **s.settings)
    for p in params:
        p.grad = None


def fit_stream(
    members: list[Member], splits: Splits, trainer: Any, augmentation: Any, stacks: list[list[Member]]
) -> None:
    """Train every stack of one data stream over the same batches (the app's one epoch loop, as a
    single run's); each member's metrics and best model end up on it."""
    start = time.perf_counter()
    device = splits.x_train.device
    keep_freed_memory()
    factor = _lr_factors(trainer, math.ceil(len(splits.y_train) / trainer.batch_size))
    amp = autocast(device, resolve(trainer.precision, device)[0])  # bf16 products as a single run's
    for m in members:
        m.best = None
    nets = [
        Network(Stack(group, splits.in_features, splits.n_classes, device), splits, amp, factor) for group in stacks
    ]
    run_epochs(nets, splits, trainer, augmentation)
    for m in members:
        m.metrics = m.final(splits, start)


class Network:
    """A stack as a learner of the epoch loop: each batch one forward and backward pass for all its
    members and one optimizer call each; at an epoch's end each member's epoch is judged on its own
    and the members that stop leave the network."""

    def __init__(self, stack: Stack, splits: Splits, amp: Any, factor: Callable[[int], float]) -> None:
        self.stack, self.splits, self.amp, self.factor = stack, splits, amp, factor
        self.epochs = max(m.epochs for m in stack.members)
        self.steps = 0  # the schedule's step: every batch, since all members start together
        self.sums = self.correct = torch.zeros(0)

    @property
    def running(self) -> bool:
        return bool(self.stack.members)

    def begin_epoch(self) -> None:
        k, device = len(self.stack.members), self.splits.x_train.device
        self.sums = torch.zeros(k, device=device)
        self.correct = torch.zeros(k, device=device, dtype=torch.int64)

    def step(self, xb: torch.Tensor, target: torch.Tensor, yb: torch.Tensor) -> None:
        s = self.stack
        with self.amp:
            logits = s.forward(xb, train=True).float()
            losses = member_losses(s, logits, target)
        losses.sum().backward()
        optimizer_step(s, self.factor(self.steps))
        self.steps += 1
        self.sums += losses.detach() * len(yb)
        self.correct += (logits.detach().argmax(-1) == yb).sum(-1)

    def end_epoch(self, epoch: int, seconds: float, n: int) -> None:
        """Validate every member, judge its epoch, keep its best weights; those that stop leave."""
        s, t0 = self.stack, time.perf_counter()
        val_loss, val_acc = _evaluate(s, self.splits.x_val, self.splits.y_val, self.amp)
        took = seconds + time.perf_counter() - t0
        train_loss, train_acc = (self.sums / n).tolist(), (self.correct.float() / n).tolist()
        alive = []
        for i, m in enumerate(s.members):
            if not m.trained(epoch, train_loss[i], seconds, n):
                continue
            row = epoch_row(
                epoch, (train_loss[i], train_acc[i]), (float(val_loss[i]), float(val_acc[i])), took, seconds, n
            )
            improved, goes_on = m.judged(row, f" (network of {len(s.members)})")
            if improved:
                m.best = member_weights(s, i)
            if goes_on:
                alive.append(i)
        s.keep(alive)


def _lr_factors(trainer: Any, steps_per_epoch: int) -> Callable[[int], float]:
    """The per-step lr multiplier a single run's LambdaLR applies (1 for a constant schedule)."""
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = lr_schedule(dummy, trainer, steps_per_epoch)
    if schedule is None:
        return lambda step: 1.0
    return lambda step: schedule.lr_lambdas[0](step)


@torch.no_grad()
def _evaluate(s: Stack, x: torch.Tensor, y: torch.Tensor, amp: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's mean cross-entropy and accuracy on (x, y), as train.evaluate measures them."""
    k = len(s.members)
    loss = torch.zeros(k, device=x.device)
    right = torch.zeros(k, device=x.device, dtype=torch.int64)
    for i in range(0, len(y), EVAL_BATCH):
        xb, yb = x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]
        with amp:
            logits = s.forward(xb, train=False).float()
        logp = torch.log_softmax(logits, -1)
        loss -= logp.gather(-1, yb.expand(k, -1)[..., None]).squeeze(-1).sum(-1)
        right += (logits.argmax(-1) == yb).sum(-1)
    return loss / len(y), right.double() / len(y)
