"""Trials per hour with one trial at a time (K=1, all cores) and K trials side by side (the cores
shared out), through the joblib launcher: the default search space on CIFAR-10, the random sampler
with one seed, so each K trains the same parameter sets. A second space makes some trials three
times as long as others (trainer.epochs=choice(E, 3E)), to show no trial waits for a slower one:
its lock-step figure is the time batches of K that start together and wait for their slowest
would leave places idle, from the same measured trial durations.

    python benchmarks/parallel.py                          # 12 trials, data_size=10k, 3 epochs, K=2
    python benchmarks/parallel.py --trials 8 --jobs 4 --data-size 20k --epochs 2
    python benchmarks/parallel.py --tiny                   # digits, 2 trials, one space (CI): figures meaningless

Prints, per space and K: wall time, trials per hour, the ratio to K=1; and the lock-step idle time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _sweep import in_this_process, timed_sweep

from mlp_sweep.train import cores

SPACE = (  # the default preset's space, spelled out so that a space with trainer.epochs can add to it
    "optimizer.lr=tag(log,interval(1e-5,1e-3))",
    "optimizer.weight_decay=tag(log,interval(1e-5,1e-4))",
    "model.hidden_size=int(interval(150,400))",
    "model.num_layers=int(interval(2,3))",
    "model.activation=choice(relu,leaky_relu)",
)


def run(out: Path, name: str, jobs: int, trials: int, data: tuple[str, ...], epochs: str) -> dict:
    threads = max(1, cores() // jobs)
    wall, study = timed_sweep(
        out,
        name,
        "hparams_search=random",
        *SPACE,
        "hydra/sweeper/pruner=none",  # every trial runs all its epochs: the same work for each K
        *data,
        f"trainer.epochs={epochs}",
        "trainer.patience=0",
        f"trainer.threads={threads}",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={jobs}",
        f"hydra.sweeper.n_jobs={jobs}",
        f"hydra.sweeper.n_trials={trials}",
    )
    done = study.trials
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    # batches of `jobs` consecutive trials, each waiting for its slowest: the places left idle
    batches = [durations[i : i + jobs] for i in range(0, len(durations), jobs)]
    idle = sum(jobs * max(b) - sum(b) for b in batches)
    return {
        "jobs": jobs,
        "threads": threads,
        "wall": wall,
        "per_hour": 3600 * len(done) / wall,
        "trial_median": statistics.median(durations),
        "busy": sum(durations),
        "idle": idle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2, help="K, the trials side by side")
    parser.add_argument("--data-size", default="10k")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="digits, 2 trials, one space (CI): figures meaningless")
    args = parser.parse_args()
    in_this_process(args.tiny)  # its sweeps in this process: a tiny run's figures are meaningless
    data = (f"data_size={args.data_size}",)
    spaces = {"default": str(args.epochs), "mixed (3x)": f"choice({args.epochs},{3 * args.epochs})"}
    if args.tiny:
        args.trials, args.epochs, data = 2, 1, ("data=digits", "data_size=1k")
        spaces = {"default": "1"}
    print(f"{cores()} cores; {args.trials} trials per run, {' '.join(data)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for space, epochs in spaces.items():
            rows = []
            for jobs in (1, args.jobs):
                name = f"{space.split()[0]}-k{jobs}"
                rows.append(run(out, name, jobs, args.trials, data, epochs))
                r = rows[-1]
                print(
                    f"{space:11s} K={r['jobs']} ({r['threads']} thread(s) each): {r['wall']:7.1f} s wall, "
                    f"{r['per_hour']:7.1f} trials/h, median trial {r['trial_median']:.1f} s",
                    flush=True,
                )
            one, many = rows
            print(f"{space:11s} K={args.jobs} / K=1 trials per hour: {many['per_hour'] / one['per_hour']:.2f}x")
            print(
                f"{space:11s} K={args.jobs}: lock-step batches of the same trials would leave their places idle "
                f"{many['idle']:.1f} s, {100 * many['idle'] / many['busy']:.0f}% of the {many['busy']:.1f} s "
                "of training; here none waits",
                flush=True,
            )


if __name__ == "__main__":
    main()
