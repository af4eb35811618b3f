"""trainer.precision=auto: bf16 where the CPU (AMX, AVX-512 BF16) or GPU (sm_80+) has bf16 units,
fp32 elsewhere; what was chosen is said and kept in metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlp_sweep import precision, train

from .test_train import run

CPU = torch.device("cpu")


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU lists these feature flags."""

    def set_flags(*names: str) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))

    return set_flags


@pytest.mark.parametrize(
    ("cpu", "chosen", "why"),
    [
        (("avx2", "avx512f", "amx_bf16", "amx_tile"), "bf16", "cpu has AMX"),
        (("avx2", "avx512f", "avx512_bf16"), "bf16", "cpu has AVX-512 BF16"),
        (("avx2", "avx512f"), "fp32", "cpu has no bf16 units"),
        (("avx2",), "fp32", "cpu has no bf16 units"),
    ],
)
def test_auto_takes_bf16_only_where_the_cpu_has_bf16_units(flags, cpu, chosen, why):
    flags(*cpu)
    assert precision.resolve("auto", CPU) == (chosen, why)
    assert precision.label("auto", CPU) == f"{chosen} (auto: {why})"


def test_an_explicit_precision_is_kept_whatever_the_hardware(flags):
    flags("avx2")
    assert precision.resolve("bf16", CPU) == ("bf16", "")
    flags("amx_bf16")
    assert precision.resolve("fp32", CPU) == ("fp32", "")
    assert not isinstance(precision.autocast(CPU, "fp32"), torch.autocast)
    flags("avx2")
    assert isinstance(precision.autocast(CPU, "bf16"), torch.autocast)


def test_the_cpu_flags_are_read_from_the_machine():
    found = precision.cpu_flags()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        assert found == frozenset()
        return
    assert found and all(f in text for f in found)


@pytest.mark.parametrize(("cpu", "chosen"), [(("amx_bf16",), "bf16"), (("avx2",), "fp32")])
def test_a_run_trains_in_what_auto_chose_and_records_it(flags, monkeypatch, cfg_of, cpu, chosen):
    flags(*cpu)
    seen = []

    def spy(device, p, real=precision.autocast):
        seen.append(p)
        return real(device, p)

    monkeypatch.setattr(train, "precision_autocast", spy)
    _, _, m = run(cfg_of("data=digits", "trainer.epochs=1", "trainer.precision=auto"))
    assert m.precision == chosen and seen == [chosen]
    assert json.loads(json.dumps(m.as_dict()))["precision"] == chosen


def test_bf16_and_fp32_train_differently_and_both_learn(cfg_of):
    """bf16 autocast really changes the products (not a label), and still learns digits."""
    runs = {p: run(cfg_of("data=digits", "trainer.epochs=4", f"trainer.precision={p}"))[2] for p in ("fp32", "bf16")}
    assert runs["fp32"].history[0]["train_loss"] != runs["bf16"].history[0]["train_loss"]
    for m in runs.values():
        assert m.val_acc > 0.6
