"""The app's part of a sweep's summary: the course report's table for the best trial, the epochs
pruning saved, and the learning curves of the best trials (from each trial's metrics.json).

    python -m mlp_sweep.report --storage sqlite:///outputs/optuna.db --study tpe-cifar10-20k [--out DIR]
    python -m mlp_sweep.report --dir outputs/sweeps/grid-cifar10-20k/2026-11-26_12-00-00

The sweeper writes the summary and calls `summarize` (its `summary_hook`, set in the presets);
this command rebuilds it with the presets' settings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .plots import best_curves

SPLITS = (("train", "train_acc"), ("validation", "val_acc"), ("test", "test_acc"))


def summarize(rows: list[dict], ranked: list[dict], out: Path, layout: Any) -> str:
    """Markdown appended to summary.md; writes curves.png."""
    lines = []
    run = sum(r["attrs"].get("epochs_run") or 0 for r in rows)
    saved = sum(
        (r["attrs"].get("epochs_planned") or 0) - (r["attrs"].get("epochs_run") or 0)
        for r in rows
        if r["state"] == "PRUNED"
    )
    if saved > 0:
        share = saved / (run + saved)
        lines += ["", f"Epochs: {run} run; pruning saved {saved} ({share:.0%} of what the trials planned)."]
    if ranked and len(layout.names) == 1 and any(ranked[0]["attrs"].get(k) is not None for _, k in SPLITS):
        b = ranked[0]["attrs"]
        lines += ["", "| split | accuracy |", "|---|---:|"]
        lines += [f"| {split} | {_pct(b.get(key))} |" for split, key in SPLITS]
    curves = [(r["number"], r["values"][0], _history(r["directory"])) for r in ranked[:5]]
    curves = [c for c in curves if c[2]]
    if curves:
        best_curves(curves, out / "curves.png", layout.names[0])
        lines += ["", "Learning curves of the best trials: curves.png"]
    return "\n".join(lines) + "\n" if lines else ""


def _history(directory: str) -> list[dict] | None:
    try:
        return json.loads((Path(directory) / "metrics.json").read_text())["history"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pct(v: Any) -> str:
    return f"{v:.2%}" if isinstance(v, (int, float)) else "-"


def preset_settings() -> Any:
    """The sweeper settings of the default preset (summary columns, formats, hook): one source."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from . import CONF

    if GlobalHydra.instance().is_initialized():  # inside the app (a grid's end): its own config loader
        return compose("config", overrides=["hparams_search=tpe"], return_hydra_config=True).hydra.sweeper
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("config", overrides=["hparams_search=tpe"], return_hydra_config=True).hydra.sweeper


def main(argv: list[str] | None = None) -> int:
    from hydra_study_sweeper import report

    s = preset_settings()
    return report.main(
        argv,
        prog="python -m mlp_sweep.report",
        metric="val_acc",
        direction="maximize",
        results_file=s.results_file,
        columns=",".join(s.summary_columns),
        formats=",".join(f"{k}={v}" for k, v in s.formats.items()),
        hook=s.summary_hook,
        rerun_group=s.rerun_group,
        rerun_dir=s.rerun_dir,
        rerun_skip=",".join(s.rerun_skip),
    )


if __name__ == "__main__":
    sys.exit(main())
