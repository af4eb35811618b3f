"""`python -m mlp_sweep` trains one MLP; `python -m mlp_sweep -m` runs a sweep."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra_study_sweeper import job
from omegaconf import DictConfig, OmegaConf

from . import CONF
from .checks import check, directions, metric_list
from .errors import UserError, fail

log = logging.getLogger("mlp_sweep")
TRUSTED = ("mlp_sweep.*", "torch.optim.*")  # what config `_target_`s may instantiate
# the presets' `hydra.sweeper.direction: ${mlp_sweep_directions:${optimized_metric}}`
OmegaConf.register_resolver("mlp_sweep_directions", directions, replace=True)
# the search path names the folder of the experiment files a sweep writes (config.yaml): until the
# first sweep writes one it does not exist, which is expected, not worth a warning at every compose
warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=outputs/configs is not available")


@hydra.main(config_path=CONF, config_name="config", execution_whitelist=TRUSTED)
def main(cfg: DictConfig) -> float | tuple[float, ...]:
    try:
        return train_one(cfg)
    except UserError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the trial as failed
        fail(str(err))


def train_one(cfg: DictConfig) -> float | tuple[float, ...] | dict[int, Any]:
    members = job.stack()  # hydra.sweeper.stack=K: this job trains up to K trials together
    if members is not None:
        return train_stack(cfg, members)
    check(cfg)  # before torch is imported: a config error answers at once
    from hydra.utils import instantiate

    from . import data
    from .model import build
    from .precision import label
    from .train import cores, fit, pick_device, set_threads

    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    device = pick_device(cfg.trainer.device)
    threads = set_threads(cfg.trainer.threads, parallel_jobs(hydra_cfg, cores()))
    splits = data.load(cfg.data, cfg.data_size, cfg.trainer.seed, device)
    _seed(init_seed(cfg))
    model = build(splits.in_features, splits.n_classes, **cfg.model, projection=splits.basis)
    trial = job.current_trial()
    if hydra_cfg.mode == RunMode.MULTIRUN and not cfg.verbose:
        quiet_console()
    if trial is not None:
        log.info("trial %d of study %s: %s", trial.number, trial.study, " ".join(hydra_cfg.overrides.task))
    log.info(
        "%s: %d train / %d val / %d test images, %s, %d threads, %s, %s parameters",
        cfg.data.name,
        len(splits.y_train),
        len(splits.y_val),
        len(splits.y_test),
        device,
        threads,
        label(cfg.trainer.precision, device),
        f"{sum(p.numel() for p in model.parameters()):,}",
    )
    objective = metric_list(cfg.optimized_metric)[0]
    reporter = job.reporter(objective, unit="epoch")  # the sweep's channel: None in a single run
    on_epoch = None if reporter is None else lambda epoch, row: reporter(epoch, row.get(objective), row)
    metrics = fit(model, splits, instantiate(cfg.optimizer), cfg.trainer, cfg.augment, on_epoch=on_epoch)
    extra = stopped(metrics, reporter, logging.getLogger("mlp_sweep.epochs"))
    title = " ".join(hydra_cfg.overrides.task) or "defaults"
    write_outputs(out, metrics, model if cfg.save_model else None, title, extra)
    log.info("%s", table(metrics))
    log.info("outputs in %s", out)
    return result(cfg, metrics)


def stopped(metrics: Any, reporter: Any, epoch_log: logging.Logger) -> dict[str, str]:
    """Why the sweep stopped a trial early, for its metrics.json: pruned, or past trial_timeout."""
    if metrics.status != "pruned":
        return {}
    epoch_log.info("%s", reporter.reason)
    if reporter.timed_out:
        metrics.status = "timeout"
        return {job.TIMEOUT_ATTR: reporter.reason}
    return {job.PRUNED_ATTR: reporter.reason}


def result(cfg: DictConfig, metrics: Any) -> float | tuple[float, ...]:
    values = tuple(float(getattr(metrics, name)) for name in metric_list(cfg.optimized_metric))
    return values[0] if isinstance(cfg.optimized_metric, str) else values


def init_seed(cfg: DictConfig) -> int:
    seed = cfg.trainer.get("init_seed")
    return int(cfg.trainer.seed if seed is None else seed)


def train_stack(cfg: DictConfig, members: list[Any]) -> dict[int, Any]:
    """A stack: its members trained together where they can share batches and a network
    (mlp_sweep.stacked), the rest one after the other; each member's folder gets what a single
    run writes, each member's result is its own (None for one whose config is invalid: its
    metrics.json says why)."""
    from .members import Member, stream_key
    from .precision import label
    from .train import cores, pick_device, set_threads

    hydra_cfg = HydraConfig.get()
    own = Path(hydra_cfg.runtime.output_dir)
    if not cfg.verbose:
        quiet_console()
    device = pick_device(cfg.trainer.device)
    threads = set_threads(cfg.trainer.threads, parallel_jobs(hydra_cfg, cores()))
    objective = metric_list(cfg.optimized_metric)[0]
    results: dict[int, Any] = {}
    streams: dict[str, list[tuple[Any, Any]]] = {}
    files: list[tuple[logging.Logger, logging.Handler]] = []
    try:
        for m in members:
            member_cfg = cfg if m.output_dir == own else m.config()
            try:
                check(member_cfg)
            except UserError as err:  # this member fails alone, with the reason
                (m.output_dir / "metrics.json").write_text(json.dumps({"status": f"invalid configuration: {err}"}))
                results[m.trial.number] = None
                continue
            member = Member(m.trial.number, member_cfg, log=_member_log(m, own, files))
            member.reporter = m.reporter(objective, unit="epoch")
            if member.reporter is not None:
                member.on_epoch = lambda epoch, row, r=member.reporter: r(epoch, row.get(objective), row)
            streams.setdefault(stream_key(member_cfg), []).append((m, member))
        trained = sum(map(len, streams.values()))
        how = f"{device}, {threads} threads, {label(cfg.trainer.precision, device)}"
        log.info("stack of %d trials (%d data stream(s)), %s", trained, len(streams), how)
        for group in streams.values():
            _train_stream([member for _, member in group], device)
            for m, member in group:
                extra = stopped(member.metrics, member.reporter, member.log)
                title = " ".join(_overrides_of(m.output_dir, hydra_cfg, own)) or "defaults"
                model = member.model if member.cfg.save_model else None
                write_outputs(m.output_dir, member.metrics, model, title, extra)
                member.log.info("trial %d\n%s", m.trial.number, table(member.metrics))
                results[m.trial.number] = result(member.cfg, member.metrics)
    finally:
        for logger, handler in files:
            logger.removeHandler(handler)
            handler.close()
    return results


def _train_stream(members: list[Any], device: Any) -> None:
    """Members that share their batches: the stackable ones as networks over the same batches, the
    others one after the other as single runs."""
    from . import data, stacked
    from .members import network_key
    from .model import build
    from .train import fit

    first = members[0].cfg
    splits = data.load(first.data, first.data_size, first.trainer.seed, device)
    nets: dict[str, list[Any]] = {}
    alone = []
    for member in members:
        key = network_key(member.cfg)
        if key is None:
            alone.append(member)
        else:
            nets.setdefault(key, []).append(member)
    if nets:
        together = [member for net in nets.values() for member in net]
        stacked.fit_stream(together, splits, first.trainer, first.augment, list(nets.values()))
    for member in alone:  # a model the stack does not batch: trained as a single run would be
        c = member.cfg
        _seed(init_seed(c))
        member.model = build(splits.in_features, splits.n_classes, **c.model, projection=splits.basis)
        member.metrics = fit(member.model, splits, instantiate_optimizer(c), c.trainer, c.augment, member.on_epoch)


def instantiate_optimizer(cfg: DictConfig) -> Any:
    from hydra.utils import instantiate

    return instantiate(cfg.optimizer, _execution_whitelist_=TRUSTED)


def _overrides_of(folder: Path, hydra_cfg: DictConfig, own: Path) -> list[str]:
    if folder == own:
        return list(hydra_cfg.overrides.task)
    return list(OmegaConf.load(folder / ".hydra" / "overrides.yaml"))


def _member_log(member: Any, own: Path, files: list) -> logging.Logger:
    """A member's epoch lines: in its own folder's mlp_sweep.log, and (tagged) in the job's log.
    The file handler is removed when the stack ends (a worker process may run later stacks)."""
    member_log = logging.getLogger(f"mlp_sweep.epochs.trial{member.trial.number}")
    if member.output_dir != own:
        handler = logging.FileHandler(member.output_dir / "mlp_sweep.log")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        member_log.addHandler(handler)
        files.append((member_log, handler))
    return member_log


class _JobLinesInFile(logging.Filter):
    """In a sweep, the console shows the sweeper's lines; the job's own go to its log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("mlp_sweep")


