"""The course's method as a search: multi-fidelity against flat TPE and the staged search, on CIFAR-10.

    python benchmarks/multifidelity.py                      # 2 sampler seeds x 20 minutes a method
    python benchmarks/multifidelity.py --seeds 0 1 2 --minutes 40
    python benchmarks/multifidelity.py --minutes 4 --seeds 0 --configs 10   # a short look
    python benchmarks/multifidelity.py --seeds 0 --methods flat mf --configs 0 \
        --variant "min 3k" hydra.sweeper.fidelity.min=3000     # (c) beside (c) with other settings
    python benchmarks/multifidelity.py --tiny               # digits, seconds (CI): figures meaningless

Three searches over the course's broad space (four activations, 1-5 layers, width 50-1000, lr and
weight decay over their decades), each for the same wall time per sampler seed, one after another:
(a) flat TPE on 20k images with the median epoch pruner, (b) the staged preset (1k, 10k, 20k
stages), (c) `hparams_search=multifidelity` (rungs of 1k, 3k, 9k and 20k images). Each is stopped
by SIGTERM (handled like Ctrl-C) when its time is up. Printed: the best validation accuracy on 20k
images each had found after 1/8, 1/4, 1/2 and all of its time (2.5, 5, 10, 20 minutes by
default), when it first reached (a)'s best of the whole time, and where its time went (how many
configurations it tried, how many finished each rung, in what seconds). `--methods` runs some of the
three (flat TPE always: it sets the goal); each `--variant LABEL OVERRIDE...` adds a row, (c) with
those overrides, so that settings of the multi-fidelity search are compared in one run.

Then whether successive halving can pay here at all: the Spearman correlation between validation
accuracy on 1k and on 20k images of the same random configurations (--configs, random sampler, no
pruning), because promoting on little data only works where little data ranks like much.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
from _sweep import HERE, app, in_this_process

METHODS = {  # short name: (the row's label, the sweep's overrides)
    "flat": ("flat TPE, 20k, median pruner", ("hparams_search=multifidelity", "hydra.sweeper.fidelity=null")),
    "staged": ("staged (1k, 10k, 20k)", ("hparams_search=staged",)),
    "mf": ("multi-fidelity (1k..20k)", ("hparams_search=multifidelity",)),
}
SHARES = (1 / 8, 1 / 4, 1 / 2, 1)


def sweep(tmp: Path, seconds: float, *overrides: str) -> datetime.datetime:
    """A sweep until it ends or its time is up; when it started (the studies' clock)."""
    args = ["-m", *overrides, "hydra.sweeper.artifact_dir=null", f"hydra.sweeper.storage=sqlite:///{tmp}/bench.db"]
    args += ["hydra.sweeper.rerun_dir=null", "save_model=false"]
    began = datetime.datetime.now()
    if HERE["on"]:  # the tiny mode: each search ends by itself after its few configurations
        done = app(args, cwd=tmp)
        code, err = done.returncode, done.stderr
    else:
        command = [sys.executable, "-m", "mlp_sweep", *args]
        proc = subprocess.Popen(command, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=300)
            return began
        code = proc.returncode
    if code != 0:
        sys.exit(f"the sweep {' '.join(overrides)} failed (exit {code}):\n{err[-3000:]}")
    return began


def top_rung(storage: str, names: list[str], top: int) -> list[tuple[float, float]]:
    """(when it finished, value) of every trial of the studies named that finished on the top data size."""
    found = []
    for name in names:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # a stage the time did not reach
            continue
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            rungs = t.user_attrs.get("rungs")  # multi-fidelity: COMPLETE means it finished the top rung
            if rungs is None or rungs[-1]["at"] == top:
                found.append((t.datetime_complete, t.value))
    return sorted(found)


def best_by(found: list, began: datetime.datetime, seconds: float) -> float | None:
    values = [v for at, v in found if (at - began).total_seconds() <= seconds]
    return max(values) if values else None


def reached(found: list, began: datetime.datetime, target: float | None) -> float | None:
    for at, v in found:
        if target is not None and v >= target:
            return (at - began).total_seconds()
    return None


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(xs: list[float]) -> list[float]:
        order = sorted(range(len(xs)), key=xs.__getitem__)
        r = [0.0] * len(xs)
        i = 0
        while i < len(order):  # ties share their mean rank
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    return statistics.correlation(ra, rb) if len(a) > 2 else float("nan")


def searches_to_run(methods: list[str], variants: list[list[str]]) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Study name prefix -> (label, the method it is, overrides): flat TPE first (its best is the
    goal), the methods asked for, then each variant (the multi-fidelity search with more overrides)."""
    plan = {
        m: (METHODS[m][0], m, METHODS[m][1]) for m in ["flat", *(m for m in METHODS if m in methods and m != "flat")]
    }
    for i, (label, *overrides) in enumerate(variants):
        plan[f"mf{i + 1}"] = (f"{METHODS['mf'][0]}, {label}", "mf", (*METHODS["mf"][1], *overrides))
    return plan


def searches(tmp: Path, plan: dict, seeds: list[int], seconds: float, top: int, extra: list, small: dict, trials: int):
    """Each search for `seconds` per seed (or until it has `trials`), then the table of their best
    top-size accuracy over time."""
    storage, rows = f"sqlite:///{tmp}/bench.db", {m: [] for m in plan}
    for seed in seeds:
        for short, (_, method, preset) in plan.items():
            name = f"{short}-{seed}"
            names = [f"{name}-20k"] if method == "staged" else [name]  # the staged search's last stage
            study = [
                f"hydra.sweeper.study_name={name}",
                *([] if method == "staged" else [f"hydra.sweeper.n_trials={trials}"]),
            ]
            overrides = (*preset, *extra, *small.get(method, []), *study)
            began = sweep(tmp, seconds, *overrides, f"hydra.sweeper.sampler.seed={seed}")
            rows[short].append((seed, began, top_rung(storage, names, top)))
    print(f"\n| search | seed | {' | '.join(f'{seconds * s / 60:g} min' for s in SHARES)} | reaches flat's best |")
    print("|---|---:|" + "---:|" * (len(SHARES) + 1))
    for short, (label, _, _) in plan.items():
        for (seed, began, found), (_, flat_began, flat_found) in zip(rows[short], rows["flat"], strict=True):
            goal = best_by(flat_found, flat_began, seconds)
            shown = [f"{c:.2%}" if c is not None else "-" for c in (best_by(found, began, seconds * s) for s in SHARES)]
            at = reached(found, began, goal)
            print(f"| {label} | {seed} | {' | '.join(shown)} | {f'{at / 60:.3g} min' if at else 'no'} |")
    print("\nWhere each search's time went (its trials' wall seconds):")
    for short, (label, _, _) in plan.items():
        for seed in seeds:
            print(f"- {label}, seed {seed}: {spent(storage, f'{short}-{seed}')}")


def spent(storage: str, name: str) -> str:
    """A search's configurations by state and their seconds; for a multi-fidelity search, how many
    finished each rung and the seconds of those rungs' jobs (the rest: jobs stopped inside a rung)."""
    studies = [n for n in optuna.get_all_study_names(storage) if n == name or n.startswith(f"{name}-")]
    parts = []
    for n in studies:
        trials = optuna.load_study(study_name=n, storage=storage).trials
        states = collections.Counter(t.state.name.lower() for t in trials)
        wall = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete)
        rungs: dict[int, list[float]] = {}
        for t in trials:
            for d in t.user_attrs.get("rungs") or []:
                rungs.setdefault(d["at"], []).append(d.get("seconds") or 0.0)
        text = f"{n}: {len(trials)} configurations ({', '.join(f'{v} {k}' for k, v in states.items())}), {wall:.0f} s"
        if rungs:
            text += "; finished per rung: " + ", ".join(
                f"{at}: {len(v)} ({sum(v):.0f} s)" for at, v in sorted(rungs.items())
            )
        parts.append(text)
    return "; ".join(parts) or "nothing stored"


