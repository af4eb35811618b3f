"""trainer.precision: fp32, bf16 (autocast), or auto: bf16 where the hardware runs its products fast
(a CPU with AMX or AVX-512 BF16 units, a CUDA device of compute capability 8.0 or newer), fp32
elsewhere. What auto chose, and why, is said at the start of a run and kept in metrics.json."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

CHOICES = ("auto", "fp32", "bf16")  # what trainer.precision takes (mlp_sweep.checks refuses the rest)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere: auto then keeps fp32)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_units(device_type: str, device_index: int | None = None) -> str | None:
    """What makes bf16 fast on this device ('AMX', 'AVX-512 BF16', 'CUDA sm_90'), or None."""
    if device_type == "cpu":
        flags = cpu_flags()
        if "amx_bf16" in flags:
            return "AMX"
        if "avx512_bf16" in flags:
            return "AVX-512 BF16"
        return None
    if device_type == "cuda":
        import torch

        major, minor = torch.cuda.get_device_capability(device_index)
        return f"CUDA sm_{major}{minor}" if major >= 8 else None  # Ampere and newer: bf16 tensor cores
    return None


def resolve(setting: str, device: Any) -> tuple[str, str]:
    """(fp32 | bf16, why): the precision a run on `device` (a torch.device) trains in and, for
    auto, the reason ('cpu has AMX'); for an explicit setting the reason is empty."""
    if setting != "auto":
        return setting, ""
    units = bf16_units(device.type, device.index)
    if units:
        return "bf16", f"{device.type} has {units}"
    return "fp32", f"{device.type} has no bf16 units"


def label(setting: str, device: Any) -> str:
    """The precision as a run's first line says it: 'bf16 (auto: cpu has AMX)', 'fp32'."""
    precision, why = resolve(setting, device)
    return f"{precision} (auto: {why})" if why else precision


def autocast(device: Any, precision: str) -> Any:
    """The context a forward pass runs in: bf16 autocast, or nothing for fp32."""
    import torch

    if precision == "auto":
        precision = resolve(precision, device)[0]
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
