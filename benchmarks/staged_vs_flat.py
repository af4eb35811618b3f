"""The staged search against the flat TPE preset given the same wall time, on CIFAR-10.

    python benchmarks/staged_vs_flat.py [--data-size 20k]
    python benchmarks/staged_vs_flat.py --tiny    # digits, two stages of 2 and 1 trials (CI): figures meaningless

Runs `hparams_search=staged` to the end and times it; then runs the default `tpe` preset on the
last stage's data size for the same wall time (stopped by SIGTERM, which the sweeper handles like
Ctrl-C). Prints each one's trials and the validation and test accuracy of its best trial.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna


def best(storage: str, name: str) -> tuple[int, float, float]:
    study = optuna.load_study(study_name=name, storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    b = study.best_trial
    return len(finished), b.value, b.user_attrs["test_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-size", default="20k", help="the flat sweep's data size (the staged preset's last)")
    parser.add_argument("--tiny", action="store_true", help="digits, two stages of 2 and 1 trials (CI)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data, sizes, extra, staged = "cifar10", ("1k", "10k", "20k"), [], ["hparams_search=staged"]
    if args.tiny:
        data, sizes, args.data_size = "digits", ("1k", "20k"), "20k"
        extra = ["data=digits", "trainer.epochs=1"]
        staged.append("hydra.sweeper.stages=[{data_size: 1k, n_trials: 2, keep: 0.5}, {data_size: 20k, n_trials: 1}]")
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/bench.db"
        common = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.artifact_dir=null", "save_model=false", *extra]
        base = [sys.executable, "-m", "mlp_sweep", "-m", *common]
        t0 = time.perf_counter()
        subprocess.run([*base, *staged], cwd=tmp, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        print(f"staged: {wall:.0f} s")
        for size in sizes:
            n, val, test = best(storage, f"staged-{data}-{size}")
            print(f"  stage {size}: {n} trials, best val {val:.2%}, its test {test:.2%}")
        flat = subprocess.Popen(
            [*base, f"data_size={args.data_size}", "hydra.sweeper.n_trials=1000", "hydra.sweeper.study_name=flat"],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            flat.wait(timeout=wall)
        except subprocess.TimeoutExpired:
            flat.send_signal(signal.SIGTERM)
            flat.wait(timeout=300)
        n, val, test = best(storage, "flat")
        print(f"flat tpe on {args.data_size}, same {wall:.0f} s: {n} trials, best val {val:.2%}, its test {test:.2%}")
        print(Path(tmp, "outputs", "sweeps", f"staged-{data}", "stages.md").read_text())


if __name__ == "__main__":
    main()
