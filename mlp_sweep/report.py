"""Sweep results a person can read: summary.csv, summary.md and PNG plots.

    python -m mlp_sweep.report --storage sqlite:///outputs/optuna.db --study tpe-cifar10-20k [--out DIR]
    python -m mlp_sweep.report --dir outputs/sweeps/grid-cifar10-20k/2026-11-26_12-00-00

Rows come from an Optuna study (what the sweeper stored) or from the job directories of a
sweep run by Hydra's basic sweeper (grid); the files are the same either way.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)

SCORES = ("val_acc", "train_acc", "test_acc")
MIN_TRIALS_FOR_IMPORTANCE = 5


def rows_from_study(study: Any) -> list[dict[str, Any]]:
    """One row per trial of an Optuna study, metrics from the attributes the sweeper stored."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                **{k: attrs.get(k) for k in (*SCORES, "epochs_run")},
                "value": t.value,
                "seconds": attrs.get("seconds"),
                "fail_reason": attrs.get("fail_reason", ""),
                "directory": attrs.get("dir", ""),
                "curves": attrs.get("curves"),
            }
        )
    return rows


def rows_from_dirs(sweep_dir: Path, metric: str = "val_acc") -> list[dict[str, Any]]:
    """One row per job directory (a number with .hydra/overrides.yaml) of a Hydra multirun."""
    from omegaconf import OmegaConf

    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        overrides = job / ".hydra" / "overrides.yaml"
        if not overrides.is_file():
            continue
        params = dict(o.split("=", 1) for o in OmegaConf.load(overrides) if "=" in o)
        try:
            m = json.loads((job / "metrics.json").read_text())
        except (OSError, ValueError):
            m = {}
        ok = m.get("status") == "ok"
        history = m.get("history") or []
        rows.append(
            {
                "number": int(job.name),
                "state": "COMPLETE" if ok else "FAIL",
                "params": params,
                **{k: m.get(k) for k in (*SCORES, "epochs_run")},
                "value": m.get(metric) if ok else None,
                "seconds": m.get("seconds"),
                "fail_reason": "" if ok else m.get("status", "no metrics.json"),
                "directory": str(job),
                "curves": {k: [r[k] for r in history] for k in ("train_acc", "val_acc")} if history else None,
            }
        )
    if len(rows) > 1:  # keep what was swept; drop overrides every job shared (data=..., the preset)
        shared = {k for k, v in rows[0]["params"].items() if all(r["params"].get(k) == v for r in rows)}
        for r in rows:
            r["params"] = {k: v for k, v in r["params"].items() if k not in shared}
    return rows


