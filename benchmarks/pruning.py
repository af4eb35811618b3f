"""What pruning saves: the default search space on CIFAR-10, the same sampler seeds with the presets'
pruner and without any, side by side.

    python benchmarks/pruning.py                      # 3 seeds x 20 trials on data_size=10k
    python benchmarks/pruning.py --seeds 0 1 --trials 10 --data-size 1k
    python benchmarks/pruning.py --preset wide --data-size 10k --epochs 20 --trials 10 --seeds 0 \
        --pruners epoch_halving patient_halving       # the wide preset, shortened
    python benchmarks/pruning.py --tiny               # digits, 1 seed, 2 trials, 2 pruners (CI): figures meaningless

Prints, for each seed and pruner: epochs run, wall time, the best validation accuracy and the test
accuracy of that trial, and how many epochs the sweep had spent when it first reached within 0.5
points of its best; then the means and the ratio of epochs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import optuna
from _sweep import in_this_process, timed_sweep


def run(out: Path, seed: int, pruner: str, trials: int, data: tuple[str, ...]) -> dict:
    name = f"bench-{pruner}-{seed}"
    overrides = (*data, f"hydra/sweeper/pruner={pruner}", f"hydra.sweeper.sampler.seed={seed}")
    wall, study = timed_sweep(out, name, *overrides, f"hydra.sweeper.n_trials={trials}")
    best = study.best_trial
    spent, reached = 0, None
    for t in study.trials:  # in trial order: the epochs spent until a trial within 0.5 points of the best
        spent += t.user_attrs.get("epochs_run", 0)
        if reached is None and t.value is not None and t.state.name == "COMPLETE" and t.value >= best.value - 0.005:
            reached = spent
    return {
        "reached": reached,
        "seed": seed,
        "pruner": pruner,
        "epochs": sum(t.user_attrs.get("epochs_run", 0) for t in study.trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "wall": wall,
        "val": best.value,
        "test": best.user_attrs["test_acc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--data-size", default="10k")
    parser.add_argument("--preset", default=None, help="hparams_search preset (default: the app's default, tpe)")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.epochs for every trial")
    parser.add_argument(
        "--pruners",
        nargs="+",
        default=["epoch_halving", "warm_median", "fast_median", "successive_halving", "none"],
        help="hydra/sweeper/pruner options (default: the ones the results page compares)",
    )
    parser.add_argument("--tiny", action="store_true", help="digits, 1 seed, 2 trials, 2 pruners (CI)")
    args = parser.parse_args()
    in_this_process(args.tiny)  # its sweeps in this process: a tiny run's figures are meaningless
    data = (f"data_size={args.data_size}",)
    data += (f"hparams_search={args.preset}",) if args.preset else ()
    data += (f"trainer.epochs={args.epochs}",) if args.epochs else ()
    if args.tiny:
        args.seeds, args.trials, args.pruners = [0], 2, ["epoch_halving", "none"]
        data = ("data=digits", "data_size=1k", "trainer.epochs=2")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        print("| seed | pruner | epochs | pruned trials | wall s | best val | its test | epochs to best - 0.5 |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for seed in args.seeds:
            for pruner in args.pruners:  # interleaved, so that machine noise hits all alike
                r = run(Path(tmp), seed, pruner, args.trials, data)
                rows.append(r)
                print(
                    f"| {seed} | {pruner} | {r['epochs']} | {r['pruned']} | {r['wall']:.0f} | "
                    f"{r['val']:.2%} | {r['test']:.2%} | {r['reached']} |",
                    flush=True,
                )
    print()
    keys = ("epochs", "wall", "val", "test")
    mean = {p: {k: statistics.mean(r[k] for r in rows if r["pruner"] == p) for k in keys} for p in args.pruners}
    for p, m in mean.items():
        print(f"mean {p}: {m['epochs']:.0f} epochs, {m['wall']:.0f} s, best val {m['val']:.2%}, test {m['test']:.2%}")
    for p, on in mean.items():
        if p != "none" and "none" in mean:
            off = mean["none"]
            print(
                f"{p} / none: epochs {on['epochs'] / off['epochs']:.2f}x, wall {on['wall'] / off['wall']:.2f}x, "
                f"best val {100 * (on['val'] - off['val']):+.2f} points"
            )


if __name__ == "__main__":
    main()
