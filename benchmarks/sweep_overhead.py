"""Per-trial overhead of the sweep machinery (Hydra job setup, Optuna ask/tell, files written).

    python benchmarks/sweep_overhead.py [--trials 12] [--repeats 3]
    python benchmarks/sweep_overhead.py --tiny      # 2 and 3 trials once (CI): it runs, figures meaningless

Runs the same tiny digits sweep with 2 and with --trials trials in fresh folders; the difference
in wall time, divided by the extra trials, is the cost of one trial (process start-up and
imports cancel out). Subtracting the trials' own training seconds leaves the overhead.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

TINY = ("data=digits", "data_size.train=100", "data_size.val=50", "trainer.epochs=1", "save_model=false")


def run_sweep(n_trials: int) -> tuple[float, float]:
    """Wall seconds of the whole command, and the seconds the trials spent in fit()."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "mlp_sweep", "-m", *TINY, f"hydra.sweeper.n_trials={n_trials}"],
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name="tpe-digits-20k", storage=f"sqlite:///{Path(tmp)}/outputs/optuna.db")
        assert len(study.trials) == n_trials
        return wall, sum(t.user_attrs["seconds"] for t in study.trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="2 and 3 trials once (CI): it runs, figures meaningless")
    args = parser.parse_args()
    if args.tiny:
        args.trials, args.repeats = 3, 1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_trial, overhead = [], []
    for _ in range(args.repeats):
        small_wall, small_fit = run_sweep(2)
        big_wall, big_fit = run_sweep(args.trials)
        extra = args.trials - 2
        per_trial.append((big_wall - small_wall) / extra)
        overhead.append((big_wall - small_wall - (big_fit - small_fit)) / extra)
        print(f"  2 trials {small_wall:6.2f} s, {args.trials} trials {big_wall:6.2f} s")
    print(
        f"\nper trial, median of {args.repeats}: {statistics.median(per_trial):.3f} s in all, "
        f"{statistics.median(overhead):.3f} s of it outside training (target < 0.5 s)"
    )


if __name__ == "__main__":
    main()
