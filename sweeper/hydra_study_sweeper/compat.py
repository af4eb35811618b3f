"""The fence: every name the sweeper uses that another library keeps private (Optuna, loky,
SQLAlchemy, Hydra's launchers), and nothing else. No other module of the sweeper touches one; a
test reads them all and fails on one found outside this file (the stock plugin's adapter,
stock.py, is the other exception: it exists to call the stock plugin's own code).

Each name is a `Private`: the library, where the name lives, the feature that rests on it, and a
probe. `check()` runs the probes once, when a sweep starts: a missing name gives one line naming
the library, its version and the feature that is off (or, for the few the sweeper cannot run
without, stops the sweep with that line), never an import error and never a guarantee switched off
in silence. Each accessor below works without its name where it can (the feature is then off).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Private:
    library: str  # its distribution's name (for the version)
    name: str  # where the name lives, as code would spell it
    feature: str  # what works because of it
    probe: Callable[[], bool]  # whether the installed library still has it
    essential: bool = False  # the sweeper cannot run without it


def version(library: str) -> str:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- Optuna -------------------------------------------------------------------------------------


def trial_id(trial: Any) -> int:
    """A trial's storage id: Optuna's storages address trials by id, which Trial and FrozenTrial
    keep as _trial_id only."""
    return trial._trial_id


def storage_of(study: Any) -> Any:
    """A study's storage (behind Optuna's cache): Study has no public handle on it."""
    return study._storage


def study_id(study: Any) -> int:
    return study._study_id


def stale_trial_ids(storage: Any, study: Any) -> list[int]:
    """RDBStorage._get_stale_trial_ids: the query Optuna's own fail_stale_trials runs (that public
    function cannot record a reason or requeue, and skips trials that never beat). [] without it."""
    method = getattr(storage, "_get_stale_trial_ids", None)
    return [] if method is None else list(method(study_id(study)))


def heartbeat_model() -> Any:
    """The RDB storage's heartbeat table (no public reader), or None."""
    try:
        from optuna.storages._rdb import models
    except ImportError:
        return None
    return getattr(models, "TrialHeartbeatModel", None)


def reduction_factor(pruner: Any) -> int | None:
    """A successive-halving or Hyperband pruner's eta (kept as _reduction_factor), or None."""
    value = getattr(pruner, "_reduction_factor", None)
    return value if isinstance(value, int) else None


# RDBStorage methods Optuna's cache and Study call that are private; the patient storage wraps them
# (with the public ones) so that their calls wait out an outage of the database server too
RDB_PRIVATE_CALLS = tuple(
    ["_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id", "_get_stale_trial_ids"]
)


def journal_parts(storage: Any) -> tuple[Any, Any] | None:
    """A journal storage's backend and its replay state (how many entries this process has read),
    both private to JournalStorage; None for another storage, or where Optuna renamed them."""
    backend, replay = getattr(storage, "_backend", None), getattr(storage, "_replay_result", None)
    if backend is None or replay is None or not hasattr(replay, "log_number_read"):
        return None
    return backend, replay


def redis_parts(backend: Any) -> tuple[Any, str, bool] | None:
    """A Redis journal backend's client, key prefix and cluster flag; None where renamed."""
    try:
        return backend._redis, backend._prefix, bool(backend._use_cluster)
    except AttributeError:
        return None


# --- loky (joblib's process pool) -------------------------------------------------------------


def on_broken_pool(record: Callable[[Any], None]) -> bool:
    """Calls `record(process)` for each worker process loky finds dead when it declares its pool
    broken (a worker killed by a signal or the OOM killer), by wrapping its manager thread's
    terminate_broken, once per process. False where loky no longer has it."""
    try:
        from joblib.externals.loky import process_executor

        manager = process_executor._ExecutorManagerThread
        original = manager.terminate_broken
    except (ImportError, AttributeError):
        return False
    if getattr(original, "records_deaths", False):
        return True

    def terminate_broken(self: Any, bpe: Any) -> Any:
        for p in list(getattr(self, "processes", {}).values()):
            if p is not None and p.exitcode is not None:
                record(p)
        return original(self, bpe)

    terminate_broken.records_deaths = True
    manager.terminate_broken = terminate_broken
    return True


def running_executor() -> Any:
    """joblib's reusable loky executor of this process, or None (none started, or renamed)."""
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:
        return None
    return getattr(reusable_executor, "_executor", None)


# --- SQLAlchemy -------------------------------------------------------------------------------

