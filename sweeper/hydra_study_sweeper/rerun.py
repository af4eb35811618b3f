"""The best trials again, as single runs: the exact command line (how the app was started, then the
trial job's own overrides) and, with `rerun_group`, a config file in the app's config search path
that holds the trial's whole config, so that `APP GROUP=NAME` reruns it as it is."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from .wire import COMMAND_ATTR


def launch_command(argv0: str | None = None) -> str:
    """`python -m PKG` for a package's __main__, else `python FILE` as it was given."""
    path = Path(argv0 if argv0 is not None else sys.argv[0])
    if path.name == "__main__.py":
        return f"python -m {path.parent.name}"
    return f"python {shlex.quote(str(path))}"


def record_command(study: Any) -> None:
    """Keep how this app is started with the study (once: the first worker's)."""
    if COMMAND_ATTR not in study.user_attrs:
        study.set_user_attr(COMMAND_ATTR, launch_command())


def overrides_of(directory: str | Path) -> list[str] | None:
    """The trial job's task overrides (fixed ones and its parameters), as Hydra saved them."""
    from omegaconf import OmegaConf

    path = Path(directory) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    return [str(o) for o in OmegaConf.load(path)]


def command(app: str, directory: str | Path) -> str | None:
    overrides = overrides_of(directory)
    return None if overrides is None else " ".join([app, *map(shlex.quote, overrides)])


def config_text(directory: str | Path, group: str, skip: tuple[str, ...] = ()) -> str | None:
    """A `# @package _global_` config of GROUP that selects the trial's config group choices (not
    Hydra's own, nor those in `skip`, such as the app's group of sweep presets) and sets every value
    of its config: selected with GROUP=NAME, it composes the trial's config."""
    from omegaconf import OmegaConf

    folder = Path(directory) / ".hydra"
    if not (folder / "config.yaml").is_file() or not (folder / "hydra.yaml").is_file():
        return None
    choices = OmegaConf.load(folder / "hydra.yaml").hydra.runtime.choices
    skip = ("hydra", group, *skip)
    defaults = [
        {f"override /{k}": v}
        for k, v in choices.items()
        if v is not None and not any(k == s or k.startswith(f"{s}/") for s in skip)
    ]
    body = OmegaConf.to_yaml(OmegaConf.create({"defaults": defaults, **OmegaConf.load(folder / "config.yaml")}))
    return f"# @package _global_\n# trial {Path(directory).name} of a sweep, as it ran: {directory}\n{body}"


def write_config(
    directory: str | Path, group: str, where: str | Path, name: str, skip: tuple[str, ...] = ()
) -> Path | None:
    text = config_text(directory, group, skip)
    if text is None:
        return None
    path = Path(where) / group / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
