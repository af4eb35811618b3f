"""How far bf16 can speed up one training step of the default sweep's models on this machine:
the ceiling under any sweep-level figure of benchmarks/sweep_speed.py.

    python benchmarks/step_ceiling.py                   # widths 170 275 390, 5 interleaved rounds
    python benchmarks/step_ceiling.py --widths 275 --rounds 9
    python benchmarks/step_ceiling.py --tiny            # width 32, one round (CI): figures meaningless

For 3072-W-W-10 (the tpe preset's space: 3 Linear layers, W from 150 to 400), images per second of
one training step (forward, backward, fused Adam) as the app runs it (mlp_sweep.model.build,
mlp_sweep.precision.autocast, keep_freed_memory), each against fp32 at batch 256, the sweep's
default: bf16 at batch 256, 512 and 1024, and the bound of bf16 at batch 256 if nothing but its
products cost time (the step's eight products in bf16 on ready bf16 tensors). Every
configuration is timed once a round, the rounds interleaved, and each figure is the median of
its rounds: the machine is shared, so compare only within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mlp_sweep.model import build
from mlp_sweep.precision import autocast, bf16_units
from mlp_sweep.train import cores, keep_freed_memory

FEATURES, CLASSES = 3072, 10
ROWS = (("fp32", 256), ("bf16", 256), ("bf16", 512), ("bf16", 1024))
AGAINST_FP32 = ("bf16/256", "bf16/512", "bf16/1024", "bf16 products only/256")  # the table's ratio columns


def training_step(width: int, precision: str, batch: int) -> Callable[[], None]:
    """One step of the app's model and optimizer at this width, precision and batch size."""
    torch.manual_seed(0)
    model = build(FEATURES, CLASSES, num_layers=3, hidden_size=width, activation="relu", dropout=0.0, norm="none")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5, fused=True)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, CLASSES, (batch,))
    amp = autocast(torch.device("cpu"), precision)

    def step() -> None:
        with amp:
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def products_only(width: int, batch: int) -> Callable[[], None]:
    """The bf16 products of one step and nothing else: three forward products, three weight
    gradients and two input gradients (the images need none)."""
    bf = torch.bfloat16
    x = torch.randn(batch, FEATURES, dtype=bf)
    w1, w2, w3 = (torch.randn(o, i, dtype=bf) for o, i in ((width, FEATURES), (width, width), (CLASSES, width)))
    h1, h2, g2, g1 = (torch.randn(batch, width, dtype=bf) for _ in range(4))
    g3 = torch.randn(batch, CLASSES, dtype=bf)

    def step() -> None:
        F.linear(x, w1), F.linear(h1, w2), F.linear(h2, w3)
        g3.t() @ h2, g3 @ w3, g2.t() @ h1, g2 @ w2, g1.t() @ x

    return step


def seconds(step: Callable[[], None], repeats: int) -> float:
    """Median seconds of one call, after two warm-up calls."""
    step(), step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(width: int, rounds: int, repeats: int) -> dict[str, float]:
    """Images per second of each row at this width: the median over interleaved rounds."""
    steps = {f"{p}/{b}": (training_step(width, p, b), b) for p, b in ROWS}
    steps["bf16 products only/256"] = (products_only(width, 256), 256)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, (step, batch) in steps.items():
            rates[name].append(batch / seconds(step, repeats))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[170, 275, 390])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="steps timed per configuration and round")
    parser.add_argument("--tiny", action="store_true", help="width 32, one round of 2 steps (CI)")
    args = parser.parse_args()
    if args.tiny:
        args.widths, args.rounds, args.repeats = [32], 1, 2
    torch.set_num_threads(cores())
    keep_freed_memory()  # as training does
    print(f"{cores()} cores, torch {torch.__version__}, bf16 units: {bf16_units('cpu') or 'none'}")
    print("\n| width | fp32/256 img/s | bf16/256 | bf16/512 | bf16/1024 | bf16/256, products only |")
    print("|---:|---:|---:|---:|---:|---:|")
    for width in args.widths:
        r = measure(width, args.rounds, args.repeats)
        base = r["fp32/256"]
        ratios = " | ".join(f"{r[k] / base:.2f}x" for k in AGAINST_FP32)
        print(f"| {width} | {base:,.0f} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
