"""Stacked trials against one trial a job: the default sweep's space on CIFAR-10, the same sampler
seed, side by side in one run; first with pruning off (the same trials' work for both), then with the
presets' pruner.

    python benchmarks/stacked.py                    # 16 trials, data_size=20k, stacks of 8
    python benchmarks/stacked.py --trials 32 --stack 16
    python benchmarks/stacked.py --tiny             # digits, 4 trials, stacks of 2 (CI): figures meaningless

Prints, per pruner and stack size: wall time, trials per hour, epochs run, the best validation
accuracy (and its trial's test accuracy); then the ratios of stacked to unstacked.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import optuna
from _sweep import timed_sweep

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--stack", type=int, default=8, help="K, the trials one job trains together")
    parser.add_argument("--data-size", default="20k")
    parser.add_argument("--pruners", nargs="+", default=["none", "epoch_halving"])
    parser.add_argument("--tiny", action="store_true", help="digits, 4 trials, stacks of 2, no pruner (CI)")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
