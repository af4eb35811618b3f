"""The fence (compat.py): every private name of another library the sweeper uses is there, each is
still in the installed library, a missing one is said in one line, and no other module touches one."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from hydra_study_sweeper import compat

PACKAGE = Path(compat.__file__).parent
FENCED = {"compat.py", "stock.py"}  # stock.py: the adapter that calls the stock plugin's own code
# documented public API whose names start with an underscore (namedtuple's methods, os._exit)
PUBLIC = {"_replace", "_asdict", "_fields", "_make", "_exit"}


def private_uses(path: Path, allowed: tuple[str, ...] = ()) -> list[str]:
    """`LINE: what` for each private name of another object or module that the file touches: an
    attribute `x._name` (x not self or cls), an import of or from a private module, an import of a
    private name. `allowed`: spellings (prefixes) the caller accepts."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            module = "." * node.level + (node.module or "")
            if any(_private(part) for part in module.split(".")):
                found.append((node.lineno, f"from {module} import ..."))
            found += [(node.lineno, f"from {module} import {a.name}") for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if any(map(_private, a.name.split(".")))]
    return [f"{path.name}:{line}: {what}" for line, what in sorted(found) if not what.startswith(allowed)]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC


def test_no_module_outside_the_fence_touches_a_private_name():
    found = [use for f in sorted(PACKAGE.glob("*.py")) if f.name not in FENCED for use in private_uses(f)]
    assert found == [], "private names outside compat.py (move them into the fence):\n" + "\n".join(found)


def test_the_scan_finds_what_it_is_written_for(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from optuna.storages._rdb import models\nfrom .train import _schedule\nimport a._b\n"
        "def f(study, self):\n    self._fine = 1\n    return study._storage, parts._replace(x=1)\n"
    )
    assert [u.split(": ", 1)[1] for u in private_uses(module)] == [
        "from optuna.storages._rdb import ...",
        "from .train import _schedule",
        "import a._b",
        "study._storage",
    ]


@pytest.mark.parametrize("private", compat.NAMES, ids=lambda p: f"{p.library}:{p.name}")
def test_the_installed_library_still_has_the_name(private):
    """One test per fenced name: it fails the day the library renames it."""
    assert private.probe(), f"{private.library} {compat.version(private.library)} has no {private.name}"


@pytest.fixture
def fresh_check(monkeypatch):
    monkeypatch.setattr(compat, "_checked", None)
    return monkeypatch


def test_a_missing_name_is_said_once_with_library_version_and_feature(fresh_check, caplog):
    gone = compat.Private("optuna", "Study._imagined", "imagined waiting", lambda: False)
    broken = compat.Private("joblib", "loky._also_gone", "imagined stopping", lambda: 1 / 0)
    fresh_check.setattr(compat, "NAMES", (*compat.NAMES, gone, broken))
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        lines = compat.check()
        assert compat.check() is lines  # once per process
    version = compat.version("optuna")
    assert lines == [
        f"optuna {version} has no Study._imagined: imagined waiting is off",
        f"joblib {compat.version('joblib')} has no loky._also_gone: imagined stopping is off",
    ]
    assert [r.getMessage() for r in caplog.records] == lines


def test_an_essential_name_missing_stops_before_any_work(fresh_check):
    gone = compat.Private("optuna", "Trial._gone", "the sweeper's trials", lambda: False, essential=True)
    fresh_check.setattr(compat, "NAMES", (gone,))
    with pytest.raises(RuntimeError, match=r"optuna \S+ has no Trial._gone: the sweeper's trials is off"):
        compat.check()


def test_each_feature_is_off_without_its_name_rather_than_broken(monkeypatch):
    class Bare:
        pass

    assert compat.stale_trial_ids(Bare(), None) == []
    assert compat.reduction_factor(Bare()) is None
    assert compat.journal_parts(Bare()) is None and compat.redis_parts(Bare()) is None
    assert compat.launcher_kind(Bare()) == "other"
    compat.set_read_timeout(Bare(), 1)  # not a PyMySQL connection: left alone
    from hydra_study_sweeper.storage import STATEMENT_TIMEOUT, mysql_engine

    monkeypatch.setattr(compat, "read_timeout_settable", lambda: False)
    assert mysql_engine()["connect_args"]["read_timeout"] == STATEMENT_TIMEOUT  # the greeting waits as a statement
    assert "poolclass" not in mysql_engine()
    from joblib.externals.loky import process_executor, reusable_executor

    monkeypatch.delattr(process_executor, "_ExecutorManagerThread")
    monkeypatch.delattr(reusable_executor, "_executor")
    assert compat.on_broken_pool(lambda p: None) is False
    assert compat.running_executor() is None


def test_a_sweep_says_a_missing_name_and_goes_on(tmp_path, monkeypatch, capsys):
    """In a sweep of the test app (in this process): the line comes once, and the sweep still runs."""
    from .helpers import sweep_here

    gone = compat.Private("optuna", "RDBStorage._imagined", "imagined waiting", lambda: False)
    monkeypatch.setattr(compat, "_checked", None)
    monkeypatch.setattr(compat, "NAMES", (*compat.NAMES, gone))
    logs = sweep_here(tmp_path, "hydra.sweeper.n_trials=2")
    assert logs.count("has no RDBStorage._imagined: imagined waiting is off") == 1
    assert "progress: 2 / 2 trials done" in logs
