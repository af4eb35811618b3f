"""How close to the machine's limit the default sweep runs: the tpe preset's space on CIFAR-10
(data_size=20k, up to 20 epochs, pruning off, the same sampler seeds), one row per way of running
it, side by side in one run.

    python benchmarks/sweep_speed.py                      # 16 trials, sampler seeds 0 1 2, stacks of 8
    python benchmarks/sweep_speed.py --seeds 0 --trials 24 --stack 16
    python benchmarks/sweep_speed.py --rows fp32 auto     # only these rows
    python benchmarks/sweep_speed.py --tiny               # digits, 4 trials, 1 epoch (CI): figures meaningless

Rows: `fp32` (trainer.precision=fp32, the default before auto), `auto-foreach` (auto with
optimizer.fused=false: Adam's multi-tensor update instead of its fused kernel), `auto` (the default:
bf16 where the hardware has bf16 units, fused Adam), `auto-stack` (the same, hydra.sweeper.stack=K).
Per row, the medians over the sampler seeds: wall seconds, trials per hour, best validation accuracy,
training TFLOP (train_tflop of every trial) per second of wall time, and that rate against the
measured matmul peak of the precision the trials used ((512 x 3072) @ (3072 x 1024), the largest
product of the space). Then the ratios to the fp32 row, and what bounds the fastest row: one
training step of its kind, profiled, split into products, optimizer update and the rest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch
from _sweep import in_this_process, timed_sweep

from mlp_sweep.precision import resolve
from mlp_sweep.train import cores

ROWS = {
    "fp32": ("trainer.precision=fp32",),
    "auto-foreach": ("trainer.precision=auto", "optimizer.fused=false", "+optimizer.foreach=true"),
    "auto": ("trainer.precision=auto",),
    "auto-stack": ("trainer.precision=auto", "hydra.sweeper.stack={stack}"),
}
PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
OPTIMIZER = ("aten::_fused_adam_", "aten::_fused_adamw_", "aten::_fused_sgd_", "aten::_foreach_")


def matmul_peak(precision: str, seconds: float = 1.0) -> float:
    """TFLOP/s of (512 x 3072) @ (3072 x 1024) in the precision, median of repeated timings."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(512, 3072, dtype=dtype), torch.randn(3072, 1024, dtype=dtype)
    for _ in range(3):
        a @ b
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * 512 * 3072 * 1024 / statistics.median(times) / 1e12


def sweep(out: Path, name: str, overrides: tuple[str, ...]) -> dict:
    wall, study = timed_sweep(out, name, *overrides)
    jobs = [json.loads(p.read_text()) for p in (out / name).glob("*/metrics.json")]  # every trial's own figures
    return {
        "wall": wall,
        "per_hour": 3600 * len(study.trials) / wall,
        "val": study.best_value,
        "tflop": sum(j.get("train_tflop", 0.0) for j in jobs),
        "precision": "/".join(sorted({j["precision"] for j in jobs if j.get("precision")})),
    }


def bound(precision: str, stack: int, steps: int, tiny: bool) -> str:
    """One profiled training loop like the row's (the space's middle: 3072-275-275-10, batch 256):
    the share of products, optimizer update and the rest in its CPU time."""
    from omegaconf import OmegaConf

    from mlp_sweep import stacked
    from mlp_sweep.members import Member
    from mlp_sweep.precision import autocast
    from mlp_sweep.train import keep_freed_memory

    keep_freed_memory()  # as training does
    width, features = (64, 64) if tiny else (275, 3072)
    cfg = {
        "model": {"num_layers": 3, "hidden_size": width, "activation": "relu", "dropout": 0.0, "norm": "none"},
        "trainer": {"seed": 0, "init_seed": None, "label_smoothing": 0.0, "precision": precision},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 1e-3, "weight_decay": 1e-5, "fused": True},
    }

    cfg["trainer"] |= {"epochs": 1, "patience": 0}  # what a Member's course reads
    members = [Member(i, OmegaConf.create(cfg)) for i in range(stack)]
    for i, m in enumerate(members):
        m.cfg.model.hidden_size = width - 8 * i  # stacks mix widths
    net = stacked.Stack(members, features, 10, torch.device("cpu"))
    x, y = torch.randn(256, features), torch.randint(0, 10, (256,))
    amp = autocast(torch.device("cpu"), precision)

    def step() -> None:
        with amp:
            losses = stacked.member_losses(net, net.forward(x, train=True).float(), y)
        losses.sum().backward()
        stacked.optimizer_step(net, 1.0)

    for _ in range(3):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    share = {"products": 0.0, "optimizer update": 0.0, "the rest (casts, activations, per-step overhead)": 0.0}
    for e in prof.key_averages():
        if e.key in PRODUCTS:
            share["products"] += e.self_cpu_time_total
        elif e.key.startswith(OPTIMIZER):
            share["optimizer update"] += e.self_cpu_time_total
        else:
            share["the rest (casts, activations, per-step overhead)"] += e.self_cpu_time_total
    total = sum(share.values()) or 1.0
    ms = total / 1000 / steps
    parts = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(share.items(), key=lambda kv: -kv[1]))
    return f"a step of {stack} member(s) of {features}-{width}-{width}-10 in {precision}, {ms:.1f} ms: {parts}"


