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
        if attrs.get("fail_reason") == "surplus":  # a place taken by another worker first: never ran
            continue
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                **{k: attrs.get(k) for k in (*SCORES, "epochs_run", "epochs_planned")},
                "values": list(t.values) if t.values else None,
                "seconds": attrs.get("seconds"),
                "fail_reason": attrs.get("fail_reason", ""),
                "directory": attrs.get("dir", ""),
                "curves": _curves_of(attrs.get("dir"), t.intermediate_values),
            }
        )
    return rows


def _curves_of(directory: str | None, intermediate: dict[int, float]) -> dict[str, list[float]] | None:
    """Per-epoch accuracies: from the trial's metrics.json, else its intermediate values."""
    if directory:
        try:
            history = json.loads((Path(directory) / "metrics.json").read_text())["history"]
            return {k: [row[k] for row in history] for k in ("train_acc", "val_acc")}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return {"val_acc": [v for _, v in sorted(intermediate.items())]} if intermediate else None


def rows_from_dirs(sweep_dir: Path, metrics: list[str] | None = None) -> list[dict[str, Any]]:
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
                **{k: m.get(k) for k in (*SCORES, "epochs_run", "epochs_planned")},
                "values": [m.get(k) for k in metrics or ["val_acc"]] if ok else None,
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
    rows: list[dict[str, Any]],
    out: Path,
    study: Any = None,
    metrics: list[str] | None = None,
    directions: list[str] | None = None,
    title: str = "",
) -> str:
    """Write summary.csv, summary.md and the plots into out; returns the markdown. Trials are ranked
    by the study's directions: the best first, or the Pareto front first with several objectives."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = metrics or ["val_acc"]
    directions = directions or [direction_of(m) for m in metrics]
    done = [r for r in rows if r["state"] == "COMPLETE" and r["values"] and all(map(_finite, r["values"]))]
    front = pareto_front(done, directions)
    ranked = sorted(done, key=lambda r: (r not in front, *_sort_key(r["values"], directions)))
    others = sorted((r for r in rows if r not in ranked), key=lambda r: r["number"])
    _write_csv(rows, out / "summary.csv", metrics)
    plots = _plots(rows, ranked, front, out, study, metrics, directions)
    title = title or (study.study_name if study else f"{out.parent.name}/{out.name}")
    md = _markdown(ranked, others, front, rows, metrics, directions, title, plots)
    (out / "summary.md").write_text(md)
    return md


def direction_of(metric: str) -> str:
    """The direction a metric is optimized in, when no study says: accuracies up, the rest down."""
    return "maximize" if metric.endswith("acc") else "minimize"


def _sort_key(values: list[float], directions: list[str]) -> list[float]:
    return [v if d == "minimize" else -v for v, d in zip(values, directions, strict=True)]


def pareto_front(rows: list[dict[str, Any]], directions: list[str]) -> list[dict[str, Any]]:
    """The rows no other row dominates (better or equal in every objective, better in one)."""
    keys = [(r, _sort_key(r["values"], directions)) for r in rows]

    def dominated(k: list[float]) -> bool:
        return any(all(o <= v for o, v in zip(other, k, strict=True)) and other != k for _, other in keys)

    return [r for r, k in keys if not dominated(k)]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _write_csv(rows: list[dict[str, Any]], path: Path, metrics: list[str]) -> None:
    names = sorted({k for r in rows for k in r["params"]})
    scores = [k for k in SCORES if k not in metrics]
    head = ["number", "state", *names, *metrics, *scores, "epochs_run", "epochs_planned", "seconds", "fail_reason"]
    head.append("directory")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in sorted(rows, key=lambda r: r["number"]):
            values = r["values"] or [None] * len(metrics)
            w.writerow(
                [
                    r["number"],
                    r["state"],
                    *(r["params"].get(n, "") for n in names),
                    *(_blank(v) for v in values),
                    *(_blank(r.get(k)) for k in (*scores, "epochs_run", "epochs_planned", "seconds")),
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


def _metric(name: str, v: Any) -> str:
    return _pct(v) if name.endswith("acc") else (_show(v) if _finite(v) else "-")


def _markdown(
    ranked: list, others: list, front: list, rows: list, metrics: list, directions: list, title: str, plots: list
) -> str:
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    lines = [f"# Sweep {title}", "", ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"]
    run = sum(r.get("epochs_run") or 0 for r in rows)
    saved = sum((r.get("epochs_planned") or 0) - (r.get("epochs_run") or 0) for r in rows if r["state"] == "PRUNED")
    if saved > 0:
        lines += [
            "",
            f"Epochs: {run} run; pruning saved {saved} ({saved / (run + saved):.0%} of what the trials planned).",
        ]
    goal = ", ".join(f"{d} {m}" for m, d in zip(metrics, directions, strict=True))
    multi = len(metrics) > 1
    order = "the Pareto front first (marked *)" if multi else "best first"
    lines += ["", f"Trials ({goal}), {order}:", ""]
    scores = [k for k in SCORES if k not in metrics and any(r.get(k) is not None for r in rows)]
    head = ["trial", "state", *metrics, *scores, "epochs", "seconds", "params"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * (len(head) - 1) + "---|"]
    for r in [*ranked, *others]:
        params = ", ".join(f"{k}={_show(v)}" for k, v in r["params"].items())
        if r["fail_reason"]:
            params += f" — {r['fail_reason']}"
        secs = f"{r['seconds']:.3g}" if _finite(r["seconds"]) else "-"
        values = r["values"] or [None] * len(metrics)
        mark = " *" if multi and r in front else ""
        cells = [
            f"{r['number']}{mark}",
            r["state"].lower(),
            *(_metric(m, v) for m, v in zip(metrics, values, strict=True)),
            *(_pct(r.get(k)) for k in scores),
            str(r.get("epochs_run") or "-"),
            secs,
            params,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if multi and front:
        lines += ["", f"## Pareto front: {len(front)} trial(s)", ""]
        lines += [
            f"- trial {r['number']}: "
            + ", ".join(f"{m} {_metric(m, v)}" for m, v in zip(metrics, r["values"], strict=True))
            + (f" (test {_pct(r.get('test_acc'))})" if r.get("test_acc") is not None else "")
            + f" — `{r['directory']}`"
            for r in front
        ]
    elif ranked:
        b = ranked[0]
        lines += ["", f"## Best trial: {b['number']}", ""]
        if b["directory"]:
            lines += [f"Directory: `{b['directory']}`", ""]
        if any(b.get(k) is not None for k in SCORES):
            lines += [
                "| split | accuracy |",
                "|---|---:|",
                f"| train | {_pct(b.get('train_acc'))} |",
                f"| validation | {_pct(b.get('val_acc'))} |",
                f"| test | {_pct(b.get('test_acc'))} |",
                "",
            ]
        else:
            lines += [f"{metrics[0]}: {_metric(metrics[0], b['values'][0])}", ""]
        lines.append("Parameters: " + ", ".join(f"`{k}={_show(v)}`" for k, v in b["params"].items()))
    if plots:
        lines += ["", "Plots: " + ", ".join(plots)]
    return "\n".join(lines) + "\n"


def _plots(rows: list, ranked: list, front: list, out: Path, study: Any, metrics: list, directions: list) -> list[str]:
    written = []
    if ranked:
        _history(rows, out / "history.png", metrics[0], directions[0] == "minimize")
        written.append("history.png")
        if any(r.get("curves") for r in ranked):
            _curves(ranked[:5], out / "curves.png", metrics[0])
            written.append("curves.png")
    if len(metrics) > 1 and ranked:
        _front(ranked, front, out / "pareto.png", metrics)
        written.append("pareto.png")
    if (
        study is not None
        and len(metrics) == 1
        and len(ranked) >= MIN_TRIALS_FOR_IMPORTANCE
        and _importances(study, out / "importances.png")
    ):
        written.append("importances.png")
    return written


def _front(ranked: list, front: list, path: Path, metrics: list) -> None:
    """The first two objectives of every complete trial, the Pareto front joined."""
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    ax.plot([r["values"][0] for r in ranked], [r["values"][1] for r in ranked], "o", alpha=0.4, label="trial")
    pts = sorted((r["values"][0], r["values"][1], r["number"]) for r in front)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="C3", label="Pareto front")
    for x, y, n in pts:
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(metrics[0])
    ax.set_ylabel(metrics[1])
    for axis, name in ((ax.xaxis, metrics[0]), (ax.yaxis, metrics[1])):
        if name.endswith("acc"):
            axis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("Pareto front" + (f" (of {len(metrics)} objectives: the first two)" if len(metrics) > 2 else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _history(rows: list, path: Path, metric: str, lower: bool) -> None:
    """Each trial's result by trial number, with the best so far."""
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    done = sorted(
        (r for r in rows if r["state"] == "COMPLETE" and r["values"] and _finite(r["values"][0])),
        key=lambda r: r["number"],
    )
    xs, ys = [r["number"] for r in done], [r["values"][0] for r in done]
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