POOL_LOGGERS = tuple(
    f"sqlalchemy.pool.impl.{name}"
    for name in ("QueuePool", "NullPool", "StaticPool", "SingletonThreadPool", "AssertionPool")
)
LOST_RESET = "Exception during reset"  # the start of the pool's message for a connection it could not reset


# --- PyMySQL ------------------------------------------------------------------------------------


def read_timeout_settable() -> bool:
    """Whether a connected PyMySQL connection's read timeout can change: PyMySQL reads the greeting
    under the one it was made with, kept only as Connection._read_timeout (applied at each read)."""
    if importlib.util.find_spec("pymysql") is None:
        return False
    from pymysql.connections import Connection

    return getattr(Connection(defer_connect=True, read_timeout=7), "_read_timeout", None) == 7


def set_read_timeout(connection: Any, seconds: float) -> None:
    if type(connection).__module__.startswith("pymysql") and hasattr(connection, "_read_timeout"):
        connection._read_timeout = seconds  # from its next read on; other drivers' connections: nothing


# --- Hydra's launchers ------------------------------------------------------------------------

# launcher class -> what the sweeper knows of it: whether its jobs run in the sweeper's process,
# whether they are local processes (a GPU slot can be set per job), and its kind
LAUNCHERS = {
    "BasicLauncher": "in-process",
    "JoblibLauncher": "joblib",
    "LocalLauncher": "local",  # submitit's local processes
    "SlurmLauncher": "slurm",
    "RayLauncher": "ray",
}
PLUGINS = {  # launcher class -> its distribution
    "BasicLauncher": "hydra-core",
    "JoblibLauncher": "hydra-joblib-launcher",
    "LocalLauncher": "hydra-submitit-launcher",
    "SlurmLauncher": "hydra-submitit-launcher",
    "RayLauncher": "hydra-ray-launcher",
}
LAUNCHER_MODULES = {  # the class's module, for the probe: class names are matched by name
    "BasicLauncher": "hydra._internal.core_plugins.basic_launcher",
    "JoblibLauncher": "hydra_plugins.hydra_joblib_launcher.joblib_launcher",
    "LocalLauncher": "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
    "SlurmLauncher": "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
    "RayLauncher": "hydra_plugins.hydra_ray_launcher.ray_launcher",
}
LAUNCHER_LOGGERS = (  # "Launching 1 jobs locally" and each job's overrides: the sweeper's lines say more
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_ray_launcher._core",
    "hydra_plugins.hydra_ray_launcher._launcher_util",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)


def launcher_kind(launcher: Any) -> str:
    """in-process, joblib, local, slurm, ray; other for one not known (its jobs run elsewhere)."""
    return LAUNCHERS.get(type(launcher).__name__, "other")


# --- the probes -------------------------------------------------------------------------------


def _optuna_objects() -> dict[str, Any]:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    with tempfile.TemporaryDirectory(prefix="hydra-study-sweeper-probe-") as folder:
        journal = optuna.storages.JournalStorage(JournalFileBackend(str(Path(folder) / "probe.log")))
    return {"study": study, "trial": trial, "journal": journal}


_objects: dict[str, Any] = {}


def _reaches(value: Any, chain: tuple[str, ...]) -> bool:
    """Whether value.a.b... exists for the names in `chain`."""
    for name in chain:
        if not hasattr(value, name):
            return False
        value = getattr(value, name)
    return True


def _has(key: str, *chain: str) -> Callable[[], bool]:
    """Whether a live Optuna object (a study, a trial, a journal storage) has key.chain."""

    def probe() -> bool:
        if not _objects:
            _objects.update(_optuna_objects())
        return _reaches(_objects[key], chain)

    return probe


def _attr(module: str, *chain: str, optional: str | None = None) -> Callable[[], bool]:
    """Whether module.chain exists; True when `optional` (a package) is not installed at all."""

    def probe() -> bool:
        if optional is not None and importlib.util.find_spec(optional) is None:
            return True
        try:
            return _reaches(importlib.import_module(module), chain)
        except ImportError:
            return False

    return probe


def _mysql() -> bool:
    return importlib.util.find_spec("pymysql") is None or read_timeout_settable()


def _redis_backend() -> bool:
    if importlib.util.find_spec("redis") is None:
        return True  # no Redis storage possible: nothing is off
    import warnings

    from optuna.storages.journal import JournalRedisBackend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental, says Optuna
        return redis_parts(JournalRedisBackend("redis://127.0.0.1:1/0")) is not None  # connects lazily


def _lost_reset_text() -> bool:
    import inspect

    import sqlalchemy.pool.base

    return LOST_RESET in inspect.getsource(sqlalchemy.pool.base)


