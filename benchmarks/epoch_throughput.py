"""Training throughput: the project's path against a tutorial-style DataLoader, and GFLOP/s against peak.

    python benchmarks/epoch_throughput.py [--epochs 3] [--repeats 3]
    python benchmarks/epoch_throughput.py --tiny     # seconds: checks that it runs (CI), figures meaningless

Uses the real CIFAR-10 file from $MLP_SWEEP_DATA_DIR or ../shared/cifar10. Prints medians over
--repeats runs of each measurement, interleaved, so both sides see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from mlp_sweep import data
from mlp_sweep.model import build
from mlp_sweep.train import fit, set_threads

ROOT = Path(__file__).resolve().parents[1]


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=list(overrides))


def project_images_per_second(cfg) -> float:
    splits = data.load(cfg.data, cfg.data_size, cfg.trainer.seed, "cpu")
    torch.manual_seed(0)
    model = build(splits.in_features, splits.n_classes, **cfg.model)
    make_opt = instantiate(cfg.optimizer, _execution_whitelist_=("torch.optim.*",))
    return fit(model, splits, make_opt, cfg.trainer, cfg.augment).images_per_second


def reference_images_per_second(x: np.ndarray, y: np.ndarray, epochs: int, workers: int) -> float:
    """The tutorial way: PIL images, per-sample torchvision transforms, DataLoader workers."""
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.491, 0.482, 0.447), (0.247, 0.243, 0.262)),
        ]
    )

    class Cifar(torch.utils.data.Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return tf(Image.fromarray(x[i])), int(y[i])

    loader = torch.utils.data.DataLoader(
        Cifar(), batch_size=256, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3072, 200), nn.LeakyReLU(), nn.Linear(200, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(yb)
    return seen / (time.perf_counter() - start)


def matmul_peak_gflops(shapes: list[tuple[int, int, int]], seconds: float) -> float:
    """Best fp32 GFLOP/s of torch.mm over the (m, k, n) shapes a training step uses."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
    return best


def training_flops_per_image(sizes: list[int]) -> float:
    """The matrix products autograd computes, per image: forward 2 FLOPs per weight, the weight
    gradient 2 more, the input gradient 2 more, except for the first layer, whose input (the
    images) needs no gradient: 4 per weight there, 6 elsewhere."""
    layers = [a * b for a, b in zip(sizes, sizes[1:], strict=False)]
    return 4.0 * layers[0] + 6.0 * sum(layers[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--tiny", action="store_true", help="a few seconds on 512 images (CI): it runs, figures meaningless"
    )
    args = parser.parse_args()
    images, peak_seconds, size = 20000, 1.0, ("data_size=20k",)
    if args.tiny:
        args.epochs, args.repeats, images, peak_seconds = 1, 1, 512, 0.05
        size = ("data_size.train=512", "data_size.val=256")
    root = os.environ.get("MLP_SWEEP_DATA_DIR") or str(ROOT.parent / "shared" / "cifar10")
    os.environ["MLP_SWEEP_DATA_DIR"] = root
    threads = set_threads(0)
    print(f"torch {torch.__version__}, {threads} threads, data {root}")

    common = (*size, "trainer.batch_size=256", "trainer.patience=0", f"trainer.epochs={args.epochs}")
    against_reference(args, common, root, images)
    wide_model(args, common, images, peak_seconds)


def against_reference(args: argparse.Namespace, common: tuple, root: str, images: int) -> None:
    """The project's epoch against torchvision transforms and a DataLoader, images per second."""
    small = config(*common, "augment=flip_crop", "model.hidden_size=200", "model.activation=leaky_relu")
    raw = data.raw_images("cifar10", str(Path(root).resolve()), True, small.data.url, small.data.md5)
    x_ref, y_ref = raw.x_train[:images], raw.y_train[:images]
    ours, ref = [], {0: [], 2: []}  # DataLoader workers: 0 is its default, 2 the torchvision tutorial's
    for _ in range(args.repeats):
        ours.append(project_images_per_second(small))
        for workers, runs in ref.items():
            runs.append(reference_images_per_second(x_ref, y_ref, 1, workers))
    o = statistics.median(ours)
    print(
        f"\n3072-200-10 LeakyReLU, Adam, batch 256, flip + crop, {images:,} images (median of {args.repeats}, images/s)"
    )
    print(f"  project (tensors in memory, batched augmentation): {o:9,.0f}")
    for workers, runs in ref.items():
        r = statistics.median(runs)
        print(
            f"  reference, torchvision transforms + DataLoader, {workers} workers: {r:9,.0f}   "
            f"project / reference: {o / r:4.1f}x  (target >= 10x)"
        )


def wide_model(args: argparse.Namespace, common: tuple, images: int, peak_seconds: float) -> None:
    """A wide model's achieved GFLOP/s against this machine's fp32 matmul peak, in fp32 and bf16."""
    sizes = [3072, 1024, 1024, 10]
    wide_overrides = (*common, "augment=none", "model.num_layers=3", "model.hidden_size=1024", "trainer.batch_size=512")
    shapes = [(512, 3072, 1024), (512, 1024, 1024), (1024, 512, 3072), (512, 1024, 3072)]
    print(f"\n3072-1024-1024-10, batch 512, no augmentation, {images:,} images")
    for precision in ("fp32", "bf16"):
        wide = config(*wide_overrides, f"trainer.precision={precision}")
        achieved, peaks = [], []
        for _ in range(args.repeats):
            peaks.append(matmul_peak_gflops(shapes, peak_seconds))
            achieved.append(project_images_per_second(wide) * training_flops_per_image(sizes) / 1e9)
        a, p = statistics.median(achieved), statistics.median(peaks)
        print(
            f"  {precision}: {a:6.1f} GFLOP/s achieved, fp32 matmul peak {p:6.1f} GFLOP/s: {a / p:5.1%}"
            + ("  (target >= 50 %)" if precision == "fp32" else "")
        )


if __name__ == "__main__":
    main()