def write_report(
    rows: list[dict[str, Any]], out: Path, study: Any = None, metric: str = "val_acc", title: str = ""
) -> str:
    """Write summary.csv, summary.md and the plots into out; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    lower_is_better = metric.endswith("loss")
    done = [r for r in rows if r["state"] == "COMPLETE" and _finite(r["value"])]
    ranked = sorted(done, key=lambda r: r["value"], reverse=not lower_is_better)
    others = sorted((r for r in rows if r not in ranked), key=lambda r: r["number"])
    _write_csv(rows, out / "summary.csv")
    plots = _plots(rows, ranked, out, study, metric, lower_is_better)
    title = title or (study.study_name if study else f"{out.parent.name}/{out.name}")
    md = _markdown(ranked, others, rows, metric, title, plots)
    (out / "summary.md").write_text(md)
    return md


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    names = sorted({k for r in rows for k in r["params"]})
    head = ["number", "state", *names, *SCORES, "epochs_run", "seconds", "fail_reason", "directory"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in sorted(rows, key=lambda r: r["number"]):
            w.writerow(
                [
                    r["number"],
                    r["state"],
                    *(r["params"].get(n, "") for n in names),
                    *(_blank(r[k]) for k in (*SCORES, "epochs_run", "seconds")),
                    r["fail_reason"],
                    r["directory"],
                ]
            )


def _blank(v: Any) -> Any:
    return "" if v is None else v


def _pct(v: Any) -> str:
    return f"{v:.2%}" if _finite(v) else "-"


def _show(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _markdown(ranked: list, others: list, rows: list, metric: str, title: str, plots: list[str]) -> str:
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    lines = [f"# Sweep {title}", "", ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"]
    lines += ["", f"Trials by {metric}, best first:", ""]
    lines += [
        "| trial | state | val_acc | train_acc | test_acc | epochs | seconds | params |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in [*ranked, *others]:
        params = ", ".join(f"{k}={_show(v)}" for k, v in r["params"].items())
        if r["fail_reason"]:
            params += f" — {r['fail_reason']}"
        secs = f"{r['seconds']:.3g}" if _finite(r["seconds"]) else "-"
        lines.append(
            f"| {r['number']} | {r['state'].lower()} | {_pct(r['val_acc'])} | {_pct(r['train_acc'])} | "
            f"{_pct(r['test_acc'])} | {r['epochs_run'] or '-'} | {secs} | {params} |"
        )
    if ranked:
        b = ranked[0]
        lines += [
            "",
            f"## Best trial: {b['number']}",
            "",
            f"Directory: `{b['directory']}`",
            "",
            "| split | accuracy |",
            "|---|---:|",
            f"| train | {_pct(b['train_acc'])} |",
            f"| validation | {_pct(b['val_acc'])} |",
            f"| test | {_pct(b['test_acc'])} |",
            "",
            "Parameters: " + ", ".join(f"`{k}={_show(v)}`" for k, v in b["params"].items()),
        ]
    if plots:
        lines += ["", "Plots: " + ", ".join(plots)]
    return "\n".join(lines) + "\n"


def _plots(rows: list, ranked: list, out: Path, study: Any, metric: str, lower: bool) -> list[str]:
    written = []
    if ranked:
        _history(rows, out / "history.png", metric, lower)
        written.append("history.png")
        _curves(ranked[:5], out / "curves.png")
        written.append("curves.png")
    if study is not None and len(ranked) >= MIN_TRIALS_FOR_IMPORTANCE and _importances(study, out / "importances.png"):
        written.append("importances.png")
    return written


def _history(rows: list, path: Path, metric: str, lower: bool) -> None:
    """Each trial's result by trial number, with the best so far."""
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    done = sorted((r for r in rows if r["state"] == "COMPLETE" and _finite(r["value"])), key=lambda r: r["number"])
    xs, ys = [r["number"] for r in done], [r["value"] for r in done]
    best, so_far = [], None
    for y in ys:
        so_far = y if so_far is None else (min(so_far, y) if lower else max(so_far, y))
        best.append(so_far)
    ax.plot(xs, ys, "o", alpha=0.7, label="trial")
    ax.step(xs, best, where="post", color="C1", label="best so far")
    failed = [r["number"] for r in rows if r["state"] == "FAIL"]
    if failed:
        ax.plot(failed, [min(ys)] * len(failed), "x", color="C3", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    if metric.endswith("acc"):
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("optimization history")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _curves(best: list, path: Path) -> None:
    """Validation (solid) and training (dashed) accuracy per epoch of the best trials."""
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    for i, r in enumerate(best):
        curves = r.get("curves") or {}
        val, train = curves.get("val_acc") or [], curves.get("train_acc") or []
        epochs = range(1, len(val) + 1)
        ax.plot(epochs, val, "-", color=f"C{i}", label=f"trial {r['number']} ({_pct(r['value'])})")
        ax.plot(range(1, len(train) + 1), train, "--", color=f"C{i}", alpha=0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (solid: validation, dashed: training)")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title(f"learning curves of the {len(best)} best trials")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _importances(study: Any, path: Path) -> bool:
    import optuna

    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as err:  # e.g. a single-valued space
        log.info("no parameter importances: %s", err)
        return False
    if not importances:
        return False
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5), constrained_layout=True)
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set_xlabel("importance (fANOVA share of the objective's variance)")
    ax.set_title("parameter importances")
    ax.grid(alpha=0.3, axis="x")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlp_sweep.report", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///outputs/optuna.db (or journal:PATH)")
    source.add_argument("--dir", type=Path, help="a Hydra multirun directory (grid sweeps)")
    parser.add_argument("--study", help="study name (with --storage; optional when the storage holds one study)")
    parser.add_argument("--out", type=Path, help="where to write (default: the study's sweep directory, or --dir)")
    parser.add_argument("--metric", default="val_acc")
    args = parser.parse_args(argv)
    if args.dir:
        if not args.dir.is_dir():
            parser.error(f"--dir {args.dir} is not a directory")
        print(write_report(rows_from_dirs(args.dir, args.metric), args.out or args.dir, metric=args.metric))
        return 0
    study = _load_study(parser, args.storage, args.study)
    rows = rows_from_study(study)
    out = args.out or _study_dir(rows) or Path("outputs") / "sweeps" / study.study_name
    print(write_report(rows, out, study=study, metric=args.metric))
    print(f"written to {out}")
    return 0


def _load_study(parser: argparse.ArgumentParser, url: str, name: str | None) -> Any:
    import optuna

    from .storage import open_storage

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        parser.error(f"--storage {url}: no such database file")
    storage = open_storage(url, heartbeat_interval=10, grace_period=None)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        parser.error(f"--study {name!r} is not in {url}; it holds: {', '.join(names) or 'no studies'}")
    return optuna.load_study(study_name=name, storage=storage)


def _study_dir(rows: list[dict[str, Any]]) -> Path | None:
    """The sweep directory the trials were written to (parent of their job directories)."""
    dirs = {Path(r["directory"]).parent for r in rows if r["directory"]}
    return dirs.pop() if len(dirs) == 1 else None


if __name__ == "__main__":
    sys.exit(main())
