"""Sweep results a person can read: summary.csv, summary.md (also printed), and PNG plots where
matplotlib is installed (`pip install 'hydra-study-sweeper[plots]'`).

Rows come from an Optuna study (what the sweeper stored) or from the job folders of a Hydra
multirun (a grid by Hydra's basic sweeper); the files are the same either way. Which user
attributes become columns, how values are shown and what the app adds (`summary_hook`) are the
app's settings.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_method

from .recovery import SURPLUS  # a place taken by another worker first: never ran, not shown
from .wire import DIR_ATTR, FAIL_ATTR, RUNGS_ATTR, SEEDS_ATTR


@dataclass(frozen=True)
class Layout:
    """What a summary shows: the objectives, their directions, extra columns and formats."""

    names: list[str]
    directions: list[str]
    columns: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # name -> format spec, e.g. ".2%"
    hook: str | None = None  # dotted path of hook(rows, ranked, out, layout) -> markdown to append
    command: str | None = None  # how the app is started, for the best trials' rerun commands
    rerun_group: str | None = None  # with rerun_dir: the best trials' config files, GROUP/NAME.yaml
    rerun_dir: str | None = None
    rerun_skip: tuple[str, ...] = ()  # config groups the config files do not select again


TABLE_ROWS = 100  # trials in summary.md's table (the best first); summary.csv holds them all


def rows_from_study(study: Any, columns: list[str]) -> list[dict[str, Any]]:
    """One row per trial, its columns from the user attributes the sweeper recorded."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if attrs.get(FAIL_ATTR) == SURPLUS:
            continue
        seconds = attrs.get("seconds")
        if seconds is None and t.datetime_start and t.datetime_complete:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                "values": list(t.values) if t.values else None,
                "columns": {c: attrs.get(c) for c in columns},
                "attrs": dict(attrs),
                "steps": dict(t.intermediate_values),
                "seconds": seconds,
                "fail_reason": attrs.get(FAIL_ATTR, ""),
                "directory": attrs.get(DIR_ATTR, ""),
            }
        )
    return rows


def rows_from_dirs(sweep_dir: Path, results_file: str, names: list[str], columns: list[str]) -> list[dict[str, Any]]:
    """One row per job folder (a number with .hydra/overrides.yaml) of a Hydra multirun, its values
    and columns from the job's results file."""
    from omegaconf import OmegaConf

    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        overrides = job / ".hydra" / "overrides.yaml"
        if not overrides.is_file():
            continue
        try:
            results = json.loads((job / results_file).read_text())
        except (OSError, ValueError):
            results = {}
        ok = results.get("status", "ok") == "ok" and all(_finite(results.get(n)) for n in names)
        rows.append(
            {
                "number": int(job.name),
                "state": "COMPLETE" if ok else "FAIL",
                "params": dict(o.split("=", 1) for o in OmegaConf.load(overrides) if "=" in o),
                "values": [results[n] for n in names] if ok else None,
                "columns": {c: results.get(c) for c in columns},
                "attrs": results,
                "steps": {},
                "seconds": results.get("seconds"),
                "fail_reason": "" if ok else str(results.get("status") or f"no {results_file}"),
                "directory": str(job),
            }
        )
    if len(rows) > 1:  # keep what was swept; drop overrides every job shared (the preset, fixed keys)
        shared = {k for k, v in rows[0]["params"].items() if all(r["params"].get(k) == v for r in rows)}
        for r in rows:
            r["params"] = {k: v for k, v in r["params"].items() if k not in shared}
    return rows


def write(rows: list[dict[str, Any]], out: Path, layout: Layout, study: Any = None, title: str = "") -> str:
    """summary.csv, summary.md and the plots into out; returns the markdown. Trials are ranked by
    the directions: the best first, or the Pareto front first with several objectives."""
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if r["state"] == "COMPLETE" and r["values"] and all(map(_finite, r["values"]))]
    front = pareto_front(done, layout.directions)
    on_front = {r["number"] for r in front}
    ranked = sorted(done, key=lambda r: (r["number"] not in on_front, *_sort_key(r["values"], layout.directions)))
    in_ranked = {r["number"] for r in ranked}  # by number: comparing rows (dicts) made 10,000 trials take seconds
    others = sorted((r for r in rows if r["number"] not in in_ranked), key=lambda r: r["number"])
    _write_csv(rows, out / "summary.csv", layout)
    title = title or (study.study_name if study is not None else f"{out.parent.name}/{out.name}")
    md = _markdown(ranked, others, front, rows, layout, title, _reruns(ranked, front, layout, title))
    if layout.hook:
        md += get_method(layout.hook)(rows, ranked, out, layout) or ""
    written = plots.summary(rows, ranked, front, out, study, layout)
    md += "\n" + (f"Plots: {', '.join(written)}\n" if written else plots.MISSING if not plots.available() else "")
    (out / "summary.md").write_text(md)
    return md