def _eta() -> bool:
    import optuna

    return reduction_factor(optuna.pruners.SuccessiveHalvingPruner(reduction_factor=3)) == 3


def _launcher(name: str) -> Callable[[], bool]:
    package = ".".join(LAUNCHER_MODULES[name].split(".")[:2])
    return _attr(LAUNCHER_MODULES[name], name, optional=package)


def _plugin(module: str) -> str:
    """The distribution of a launcher's module."""
    same = [n for n, m in LAUNCHER_MODULES.items() if m.split(".")[:2] == module.split(".")[:2]]
    return PLUGINS[same[0]] if same else "hydra-core"


def _logger_module(name: str) -> Callable[[], bool]:
    package = ".".join(name.split(".")[:2])

    def probe() -> bool:
        if importlib.util.find_spec(package) is None:
            return True
        return importlib.util.find_spec(name) is not None

    return probe


OUTAGE = "waiting out a database outage in every storage call"
STALE = "stale trials of a worker that died on another machine are found (heartbeats)"
NEVER_BEAT = "trials whose worker died before its first heartbeat are found stale"
VANISH = "a worker stops when its Redis study vanished (a flush, a restart without persistence)"
LOKY = "joblib.externals.loky"
NAMES = (
    Private(
        "optuna", "Trial._trial_id", "the sweeper's trials (heartbeats, reports)", _has("trial", "_trial_id"), True
    ),
    Private("optuna", "Study._storage", "the sweeper's reads of running trials", _has("study", "_storage"), True),
    Private("optuna", "Study._study_id", "job reporters (a trial's id by number)", _has("study", "_study_id"), True),
    Private(
        "optuna",
        "RDBStorage._get_stale_trial_ids",
        STALE,
        _attr("optuna.storages", "RDBStorage", "_get_stale_trial_ids"),
    ),
    Private("optuna", "storages._rdb.models.TrialHeartbeatModel", NEVER_BEAT, lambda: heartbeat_model() is not None),
    Private(
        "optuna", "SuccessiveHalvingPruner._reduction_factor", "a pruned trial's reason names its rung's share", _eta
    ),
    *(
        Private("optuna", f"RDBStorage.{n}", f"{OUTAGE} ({n})", _attr("optuna.storages", "RDBStorage", n))
        for n in RDB_PRIVATE_CALLS
    ),
    Private(
        "optuna",
        "JournalStorage._backend, _replay_result",
        VANISH,
        _has("journal", "_replay_result", "log_number_read"),
    ),
    Private("optuna", "JournalRedisBackend._redis, _prefix, _use_cluster", VANISH, _redis_backend),
    Private(
        "joblib",
        "loky's _ExecutorManagerThread.terminate_broken",
        "a killed joblib worker's trial says which signal killed it",
        _attr(f"{LOKY}.process_executor", "_ExecutorManagerThread", "terminate_broken"),
    ),
    Private(
        "joblib",
        "loky's reusable_executor._executor",
        "after Ctrl-C the joblib workers of abandoned trials stop at once",
        _attr(f"{LOKY}.reusable_executor", "_executor"),
    ),
    Private(
        "sqlalchemy",
        f"the pool's message '{LOST_RESET} ...'",
        "a lost server's failed connection resets are not printed as tracebacks",
        _lost_reset_text,
    ),
    Private("PyMySQL", "Connection._read_timeout", "a silent MySQL server named within the connect timeout", _mysql),
    *(
        Private(PLUGINS[n], f"{LAUNCHER_MODULES[n]}.{n}", f"knowing the {LAUNCHERS[n]} launcher", _launcher(n))
        for n in LAUNCHERS
    ),
    *(
        Private(_plugin(n), f"logger {n}", "quietening the launcher's own lines", _logger_module(n))
        for n in LAUNCHER_LOGGERS
    ),
)


_checked: list[str] | None = None


def check() -> list[str]:
    """Probes every fenced name once per process; logs a line for each one missing, and returns
    the lines. Raises RuntimeError (with the lines) when one the sweeper cannot run without is gone."""
    global _checked
    if _checked is not None:
        return _checked
    lines, fatal = [], []
    for p in NAMES:
        try:
            present = p.probe()
        except Exception:  # a probe that cannot even look: the name is as good as gone
            present = False
        if present:
            continue
        line = f"{p.library} {version(p.library)} has no {p.name}: {p.feature} is off"
        (fatal if p.essential else lines).append(line)
        if not p.essential:
            log.warning("%s", line)
    if fatal:
        raise RuntimeError("; ".join(fatal) + " (the sweeper needs it: install a version it was made for)")
    _checked = lines
    return lines
