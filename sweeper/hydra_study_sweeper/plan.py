"""Everything a sweep decides before its first trial, each part checked: the search space, the
study's identity and name, the storage, the target, the folders and the sampler."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from . import gpus, repeats, space, staged, stock
from .errors import UserError
from .launching import runs_elsewhere
from .settings import Settings
from .storage import open_storage
from .urls import masked


@dataclass(frozen=True)
class Plan:
    name: str
    storage: Any  # the opened Optuna storage; None = in memory
    space: space.Space
    identity: space.Identity
    n_trials: int  # the study's total
    sweep_dir: Path  # job folders are its subfolders, named by trial number
    make_sampler: Callable[[int], Any]  # seed offset -> sampler
    queued: tuple[dict, ...]  # parameter sets to run first, once per study
    widened: dict[str, str]  # ranges widened on purpose (allow_widening), for the study's record
    stage: staged.Stage | None = None
    seeds: tuple[int, ...] = ()  # each trial's seeds (repeats); () = one job a trial
    gpu_slots: tuple[str, ...] = ()  # each job slot's GPU; () = jobs get no GPU of their own


@dataclass
class Inputs:
    """What a plan is made from: the settings, the sweep's config and what Hydra gave the sweeper."""

    settings: Settings
    config: DictConfig
    launcher: Any
    loader: Any  # Hydra's config loader
    trial_configurator: stock.TrialConfigurator
    sweep_dir_template: str


def make(inp: Inputs, arguments: list[str], stage: staged.Stage | None = None, kept: Any = None) -> Plan:
    s = inp.settings
    sp = space.parse(inp.trial_configurator.preset_lines(), arguments, s.conditions)
    config, queue = inp.config, list(s.enqueue_trials)
    if stage is not None:
        sp, config = staged.stage_space(sp, stage, kept, arguments, inp.loader, inp.config)
        queue = queue if kept is None else [dict(t.params) for t in kept]
    check = instantiate({"_target_": s.config_check, "_partial_": True}) if s.config_check else None
    compose = lambda overrides: inp.loader.load_sweep_config(config, overrides)  # noqa: E731
    space.check_values(sp, config, inp.loader.get_group_options, check, compose)
    queued = [] if sp.adhoc else space.check_enqueued(queue, sp)
    identity = space.identity(config, sp, list(s.directions), s.metric_names, list(s.identity_ignore))
    name = study_name(inp, sp, identity, stage)
    storage = open_storage(s.storage, s.heartbeat_interval, s.grace_period, outage_timeout=s.outage_timeout)
    if storage is None and runs_elsewhere(inp.launcher):
        raise UserError(
            f"hydra.sweeper.storage=null keeps the study in this process, where the jobs of "
            f"{type(inp.launcher).__name__} cannot report to it: give a storage, e.g. "
            "hydra.sweeper.storage=sqlite:///outputs/optuna.db"
        )
    stored = load_study(name, storage)
    widened = space.check_against_stored(stored, sp, s.allow_widening)
    space.check_identity(stored, identity, masked(s.storage))
    grid = grid_of(sp, s.sampler)
    return Plan(
        name=name,
        storage=storage,
        space=sp,
        identity=identity,
        n_trials=target(inp, stage, sp, grid),
        sweep_dir=sweep_dir(inp, name),
        make_sampler=sampler_factory(s.sampler, grid),
        queued=tuple(queued),
        widened=widened,
        stage=stage,
        seeds=repeats.seeds(s, config, sp.distributions, grid),
        gpu_slots=tuple(gpus.slots(s.gpus, s.trials_per_gpu, s.n_jobs, inp.launcher)),
    )


def target(inp: Inputs, stage: staged.Stage | None, sp: space.Space, grid: dict | None) -> int:
    """The study's total: n_trials, or a grid's size (an ad-hoc grid runs whole unless n_trials is named)."""
    n_trials = stage.n_trials if stage is not None else inp.settings.n_trials
    if grid is None:
        return n_trials
    size = math.prod(len(v) for v in grid.values())
    named = any(o.startswith("hydra.sweeper.n_trials=") for o in inp.config.hydra.overrides.hydra)
    return min(n_trials, size) if (named or sp.grid is None) else size


def grid_of(sp: space.Space, sampler_cfg: Any) -> dict[str, list] | None:
    """The grid to walk: an ad-hoc grid of value lists, or the whole space under the stock grid sampler."""
    if sp.grid is not None:
        return sp.grid
    if sampler_cfg is not None and str(sampler_cfg.get("_target_", "")).endswith("GridSampler"):
        if sp.conditions:
            raise UserError(
                "conditional parameters (hydra.sweeper.conditions) cannot be walked by the grid sampler, which "
                "runs every combination of every parameter: use hydra/sweeper/sampler=tpe or random"
            )
        return {k: stock.grid_choices(d) for k, d in sp.distributions.items()}
    return None


def study_name(inp: Inputs, sp: space.Space, identity: space.Identity, stage: staged.Stage | None) -> str:
    """study_name, else the job's name; a stage adds its suffix; an ad-hoc sweep (one typed on the
    command line) gets a study of its own, one per space and fixed configuration."""
    base = inp.settings.study_name or str(inp.config.hydra.job.name)
    if stage is not None:
        return f"{base}-{stage.suffix}"
    named = any(o.startswith("hydra.sweeper.study_name=") for o in inp.config.hydra.overrides.hydra)
    if not sp.adhoc or named:
        return base
    digest = space.Identity((), None, {"space": sp.digest(), "fixed": identity.digest()}).digest()
    return f"{inp.settings.adhoc_prefix}-{digest[:8]}"


def sweep_dir(inp: Inputs, name: str) -> Path:
    """hydra.sweep.dir resolved with this study's name (it may interpolate the study name); set on
    the config too, which is where the launcher creates it."""
    hydra = OmegaConf.to_container(inp.config.hydra, resolve=False)
    copy = OmegaConf.create({"hydra": hydra})
    copy.hydra.sweep.dir = inp.sweep_dir_template  # unresolved: each stage resolves it anew
    copy.hydra.sweeper.study_name = name
    path = Path(str(copy.hydra.sweep.dir)).absolute()
    with read_write(inp.config.hydra), open_dict(inp.config.hydra):
        inp.config.hydra.sweep.dir = str(path)
    return path


def sampler_factory(cfg: Any, grid: dict[str, list] | None) -> Callable[[int], Any]:
    seed = cfg.get("seed") if cfg is not None else None
    if grid is not None:  # one instance: its grid ids index an order shuffled by the seed
        sampler = optuna.samplers.GridSampler(grid, seed=seed)
        return lambda _offset: sampler

    # composed once: a sampler per trial (seeded by the sampler's seed and its number) then costs only its constructor
    make = instantiate(
        cfg, _partial_=True, _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
    )

    def make_sampler(offset: int) -> Any:
        return make() if seed is None else make(seed=draw_seed(int(seed), offset))

    return make_sampler


def draw_seed(seed: int, number: int) -> int:
    """The seed of the draws for trial `number` of a sampler seeded `seed`: the two hashed together
    into 32 bits, so that sampler seeds give sequences of their own. (`seed + number` gave seed 1's
    trial n the draws of seed 0's trial n + 1: two "seeds" were one sequence, shifted.)"""
    digest = hashlib.blake2b(f"{seed}:{number}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def load_study(name: str, storage: Any) -> optuna.Study | None:
    if storage is None:
        return None
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