def _curves(best: list, path: Path, metric: str) -> None:
    """Validation (solid) and training (dashed) accuracy per epoch of the best trials."""
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    for i, r in enumerate(best):
        curves = r.get("curves") or {}
        val, train = curves.get("val_acc") or [], curves.get("train_acc") or []
        epochs = range(1, len(val) + 1)
        label = f"trial {r['number']} ({metric} {_metric(metric, r['values'][0])})"
        ax.plot(epochs, val, "-", color=f"C{i}", label=label)
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
    parser.add_argument("--metric", default="val_acc", help="with --dir: the value(s) ranked, comma-separated")
    args = parser.parse_args(argv)
    if args.dir:
        if not args.dir.is_dir():
            parser.error(f"--dir {args.dir} is not a directory")
        metrics = args.metric.split(",")
        print(write_report(rows_from_dirs(args.dir, metrics), args.out or args.dir, metrics=metrics))
        return 0
    study = _load_study(parser, args.storage, args.study)
    rows = rows_from_study(study)
    out = args.out or _study_dir(rows) or Path("outputs") / "sweeps" / study.study_name
    names = study.metric_names or ([args.metric] if len(study.directions) == 1 else None)
    names = names or [f"value_{i}" for i in range(len(study.directions))]
    print(write_report(rows, out, study=study, metrics=names, directions=[d.name.lower() for d in study.directions]))
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
