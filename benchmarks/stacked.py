"""Stacked trials against one trial a job: the default sweep's space on CIFAR-10, the same sampler
seed, side by side in one run; first with pruning off (the same trials' work for both), then with the
presets' pruner.

    python benchmarks/stacked.py                    # 16 trials, data_size=20k, stacks of 8
    python benchmarks/stacked.py --trials 32 --stack 16
    python benchmarks/stacked.py --tiny             # digits, 4 trials, stacks of 2 (CI): figures meaningless
    python benchmarks/stacked.py --products         # only the first layer's product at a stack's widths

Prints, per pruner and stack size: wall time, trials per hour, epochs run, the best validation
accuracy (and its trial's test accuracy); then the ratios of stacked to unstacked. `--products`
prints what bounds the gain on a CPU: GFLOP/s of the first layer's forward and weight-gradient
products, (256 x 3072) @ (3072 x N), at one member's width and at stacks' widths.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch
from _sweep import in_this_process, timed_sweep

from mlp_sweep.train import cores


def run(out: Path, name: str, stack: int, pruner: str, trials: int, data: tuple[str, ...]) -> dict:
    overrides = (*data, f"hydra/sweeper/pruner={pruner}", f"hydra.sweeper.stack={stack}")
    wall, study = timed_sweep(out, name, *overrides, f"hydra.sweeper.n_trials={trials}")
    best = study.best_trial
    return {
        "wall": wall,
        "per_hour": 3600 * len(study.trials) / wall,
        "epochs": sum(t.user_attrs.get("epochs_run", 0) for t in study.trials),
        "val": best.value,
        "test": best.user_attrs["test_acc"],
    }


def products(widths: tuple[int, ...] = (200, 300, 800, 1600, 2400, 3200), batch: int = 256) -> None:
    """Median GFLOP/s of 30 runs of each product, on the cores this process may use."""
    torch.set_num_threads(cores())

    def rate(f, flop: float) -> float:
        for _ in range(3):
            f()
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return flop / statistics.median(times) / 1e9

    x = torch.randn(batch, 3072)
    print(f"{cores()} threads, batch {batch}, fp32, torch {torch.__version__}")
    print("\n| N | " + " | ".join(map(str, widths)) + " |\n|---|" + "---:|" * len(widths))
    forward, gradient = [], []
    for n in widths:
        w, g = torch.randn(3072, n), torch.randn(batch, n)
        forward.append(rate(lambda: x @ w, 2 * batch * 3072 * n))  # noqa: B023 (timed at once)
        gradient.append(rate(lambda: x.T @ g, 2 * batch * 3072 * n))  # noqa: B023
    print("| forward product, GFLOP/s | " + " | ".join(f"{r:.0f}" for r in forward) + " |")
    print("| weight-gradient product, GFLOP/s | " + " | ".join(f"{r:.0f}" for r in gradient) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--stack", type=int, default=8, help="K, the trials one job trains together")
    parser.add_argument("--data-size", default="20k")
    parser.add_argument("--pruners", nargs="+", default=["none", "epoch_halving"])
    parser.add_argument("--tiny", action="store_true", help="digits, 4 trials, stacks of 2, no pruner (CI)")
    parser.add_argument("--products", action="store_true", help="only the first layer's products, by width")
    args = parser.parse_args()
    in_this_process(args.tiny)  # its sweeps in this process: a tiny run's figures are meaningless
    if args.products:
        products()
        return
    data = (f"data_size={args.data_size}",)
    if args.tiny:
        args.trials, args.stack, args.pruners = 4, 2, ["none"]
        data = ("data=digits", "data_size=1k", "trainer.epochs=2")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{cores()} cores; {args.trials} trials a sweep, {' '.join(data)}, the tpe preset's space, sampler seed 0")
    print("\n| pruner | stack | wall s | trials/h | epochs | best val | its test |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in args.pruners:
            rows = {}
            for stack in (1, args.stack):
                r = run(Path(tmp), f"{pruner}-k{stack}", stack, pruner, args.trials, data)
                rows[stack] = r
                print(
                    f"| {pruner} | {stack} | {r['wall']:.0f} | {r['per_hour']:.0f} | {r['epochs']} | "
                    f"{r['val']:.2%} | {r['test']:.2%} |",
                    flush=True,
                )
            one, many = rows[1], rows[args.stack]
            gain = many["per_hour"] / one["per_hour"]
            ratios.append(
                f"pruner {pruner}: stack={args.stack} / stack=1 trials per hour {gain:.2f}x, "
                f"best val {100 * (many['val'] - one['val']):+.2f} points"
            )
    print()
    print("\n".join(ratios))
    if args.tiny:
        print()
        products((200, 400))


if __name__ == "__main__":
    main()
