"""The app keeps to its shape: no module touches another's private name (its own modules' or a
library's), except torch's multi-tensor ops, which have no public spelling."""

from __future__ import annotations

from pathlib import Path

from sweeper.tests.test_fence import private_uses

ROOT = Path(__file__).resolve().parents[1]
# torch's `_foreach_*` ops: the multi-tensor kernels its own optimizers run; Lion and the weight
# average use them (one kernel per parameter list instead of one per tensor). benchmarks/_sweep.py:
# the benchmarks' shared helper, underscored so that it is not taken for a benchmark script
ALLOWED = ("torch._foreach_", "from _sweep import")


def test_no_module_of_the_app_or_its_benchmarks_touches_a_private_name():
    files = sorted((ROOT / "mlp_sweep").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    found = [use for f in files for use in private_uses(f, ALLOWED)]
    assert found == [], "private names across modules:\n" + "\n".join(found)
