"""Per-image random augmentation of a whole batch at once, as tensor operations."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

GRAY = (0.299, 0.587, 0.114)  # luma weights for saturation


class Batcher:
    """Draws training batches; with augmentation, each image gets its own random transform.

    Selection and crop cost one copy: the crop is an index into a view of every window of
    the padded training set (unfold), not a gather per pixel; the flip then rewrites only the
    mirrored images of the fresh batch.

    flip="alternate": each image is mirrored in every other epoch, by a coin tossed once per image
    at the first batch (so every image is seen both ways in any two epochs in a row, where random
    flips repeat one side half the time). The epoch is counted from the images served: an epoch
    is one pass over the training split.
    """

    def __init__(
        self,
        x: torch.Tensor,
        *,
        mean: torch.Tensor,
        std: torch.Tensor,
        max_value: float,
        flip: bool | str,
        crop_padding: int,
        brightness: float,
        saturation: float,
        rotation: float,
    ) -> None:
        self.mean, self.std, self.max_value = mean, std, max_value
        self.flip, self.pad, self.rotation = flip, crop_padding, rotation
        self.brightness, self.saturation = brightness, saturation if x.shape[1] == 3 else 0.0
        self.x = x
        self.windows = crop_windows(x, crop_padding) if crop_padding > 0 else None
        self.sides: torch.Tensor | None = None  # flip="alternate": each image's side in even epochs
        self.served = 0

    def __call__(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """x: standardized NCHW images at idx, transformed with draws from g."""
        if self.windows is None:
            x = self.x[idx]
        else:
            dy, dx = torch.randint(0, 2 * self.pad + 1, (2, len(idx)), device=idx.device, generator=g)
            x = self.windows[idx, :, dy, dx]
        if self.flip == "alternate":
            x = self._alternate(x, idx, g)
        elif self.flip:
            x = random_flip(x, g)  # x is a fresh copy here, never the training set
        if self.brightness > 0 or self.saturation > 0:
            raw = colour_jitter(x * self.std + self.mean, self.brightness, self.saturation, self.max_value, g)
            x = (raw - self.mean) / self.std
        if self.rotation > 0:
            x = random_rotation(x, self.rotation, g)
        return x

    def _alternate(self, x: torch.Tensor, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = len(self.x)
        if self.sides is None:
            self.sides = torch.rand(n, device=idx.device, generator=g) < 0.5
        odd = (self.served // n) % 2 == 1
        self.served += len(idx)
        chosen = (self.sides[idx] ^ odd).nonzero().squeeze(1)
        return x.index_copy_(0, chosen, x.index_select(0, chosen).flip(3))


def _uniform(n: int, low: float, high: float, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, device=x.device, generator=g, dtype=x.dtype) * (high - low) + low


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each image with p = 0.5, in place: only the chosen images are rewritten."""
    chosen = (torch.rand(x.shape[0], device=x.device, generator=g) < 0.5).nonzero().squeeze(1)
    return x.index_copy_(0, chosen, x.index_select(0, chosen).flip(3))


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), device=x.device, generator=g)
    return crop_windows(x, pad)[torch.arange(n, device=x.device), :, dy, dx]


def crop_windows(x: torch.Tensor, pad: int) -> torch.Tensor:
    """View (N, C, 2p+1, 2p+1, H, W) of every crop of x zero-padded by pad (0 = the channel mean)."""
    return F.pad(x, (pad,) * 4).unfold(2, x.shape[2], 1).unfold(3, x.shape[3], 1)


def colour_jitter(
    raw: torch.Tensor, brightness: float, saturation: float, max_value: float, g: torch.Generator
) -> torch.Tensor:
    """raw: NCHW in pixel units; brightness scales, saturation blends with the gray image."""
    n = raw.shape[0]
    if brightness > 0:
        raw = raw * _uniform(n, 1 - brightness, 1 + brightness, raw, g)[:, None, None, None]
    if saturation > 0 and raw.shape[1] == 3:
        weights = torch.tensor(GRAY, device=raw.device, dtype=raw.dtype)[None, :, None, None]
        gray = (raw * weights).sum(1, keepdim=True)
        factor = _uniform(n, 1 - saturation, 1 + saturation, raw, g)[:, None, None, None]
        raw = gray + factor * (raw - gray)
    return raw.clamp(0, max_value)


def random_rotation(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    angle = _uniform(x.shape[0], -degrees, degrees, x, g) * (math.pi / 180)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class Mixer:
    """Mixup and cutmix of a whole batch: each batch is blended with a shuffled copy of itself
    (mixup: the whole image, cutmix: one box) in a share lam ~ Beta(alpha, alpha); the targets are
    mixed in the same share. With both on, each batch uses one of them, drawn with p = 0.5."""

    def __init__(self, mixup: float, cutmix: float, n_classes: int, seed: int) -> None:
        self.mixup, self.cutmix, self.n_classes = float(mixup), float(cutmix), n_classes
        self.rng = np.random.default_rng(seed)  # torch has no seeded Beta draws; one scalar a batch

    @property
    def on(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed images, soft targets (N, n_classes)); cutmix writes into x, the batch's own copy."""
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or self.rng.random() < 0.5)
        lam = float(self.rng.beta(*(2 * [self.cutmix if use_cutmix else self.mixup])))
        perm = torch.randperm(len(x), device=x.device, generator=g)
        if use_cutmix:
            x, lam = self._box(x, perm, lam)
        else:
            x = torch.lerp(x[perm], x, lam)  # lam x + (1 - lam) x[perm]
        onehot = F.one_hot(y, self.n_classes).to(x.dtype)
        return x, torch.lerp(onehot[perm], onehot, lam)

    def _box(self, x: torch.Tensor, perm: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
        """Paste a box of about (1 - lam) of the area from the shuffled batch; lam is then the share
        of pixels that stayed (the box is clipped at the borders)."""
        h, w = x.shape[2], x.shape[3]
        side = math.sqrt(1 - lam)
        ch, cw = int(h * side), int(w * side)
        cy, cx = int(self.rng.integers(h)), int(self.rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        return x, 1 - (y1 - y0) * (x1 - x0) / (h * w)