def spread(name: str, value: Any, attrs: dict[str, Any], formats: dict[str, str]) -> str:
    """A value, as `mean ± std` where the trial ran several seeds (repeats)."""
    std = attrs.get(f"{name}_std")
    return fmt(name, value, formats) + ("" if std is None or value is None else f" ± {fmt(name, std, formats)}")


def fmt(name: str, value: Any, formats: dict[str, str]) -> str:
    """A value as the layout shows it: its format, else 4 significant digits; '-' when absent."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name in formats:
        return format(value, formats[name])
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def pareto_front(rows: list[dict[str, Any]], directions: list[str]) -> list[dict[str, Any]]:
    """The rows no other row dominates (better or equal in every objective, better in one)."""
    keys = [(r, _sort_key(r["values"], directions)) for r in rows]

    def dominated(k: list[float]) -> bool:
        return any(all(o <= v for o, v in zip(other, k, strict=True)) and other != k for _, other in keys)

    return [r for r, k in keys if not dominated(k)]


def _sort_key(values: list[float], directions: list[str]) -> list[float]:
    return [v if d == "minimize" else -v for v, d in zip(values, directions, strict=True)]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _write_csv(rows: list[dict[str, Any]], path: Path, layout: Layout) -> None:
    params = sorted({k for r in rows for k in r["params"]})
    columns = [c for c in layout.columns if c not in layout.names]
    columns += [f"{n}_std" for n in layout.names if any(f"{n}_std" in r["attrs"] for r in rows)]  # repeats
    head = ["number", "state", *params, *layout.names, *columns, "steps", "seconds", "fail_reason", "directory"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in sorted(rows, key=lambda r: r["number"]):
            values = r["values"] or [None] * len(layout.names)
            w.writerow(
                [
                    r["number"],
                    r["state"],
                    *(r["params"].get(n, "") for n in params),
                    *("" if v is None else v for v in values),
                    *("" if (v := r["columns"].get(c, r["attrs"].get(c))) is None else v for c in columns),
                    len(r["steps"]) or "",
                    "" if r["seconds"] is None else r["seconds"],
                    r["fail_reason"],
                    r["directory"],
                ]
            )


def _reruns(ranked: list, front: list, layout: Layout, title: str) -> dict[int, list[str]]:
    """For the best trial (each Pareto trial): the command that reruns it as a single run and,
    with rerun_group, the config file written for it and the command that selects it."""
    from . import rerun

    best = front if len(layout.names) > 1 else ranked[:1]
    found: dict[int, list[str]] = {}
    for r in best:
        if not layout.command or not r["directory"]:
            continue
        lines = []
        line = rerun.command(layout.command, r["directory"])
        if line:
            lines.append(f"Rerun as a single run: `{line}`")
        if layout.rerun_group and layout.rerun_dir:
            name = f"{title}-best" if len(layout.names) == 1 else f"{title}-trial{r['number']}"
            path = rerun.write_config(r["directory"], layout.rerun_group, layout.rerun_dir, name, layout.rerun_skip)
            if path is not None:
                lines.append(f"or with its config file ({path}): `{layout.command} {layout.rerun_group}={name}`")
        found[r["number"]] = lines
    return found


def _markdown(
    ranked: list, others: list, front: list, rows: list, layout: Layout, title: str, reruns: dict[int, list[str]]
) -> str:
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    lines = [f"# Sweep {title}", "", ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"]
    names, multi = layout.names, len(layout.names) > 1
    goal = ", ".join(f"{d} {m}" for m, d in zip(names, layout.directions, strict=True))
    lines += ["", f"Trials ({goal}), {'the Pareto front first (marked *)' if multi else 'best first'}:", ""]
    columns = [c for c in layout.columns if c not in names and any(r["columns"].get(c) is not None for r in rows)]
    head = ["trial", "state", *names, *columns, "steps", "seconds", "params"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * (len(head) - 1) + "---|"]
    on_front = {r["number"] for r in front}
    shown = [*ranked, *others]
    for r in shown[:TABLE_ROWS]:
        params = ", ".join(f"{k}={fmt(k, v, {})}" for k, v in r["params"].items())
        if r["fail_reason"]:
            params += f" — {r['fail_reason']}"
        values = r["values"] or [None] * len(names)
        cells = [
            f"{r['number']}{' *' if multi and r['number'] in on_front else ''}",
            r["state"].lower(),
            *(spread(m, v, r["attrs"], layout.formats) for m, v in zip(names, values, strict=True)),
            *(fmt(c, r["columns"].get(c), layout.formats) for c in columns),
            str(len(r["steps"]) or "-"),
            f"{r['seconds']:.3g}" if _finite(r["seconds"]) else "-",
            params,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(shown) > TABLE_ROWS:
        more = len(shown) - TABLE_ROWS
        lines += ["", f"... and {more} more trials, in the same order: summary.csv holds every trial."]
    lines += _rungs(rows, layout.directions[0])
    lines += _best(ranked, front, layout, multi, reruns)
    return "\n".join(lines) + "\n"


def _rungs(rows: list, direction: str) -> list[str]:
    """A multi-fidelity sweep's rungs: how many configurations finished each, how many of them
    went on, the best value there and the time its jobs took."""
    finished: dict[int, list[dict]] = {}
    for r in rows:
        for d in r["attrs"].get(RUNGS_ATTR) or []:
            finished.setdefault(d["rung"], []).append(d)
    if not finished:
        return []
    best = max if direction == "maximize" else min
    lines = ["", "## Rungs: configurations per rung", ""]
    lines += ["| rung | at | configurations | went on | best value | median seconds | total seconds |"]
    lines += ["|---:|---:|---:|---:|---:|---:|---:|"]
    for rung, done in sorted(finished.items()):
        on = len(finished[rung + 1]) if rung + 1 in finished else "-"
        seconds = [d["seconds"] for d in done if _finite(d.get("seconds"))]
        timing = [f"{statistics.median(seconds):.3g}", f"{sum(seconds):.3g}"] if seconds else ["-", "-"]
        cells = [rung, done[0]["at"], len(done), on, f"{best(d['value'] for d in done):.4g}", *timing]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def _best(ranked: list, front: list, layout: Layout, multi: bool, reruns: dict[int, list[str]]) -> list[str]:
    def described(r: dict) -> str:
        columns = [(c, r["columns"].get(c)) for c in layout.columns if c not in layout.names]
        shown = [*zip(layout.names, r["values"], strict=True), *columns]
        text = ", ".join(f"{n} {spread(n, v, r['attrs'], layout.formats)}" for n, v in shown if v is not None)
        seeds = r["attrs"].get(SEEDS_ATTR)
        return text + (f" (mean ± std over seeds {', '.join(map(str, seeds))})" if seeds else "")

    if multi and front:
        lines = ["", f"## Pareto front: {len(front)} trial(s)", ""]
        for r in front:
            lines.append(f"- trial {r['number']}: {described(r)} — `{r['directory']}`")
            lines += [f"  - {line}" for line in reruns.get(r["number"], [])]
        return lines
    if not ranked:
        return []
    b = ranked[0]
    lines = ["", f"## Best trial: {b['number']}", "", described(b), ""]
    if b["directory"]:
        lines += [f"Directory: `{b['directory']}`", ""]
    lines.append("Parameters: " + ", ".join(f"`{k}={fmt(k, v, {})}`" for k, v in b["params"].items()))
    return lines + (["", *reruns[b["number"]]] if reruns.get(b["number"]) else [])


def optimization_results(study: Any, sweep_dir: Path) -> dict[str, Any] | None:
    """The stock plugin's results file: the best trial, or the Pareto front as `solutions`."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(study.directions) > 1:
        front = [
            {"number": t.number, "params": t.params, "values": t.values, "directory": t.user_attrs.get(DIR_ATTR, "")}
            for t in study.best_trials
        ]
        return {"name": "optuna", "study_name": study.study_name, "solutions": front}
    best = study.best_trial
    return {
        "name": "optuna",
        "study_name": study.study_name,
        "best_trial": best.number,
        "best_dir": best.user_attrs.get(DIR_ATTR, str(sweep_dir / str(best.number))),
        "best_params": best.params,
        "best_value": best.value,
    }