def run_rows(args: argparse.Namespace, data: tuple[str, ...], peaks: dict[str, float]) -> dict[str, dict]:
    """Every row's sweeps (one a sampler seed), printed as a table row each: the medians."""
    print("\n| row | precision | wall s | trials/h | best val | TFLOP/s | of its matmul peak |")
    print("|---|---|---:|---:|---:|---:|---:|")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for row in args.rows:
            extra = tuple(o.format(stack=args.stack) for o in ROWS[row])
            overrides = (*data, *extra, "hydra/sweeper/pruner=none", f"hydra.sweeper.n_trials={args.trials}")
            runs = [
                sweep(Path(tmp), f"{row}-s{seed}", (*overrides, f"hydra.sweeper.sampler.seed={seed}"))
                for seed in args.seeds
            ]
            r = {k: statistics.median(x[k] for x in runs) for k in ("wall", "per_hour", "val", "tflop")}
            r["precision"] = runs[0]["precision"]
            r["rate"] = r["tflop"] / r["wall"]
            r["vals"] = [x["val"] for x in runs]
            results[row] = r
            peak = peaks.get(r["precision"], peaks["fp32"])
            print(
                f"| {row} | {r['precision']} | {r['wall']:.0f} | {r['per_hour']:.0f} | {r['val']:.2%} | "
                f"{r['rate']:.3f} | {r['rate'] / peak:.0%} |",
                flush=True,
            )
    return results


def print_ratios(results: dict[str, dict]) -> None:
    """Each row against the fp32 row: trials per hour, and best validation seed by seed."""
    if "fp32" not in results:
        return
    base = results["fp32"]
    print()
    for row, r in results.items():
        if row == "fp32":
            continue
        diffs = ", ".join(f"{100 * (a - b):+.2f}" for a, b in zip(r["vals"], base["vals"], strict=True))
        print(
            f"{row} / fp32: {r['per_hour'] / base['per_hour']:.2f}x the trials per hour; "
            f"best val per sampler seed {diffs} points"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    parser.add_argument("--stack", type=int, default=8, help="K of the auto-stack row")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--data-size", default="20k")
    parser.add_argument("--tiny", action="store_true", help="digits, 4 trials, 1 epoch, seed 0 (CI)")
    args = parser.parse_args()
    in_this_process(args.tiny)  # its sweeps in this process: a tiny run's figures are meaningless
    data = (f"data_size={args.data_size}",)
    if args.tiny:
        args.trials, args.seeds, args.stack = 4, [0], 2
        data = ("data=digits", "data_size=1k", "trainer.epochs=1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(cores())
    auto = resolve("auto", torch.device("cpu"))
    print(
        f"{cores()} cores, torch {torch.__version__}; trainer.precision=auto takes {auto[0]} here ({auto[1]}); "
        f"{args.trials} trials a sweep, {' '.join(data)}, the tpe preset's space, pruning off, "
        f"sampler seeds {' '.join(map(str, args.seeds))}"
    )
    peaks = {p: matmul_peak(p, 0.05 if args.tiny else 1.0) for p in ("fp32", "bf16")}
    print(f"matmul peak, (512 x 3072) @ (3072 x 1024): fp32 {peaks['fp32']:.3f}, bf16 {peaks['bf16']:.3f} TFLOP/s")
    results = run_rows(args, data, peaks)
    print_ratios(results)
    fastest = max(results, key=lambda k: results[k]["per_hour"])
    stack = args.stack if fastest == "auto-stack" else 1
    profiled = bound(results[fastest]["precision"] or "fp32", stack, 5 if args.tiny else 20, args.tiny)
    print(f"\nfastest row: {fastest}; what bounds it, from a profile of {profiled}")


if __name__ == "__main__":
    main()