def ranking(tmp: Path, configs: int, sizes: tuple[int, int], extra: list) -> None:
    """The Spearman correlation of validation accuracy at the two training sizes, random configurations."""
    random = f"hydra.sweeper.sampler.n_startup_trials={configs}"  # TPE before it models: random draws
    for_ranks = ("hparams_search=multifidelity", "hydra.sweeper.fidelity=null", random, "hydra/sweeper/pruner=none")
    for_ranks += (f"hydra.sweeper.n_trials={configs}", *(e for e in extra if "data_size.train" not in e))
    values = []
    for size in sizes:
        name = f"ranks-{size}"
        sweep(tmp, 10 * 3600, *for_ranks, f"data_size.train={size}", f"hydra.sweeper.study_name={name}")
        done = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp}/bench.db").trials
        values.append({t.number: t.value for t in done if t.value is not None})
    both = sorted(set(values[0]) & set(values[1]))
    rho = spearman([values[0][n] for n in both], [values[1][n] for n in both])
    print(
        f"\nrank correlation of validation accuracy, {sizes[0]} against {sizes[1]} images, {len(both)} random "
        "configurations:"
    )
    print(f"Spearman {rho:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--minutes", type=float, default=20.0, help="wall time of each search per seed")
    parser.add_argument("--configs", type=int, default=30, help="random configurations for the ranks (0: none)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="flat always runs")
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("LABEL", "OVERRIDE"),
        help="one more row: the multi-fidelity search with these overrides (repeatable)",
    )
    parser.add_argument("--tiny", action="store_true", help="digits, seconds (CI): figures meaningless")
    args = parser.parse_args()
    in_this_process(args.tiny)  # its searches in this process: a tiny run's figures are meaningless
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data, sizes, extra, small = "cifar10", (1000, 20000), ["data_size=20k"], {}
    # configurations a search may try: its time ends it, not this (a multi-fidelity search on bf16
    # hardware tried 1000 configurations in 17 of its 20 minutes, most stopped inside the 1k rung)
    trials = 100_000
    if args.tiny:
        data, sizes, args.seeds, args.minutes, args.configs = "digits", (100, 900), [0], 0.2, 3
        trials = 3  # each search ends by itself after 3 configurations, usually before its time is up
        extra = ["data=digits", "trainer.epochs=1", "data_size.train=900"]
        small = {
            "staged": [
                "hydra.sweeper.stages=[{data_size: 1k, n_trials: 2, keep: 0.5}, {data_size: 20k, n_trials: 1}]",
                "data_size.train=900",
            ],
            "mf": ["hydra.sweeper.fidelity.min=100", "hydra.sweeper.fidelity.max=900"],
        }
    print(f"{data}, {args.minutes:g} minutes a search per sampler seed; best validation accuracy on {sizes[1]} images")
    with tempfile.TemporaryDirectory() as tmp:
        plan = searches_to_run(args.methods, args.variant)
        searches(Path(tmp), plan, args.seeds, args.minutes * 60, sizes[1], extra, small, trials)
        if args.configs:
            ranking(Path(tmp), args.configs, sizes, extra)


if __name__ == "__main__":
    main()
