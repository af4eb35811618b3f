"""What each option adds to a recipe on CIFAR-10: seeded single runs of the CLI, side by side, with
the training budget of each counted as 6 x parameters x training images x epochs run (TFLOP).

    python benchmarks/ablation.py                                  # experiment=best_mlp, its ablations, 3 seeds
    python benchmarks/ablation.py --seeds 0 --base trainer.epochs=20 --only recipe no_zca mixup
    python benchmarks/ablation.py --out outputs/ablation           # finished runs there are reused
    python benchmarks/ablation.py --tiny      # digits, 1 epoch, recipe and no_zca (CI): figures meaningless

Each row is the recipe with one option changed (TTA is a column: every run reports it). Prints
per-run figures as they come, then a table: test accuracy (plain and with flipped test images),
mean +- standard deviation over the seeds, the lowest seed, seconds per run and TFLOP.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> overrides on top of experiment=best_mlp (ZCA, 3072-1024-1024-10, 70 epochs: 79.6 TFLOP)
VARIANTS = {
    "recipe": (),
    "no_zca": ("data.whiten=none",),
    "no_zca_40_epochs": ("data.whiten=none", "trainer.epochs=40"),  # the recipe before whitening
    "mixup": ("augment.mixup=0.1",),
    "ema": ("trainer.ema=0.999",),
    "width_2048": ("model.hidden_size=2048", "trainer.epochs=28"),  # the same budget, wider and shorter
}


def run(out: Path, name: str, seed: int, overrides: tuple[str, ...], threads: int) -> dict:
    where = out / f"{name}-seed{seed}"
    metrics_file = where / "metrics.json"
    if not metrics_file.is_file():
        command = [
            sys.executable,
            "-m",
            "mlp_sweep",
            "experiment=best_mlp",
            *overrides,
            f"trainer.seed={seed}",
            f"trainer.threads={threads}",
            "trainer.tta=true",
            "save_model=false",
            f"hydra.run.dir={where}",
        ]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"  ({time.perf_counter() - t0:.0f} s wall)", end="")
    return json.loads(metrics_file.read_text())


def summary(values: list[float]) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--base", nargs="*", default=[], help="overrides for every run, e.g. trainer.epochs=20")
    parser.add_argument("--threads", type=int, default=0, help="torch threads a run (0 = all cores)")
    parser.add_argument("--out", type=Path, default=Path("outputs/ablation"))
    parser.add_argument("--tiny", action="store_true", help="digits, 1 epoch, 2 variants, in a temporary folder (CI)")
    args = parser.parse_args()
    if args.tiny:
        args.seeds, args.only = [0], ["recipe", "no_zca"]
        args.base = [*args.base, "data=digits", "data_size=1k", "trainer.epochs=1"]
        args.out = Path(tempfile.mkdtemp(prefix="ablation-tiny-"))
        atexit.register(shutil.rmtree, args.out, True)

    rows = {}
    for name in args.only:
        runs = []
        for seed in args.seeds:
            print(f"{name} seed {seed}", end="", flush=True)
            m = run(args.out, name, seed, (*VARIANTS[name], *args.base), args.threads)
            runs.append(m)
            print(
                f": test {100 * m['test_acc']:.2f} %, with flips {100 * m['test_acc_tta']:.2f} %, "
                f"{m['seconds']:.0f} s, {m['train_tflop']:.1f} TFLOP",
                flush=True,
            )
        rows[name] = runs

    print("\n| variant | seeds | test accuracy % | with flipped test images % | lowest seed % | seconds | TFLOP |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in rows.items():
        tests = [r["test_acc"] for r in runs]
        print(
            f"| {name} ({', '.join(VARIANTS[name]) or 'as in best_mlp.yaml'}) | {len(runs)} | {summary(tests)} | "
            f"{summary([r['test_acc_tta'] for r in runs])} | {100 * min(tests):.2f} | "
            f"{statistics.median(r['seconds'] for r in runs):.0f} | {runs[0]['train_tflop']:.1f} |"
        )
    print(f"\nseeds {args.seeds}; every run: experiment=best_mlp trainer.tta=true {' '.join(args.base)}")


if __name__ == "__main__":
    main()