def quiet_console() -> None:
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console, not the job's log file
            handler.addFilter(_JobLinesInFile())


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def parallel_jobs(hydra_cfg: DictConfig, available: int) -> int:
    """Jobs sharing this machine's cores in this sweep: the launcher's workers (-1 = one per core)
    or, for launchers without a worker count (ray, submitit_local), the sweeper's n_jobs; at most
    the trials the sweeper runs at a time. 1 for a single run, the sequential basic launcher, and
    SLURM jobs (each has its own allocation)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return 1
    launcher, at_once = hydra_cfg.launcher, int(hydra_cfg.sweeper.get("n_jobs", 1) or 1)
    target = str(launcher.get("_target_", ""))
    if target.endswith(("BasicLauncher", "SlurmLauncher")):
        return 1
    if "n_jobs" not in launcher:
        return max(1, at_once)
    workers = int(launcher.n_jobs)
    workers = available if workers < 0 else workers
    return max(1, min(workers, at_once))


def write_outputs(out: Path, metrics: Any, model: Any, title: str, extra: dict | None = None) -> None:
    from .plots import curves

    (out / "metrics.json").write_text(json.dumps({**metrics.as_dict(), **(extra or {})}, indent=2) + "\n")
    curves(metrics.history, out / "curves.png", title=title, best_epoch=metrics.best_epoch)
    if model is not None:
        import torch

        torch.save(model.state_dict(), out / "model.pt")


def table(m: Any) -> str:
    """The course report's table: accuracy of the best epoch on each split."""
    note = "" if m.status == "ok" else f"  [status: {m.status}]"
    tta = m.val_acc_tta is not None

    def flipped(value: float | None) -> str:
        return f"   {value:8.2%}" if tta and value is not None else ""

    return (
        f"best epoch {m.best_epoch} of {m.epochs_run}, {m.seconds:.1f} s, "
        f"{m.images_per_second:,.0f} train img/s, {m.params:,} parameters{note}\n"
        f"  split        accuracy{'   with flips' if tta else ''}\n"
        f"  train        {m.train_acc:8.2%}\n"
        f"  validation   {m.val_acc:8.2%}{flipped(m.val_acc_tta)}\n"
        f"  test         {m.test_acc:8.2%}{flipped(m.test_acc_tta)}"
    )


if __name__ == "__main__":
    main()
