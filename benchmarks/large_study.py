"""The sweeper's cost per trial as a study grows to 10,000 trials, and whose cost it is.

    python benchmarks/large_study.py [--sizes 100,1000,10000] [--storages sqlite,postgresql] [--extra 40]
    python benchmarks/large_study.py --tiny     # one study of 20 trials, SQLite, 2 more (CI): figures meaningless

A trivial task (the sweeper's test app, x^2 + y^2, no steps), the random sampler, the in-process
launcher. At each size N the study is filled to N finished trials (written straight into the
storage, as the sweeper's own would be), then the same sweep command resumes it twice: by 5
trials and by 5 + EXTRA; the difference in wall time over EXTRA is one trial's cost (start-up,
the study's first read and the summary cancel out). Beside it, on the same storage and study:

- Optuna's own ask + suggest + tell of one trial (its RandomSampler), timed in this process;
- the summary command (`python -m hydra_study_sweeper.report`) rebuilding the study's summary;
- optuna-dashboard (largest size only): its first answer with every trial of the study.

What is left of a trial's cost after Optuna's ask/tell is the sweeper's and Hydra's (composing the
job's config, its folder, its logging). PostgreSQL: the machine's server at 127.0.0.1:5432
(database `test`), a study of this run's own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "sweeper" / "tests" / "apps" / "sphere.py"
DISTRIBUTIONS = {"x": FloatDistribution(-2, 2), "y": CategoricalDistribution((-1, 0, 1))}
FIRST = 5  # trials of the shorter resume


def sweep(cwd: Path, url: str, name: str, n_trials: int) -> float:
    """Wall seconds of the sweep command resuming the study to n_trials."""
    command = [
        sys.executable,
        str(APP),
        "-m",
        "hydra/sweeper/sampler=random",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.sampler.seed=1",
        "hydra.sweeper.max_failure_rate=0",
    ]
    start = time.perf_counter()
    res = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"the sweep failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return time.perf_counter() - start


def fill(study: optuna.Study, n: int, rng: random.Random) -> None:
    """Finished trials up to n, as the sweeper records them (values, a folder, a worker)."""
    left = n - len(study.get_trials(deepcopy=False))
    for _ in range(left):
        params = {"x": rng.uniform(-2, 2), "y": rng.choice((-1, 0, 1))}
        trial = optuna.trial.create_trial(
            params=params,
            distributions=DISTRIBUTIONS,
            value=params["x"] ** 2 + params["y"] ** 2,
            user_attrs={"worker": "filled", "seconds": 0.0},
        )
        study.add_trial(trial)


def optuna_cost(study: optuna.Study, n: int = 20) -> float:
    """Seconds of Optuna's own ask, suggest and tell of one trial, median of n."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        trial = study.ask()
        x = trial.suggest_float("x", -2, 2)
        y = trial.suggest_categorical("y", (-1, 0, 1))
        study.tell(trial, x**2 + y**2)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report_seconds(url: str, name: str, out: Path) -> float:
    start = time.perf_counter()
    command = [sys.executable, "-m", "hydra_study_sweeper.report", "--storage", url, "--study", name]
    subprocess.run([*command, "--out", str(out)], check=True, capture_output=True)
    return time.perf_counter() - start


def dashboard_seconds(url: str, name: str) -> float | None:
    """Seconds from asking optuna-dashboard for the study to its answer with every trial."""
    exe = Path(sys.executable).parent / "optuna-dashboard"
    if not exe.exists():
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(exe), url, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.loads(urllib.request.urlopen(base, timeout=30).read())["study_summaries"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.3)
        [study_id] = [s["study_id"] for s in studies if s["study_name"] == name]
        start = time.perf_counter()
        detail = json.loads(urllib.request.urlopen(f"{base}/{study_id}", timeout=120).read())
        seconds = time.perf_counter() - start
        assert len(detail["trials"]) > 0
        return seconds
    finally:
        server.terminate()
        server.wait()


def measure(kind: str, url: str, sizes: list[int], extra: int, tmp: Path) -> list[dict]:
    name = f"large-{os.getpid()}"
    rng = random.Random(0)
    rows = []
    sweep(tmp, url, name, 1)  # the sweeper makes the study (its identity, its settings)
    study = optuna.load_study(study_name=name, storage=url, sampler=optuna.samplers.RandomSampler(seed=0))
    try:
        for n in sizes:
            fill(study, n, rng)
            stored = len(study.get_trials(deepcopy=False))
            short = sweep(tmp, url, name, stored + FIRST)
            long = sweep(tmp, url, name, stored + 2 * FIRST + extra)
            per_trial = (long - short) / (FIRST + extra)
            own = optuna_cost(study)
            report = report_seconds(url, name, tmp / "report")
            board = dashboard_seconds(url, name) if n == sizes[-1] else None
            row = {"storage": kind, "trials": n, "per_trial": per_trial, "optuna": own, "report": report}
            row["dashboard"] = board
            rows.append(row)
            shown = f"{board:.2f} s" if board is not None else "-"
            print(
                f"  {kind:10s} {n:6d} trials: {per_trial * 1e3:7.1f} ms a trial, of it Optuna's ask/tell "
                f"{own * 1e3:6.1f} ms; summary {report:5.2f} s; dashboard {shown}",
                flush=True,
            )
    finally:
        done = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        optuna.delete_study(study_name=name, storage=url)
        print(f"  ({kind}: the study of {done} trials deleted)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--storages", default="sqlite,postgresql")
    parser.add_argument("--extra", type=int, default=40, help="trials of the longer resume beyond the shorter")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--tiny", action="store_true", help="one study of 20 trials, SQLite, 2 more (CI)")
    args = parser.parse_args()
    if args.tiny:
        args.sizes, args.storages, args.extra = "20", "sqlite", 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="large-study-"))
    try:
        for kind in args.storages.split(","):
            url = f"sqlite:///{tmp}/large.db" if kind == "sqlite" else args.postgres
            rows += measure(kind, url, sizes, args.extra, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| storage | trials in the study | per trial | Optuna's ask + tell | the rest (sweeper, Hydra) | summary |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        rest = r["per_trial"] - r["optuna"]
        print(
            f"| {r['storage']} | {r['trials']:,} | {r['per_trial'] * 1e3:.1f} ms | {r['optuna'] * 1e3:.1f} ms "
            f"| {rest * 1e3:.1f} ms | {r['report']:.2f} s |"
        )
    boards = [(r["storage"], r["trials"], r["dashboard"]) for r in rows if r["dashboard"] is not None]
    for kind, n, seconds in boards:
        print(f"optuna-dashboard, {kind}, {n:,} trials: the study's page data in {seconds:.2f} s")


if __name__ == "__main__":
    main()
