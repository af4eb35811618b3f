"""Rebuild a sweep's summary at any time:

    python -m hydra_study_sweeper.report --storage sqlite:///outputs/optuna.db --study NAME [--out DIR]
    python -m hydra_study_sweeper.report --dir SWEEP_DIR --results-file metrics.json --metric val_acc

From a stored study (what the sweeper recorded) or from the job folders of a Hydra multirun (a
grid by Hydra's basic sweeper). An app passes its own columns, formats and hook (`defaults`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .summary import Layout, rows_from_dirs, write


def main(argv: list[str] | None = None, prog: str = "python -m hydra_study_sweeper.report", **defaults: Any) -> int:
    args = parse(argv, prog, defaults)
    columns = [c for c in args.columns.split(",") if c]
    formats = dict(f.split("=", 1) for f in args.formats.split(",") if "=" in f)
    metrics = args.metric.split(",")
    if args.dir:
        if not args.dir.is_dir():
            args.parser.error(f"--dir {args.dir} is not a directory")
        layout = Layout(metrics, args.direction.split(",") if args.direction else [], columns, formats, args.hook)
        if len(layout.directions) != len(metrics):
            args.parser.error(f"--direction: give one of minimize / maximize for each of {metrics}")
        print(write(rows_from_dirs(args.dir, args.results_file, metrics, columns), args.out or args.dir, layout))
        return 0
    from .space import directions_of_study
    from .summary import rows_from_study

    study = load(args.parser, args.storage, args.study)
    names = study.metric_names or (metrics if len(metrics) == len(study.directions) else None)
    names = names or [f"value_{i}" for i in range(len(study.directions))]
    from .wire import COMMAND_ATTR

    command = study.user_attrs.get(COMMAND_ATTR)
    skip = tuple(g for g in args.rerun_skip.split(",") if g)
    layout = Layout(
        names, directions_of_study(study), columns, formats, args.hook, command, args.rerun_group, args.rerun_dir, skip
    )
    rows = rows_from_study(study, columns)
    out = args.out or study_dir(rows) or Path("outputs") / "sweeps" / study.study_name
    print(write(rows, out, layout, study=study))
    print(f"written to {out}")
    return 0


def parse(argv: list[str] | None, prog: str, defaults: dict[str, Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///outputs/optuna.db (or journal:PATH)")
    source.add_argument("--dir", type=Path, help="a Hydra multirun directory (grid sweeps)")
    parser.add_argument("--study", help="study name (with --storage; optional when the storage holds one study)")
    parser.add_argument("--out", type=Path, help="where to write (default: the study's sweep directory, or --dir)")
    parser.add_argument("--metric", default="value", help="the value(s) ranked, comma-separated")
    parser.add_argument("--direction", default="", help="with --dir: minimize or maximize for each metric")
    parser.add_argument("--results-file", default="results.json", help="with --dir: each job's JSON results file")
    parser.add_argument("--columns", default="", help="user attributes shown as columns, comma-separated")
    parser.add_argument("--formats", default="", help="NAME=SPEC,... e.g. val_acc=.2%%")
    parser.add_argument("--hook", default=None, help="dotted path of the app's summary hook")
    parser.add_argument("--rerun-group", default=None, help="config group of the best trials' config files")
    parser.add_argument("--rerun-dir", default=None, help="where they go (a folder of the app's search path)")
    parser.add_argument("--rerun-skip", default="", help="config groups they do not select again, comma-separated")
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.parser = parser
    return args


def load(parser: argparse.ArgumentParser, url: str, name: str | None) -> Any:
    import optuna

    from .storage import open_storage

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        parser.error(f"--storage {url}: no such database file")
    storage = open_storage(url, heartbeat_interval=10, grace_period=None)
    names = optuna.get_all_study_names(storage)  # not the summaries: they read every trial of every study
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        parser.error(f"--study {name!r} is not in {url}; it holds: {', '.join(names) or 'no studies'}")
    return optuna.load_study(study_name=name, storage=storage)


def study_dir(rows: list[dict[str, Any]]) -> Path | None:
    """The sweep directory the trials were written to (parent of their job directories)."""
    dirs = {Path(r["directory"]).parent for r in rows if r["directory"]}
    return dirs.pop() if len(dirs) == 1 else None


if __name__ == "__main__":
    sys.exit(main())
