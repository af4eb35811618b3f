"""What each option adds to a recipe on CIFAR-10: seeded single runs of the CLI, side by side, with
the training budget of each counted as (6 x trained + 2 x fixed parameters) x training images x
epochs run (TFLOP).

    python benchmarks/ablation.py                                  # every row, 3 seeds
    python benchmarks/ablation.py --seeds 0 --base trainer.epochs=20 --only recipe no_zca mixup
    python benchmarks/ablation.py --out outputs/ablation           # finished runs there are reused
    python benchmarks/ablation.py --base trainer.precision=bf16    # ~3x faster where the CPU has bf16 units
    python benchmarks/ablation.py --only best_mlp long_mlp         # the two recipes
    python benchmarks/ablation.py --tiny      # digits, 1 epoch, recipe and no_zca (CI): figures meaningless

Each row is the base, experiment=zca_mlp (the 71 % recipe), with one option changed, or one of the
recipes built from the rows (TTA is a column: every run reports it). Prints
per-run figures as they come, then a table: validation accuracy (plain and with the recipe's
test-time views), each row's gain over the base on validation and the decision it gives, then test
accuracy beside (plain, mirror image, the views), mean +- standard deviation over the seeds, the
lowest seed, seconds per run, TFLOP and the machine. Decisions are made on validation only.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _sweep import app, in_this_process

# name -> overrides on top of experiment=zca_mlp (ZCA, 3072-1024-1024-10, 70 epochs: 79.6 TFLOP);
# an "experiment=" override replaces the base
BASE = "zca_mlp"
MARGIN = 0.003  # a row is switched on when it gains this much validation accuracy (and on every seed)
VARIANTS = {
    "recipe": (),
    "no_zca": ("data.whiten=none",),
    "no_zca_40_epochs": ("data.whiten=none", "trainer.epochs=40"),  # the recipe before whitening
    "mixup": ("augment.mixup=0.1",),
    "ema": ("trainer.ema=0.999",),
    "width_2048": ("model.hidden_size=2048", "trainer.epochs=28"),  # the same budget, wider and shorter
    "smoothing_0.3": ("trainer.label_smoothing=0.3",),
    "lion": ("optimizer=lion",),
    "batch_1024": ("trainer.batch_size=1024", "optimizer.lr=2e-3"),
    "alternate_flips": ("augment.flip=alternate",),
    "residual": ("model.block=residual", "model.hidden_size=512", "trainer.epochs=80"),  # 1 block 512-2048-512
    "epochs_175": ("trainer.epochs=175",),  # 199 TFLOP
    # the recipes: best_mlp is zca_mlp with data.project=512 trainer.epochs=140 (79.9 TFLOP),
    # long_mlp the same for 350 epochs (199.7 TFLOP)
    "best_mlp": ("experiment=best_mlp",),
    "long_mlp": ("experiment=long_mlp",),
}


def run(out: Path, name: str, seed: int, overrides: tuple[str, ...], threads: int) -> dict:
    where = out / f"{name}-seed{seed}"
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), BASE)
    overrides = tuple(o for o in overrides if not o.startswith("experiment="))
    metrics_file = where / "metrics.json"
    if not metrics_file.is_file():
        command = [
            f"experiment={experiment}",
            *overrides,
            f"trainer.seed={seed}",
            f"trainer.threads={threads}",
            "trainer.tta=true",
            "save_model=false",
            f"hydra.run.dir={where}",
        ]
        t0 = time.perf_counter()
        done = app(command)
        if done.returncode != 0:  # the app's own error
            sys.exit(f"mlp_sweep {' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        print(f"  ({time.perf_counter() - t0:.0f} s wall)", end="")
    return json.loads(metrics_file.read_text())


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def mirror(runs: list[dict]) -> str:
    """The mirror-only figure: its own field when shifts were on too, else the TTA figure itself."""
    values = [r["test_acc_mirror"] if r.get("test_acc_mirror") is not None else r["test_acc_tta"] for r in runs]
    return summary(values)


def decide(runs: list[dict], base: list[dict] | None) -> tuple[str, str]:
    """The row against the base, on validation with the views, seed by seed (paired: each seed has
    its own validation split); its mean gain in points and what it means."""
    if not base:
        return "–", "– (no base row)"
    pairs = [(r["val_acc_tta"], b["val_acc_tta"]) for r, b in zip(runs, base, strict=False)]
    gains = [100 * (r - b) for r, b in pairs]
    mean = statistics.mean(gains)
    if mean >= 100 * MARGIN and all(g > 0 for g in gains):
        decision = "on"
    elif mean < 0:
        decision = "off"
    else:
        decision = "noise"
    return f"{mean:+.2f}", decision


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
    in_this_process(args.tiny)  # its runs in this process: a tiny run's figures are meaningless
    if args.tiny:
        args.seeds, args.only = [0], ["recipe", "no_zca"]
        args.base = [*args.base, "data=digits", "data_size=1k", "trainer.epochs=1"]
        args.out = Path(tempfile.mkdtemp(prefix="ablation-tiny-"))
        atexit.register(shutil.rmtree, args.out, True)

    rows = {name: variant_runs(args, name) for name in args.only}
    table(rows)
    print(
        f"\nseeds {args.seeds}; every run: experiment={BASE} (unless the row names another) trainer.tta=true "
        + " ".join(args.base)
    )
    print(f"{cores()} cores: {cpu_name()}")


def variant_runs(args: argparse.Namespace, name: str) -> list[dict]:
    """One variant's run per seed, each said as it ends."""
    runs = []
    for seed in args.seeds:
        print(f"{name} seed {seed}", end="", flush=True)
        m = run(args.out, name, seed, (*VARIANTS[name], *args.base), args.threads)
        runs.append(m)
        print(
            f": validation {100 * m['val_acc']:.2f} % (views {100 * m['val_acc_tta']:.2f} %), "
            f"test {100 * m['test_acc']:.2f} % (views {100 * m['test_acc_tta']:.2f} %), "
            f"{m['seconds']:.0f} s, {m['train_tflop']:.1f} TFLOP",
            flush=True,
        )
    return runs


def table(rows: dict[str, list[dict]]) -> None:
    """The variants side by side, with each one's decision on validation."""
    print(
        "\n| variant | seeds | val % | val, views % | Δ val, views (paired) | decision (validation) "
        "| test % | test, mirror % | test, views % | lowest seed (test, views) % | seconds | TFLOP |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    base = rows.get("recipe")
    for name, runs in rows.items():
        tests, tta = [r["test_acc"] for r in runs], [r["test_acc_tta"] for r in runs]
        gain, decision = decide(runs, base) if name != "recipe" else ("–", "the base")
        print(
            f"| {name} ({', '.join(VARIANTS[name]) or f'as in {BASE}.yaml'}) | {len(runs)} | "
            f"{summary([r['val_acc'] for r in runs])} | {summary([r['val_acc_tta'] for r in runs])} | {gain} | "
            f"{decision} | {summary(tests)} | {mirror(runs)} | {summary(tta)} | {100 * min(tta):.2f} | "
            f"{statistics.median(r['seconds'] for r in runs):.0f} | {runs[0]['train_tflop']:.1f} |"
        )
    print(
        "\nDecisions on validation only, with the recipe's views, each seed against the base's run of the"
        " same seed (the same validation split): 'on' where the row beats the base on every seed by "
        f"{100 * MARGIN:.1f} points or more on average, 'off' where it is behind on average, 'noise' otherwise."
        " Test is printed beside, never used."
    )


if __name__ == "__main__":
    main()
