"""The recipes' choices, made on validation by a command: each candidate's validation accuracy
decides, its test accuracy is printed beside and never consulted.

    python benchmarks/choices.py whiten          # data.whiten_eps for zca_mlp / best_mlp (20-epoch screening)
    python benchmarks/choices.py views           # test-time views: best_mlp seed 0, saved, re-evaluated per set
    python benchmarks/choices.py views --experiment zca_mlp --seed 0
    python benchmarks/choices.py whiten --base trainer.precision=bf16 --out outputs/choices
    python benchmarks/choices.py --tiny          # both on digits, 1 epoch (CI): figures meaningless

Runs are seeded single runs of the CLI in OUT/NAME (a finished run is reused). The choice is the
cheapest candidate within 0.3 points of the best validation accuracy (the ablation's noise margin);
view sets that trainer.tta_shift cannot express are printed for comparison, not chosen.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
from pathlib import Path

from _sweep import app, in_this_process

WHITEN_EPS = (0.01, 0.1, 1.0, 3.0, 10.0)
MARGIN = 0.003  # validation accuracy within this of the best is noise (as benchmarks/ablation.py decides)
# the moves (dy, dx) of the image and of its mirror image: each set's views are 2 x its moves
AXES = ((-1, 0), (1, 0), (0, -1), (0, 1))
VIEWS = {
    "the image and its mirror image (trainer.tta_shift=0)": [(0, 0)],
    "both moved 1 pixel up, down, left, right": [(0, 0), *AXES],
    "both moved 2 pixels up, down, left, right": [(0, 0), *((2 * a, 2 * b) for a, b in AXES)],
    "both moved 1 or 2 pixels up, down, left, right": [(0, 0), *AXES, *((2 * a, 2 * b) for a, b in AXES)],
    "both moved 2 pixels in the 8 directions": [(2 * a, 2 * b) for a in (-1, 0, 1) for b in (-1, 0, 1)],
    **{
        f"every shift of up to {s} pixel{'s' if s > 1 else ''} each way (trainer.tta_shift={s})": [
            (dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
        ]
        for s in (1, 2, 3)
    },
}


def run(out: Path, name: str, overrides: list[str]) -> tuple[Path, dict]:
    """One run of the app in OUT/NAME (reused when finished); its folder and metrics."""
    where = out / name
    if not (where / "metrics.json").is_file():
        command = [*overrides, f"hydra.run.dir={where}"]
        done = app(command)
        if done.returncode != 0:  # the app's own error, not a bare CalledProcessError
            sys.exit(f"mlp_sweep {' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return where, json.loads((where / "metrics.json").read_text())


def choose(rows: list[tuple[str, float, float, float | None]], what: str) -> str:
    """Print the candidates (validation, test beside) and the one validation chooses: rows are
    (name, validation, test, cost), cost None for a candidate shown but not configurable. The
    choice is the cheapest configurable candidate within MARGIN of the best configurable validation
    accuracy (the ablation's noise margin: a costlier candidate must earn its cost), by validation
    among equal costs."""
    able = [i for i, r in enumerate(rows) if r[3] is not None]
    top = max(rows[i][1] for i in able)
    near = [i for i in able if rows[i][1] >= top - MARGIN]
    best = min(near, key=lambda i: (rows[i][3], -rows[i][1], i))
    print(f"\n| {what} | validation % | test % (not used) |\n|---|---:|---:|")
    for i, (name, val, test, cost) in enumerate(rows):
        mark = "**" if i == best else ""
        note = " (not a setting)" if cost is None else ""
        print(f"| {mark}{name}{mark}{note} | {mark}{100 * val:.2f}{mark} | {100 * test:.2f} |")
    print(
        f"\nchosen on validation: {rows[best][0]} ({100 * rows[best][1]:.2f} % validation; the best "
        f"configurable had {100 * top:.2f} %, within {100 * MARGIN:.1f} points the cheapest is taken)"
    )
    return rows[best][0]


def whiten(args: argparse.Namespace) -> None:
    """The whitening strength: zca_mlp for --epochs epochs at each eps, one view, mean over seeds."""
    rows = []
    for eps in args.values or WHITEN_EPS:
        val = test = 0.0
        for seed in args.seeds:
            overrides = [f"experiment={args.experiment}", f"data.whiten_eps={eps}", f"trainer.seed={seed}"]
            overrides += [f"trainer.epochs={args.epochs}", "trainer.tta=false", "trainer.tta_shift=0"]
            overrides += ["save_model=false", *args.base]
            _, m = run(args.out, f"whiten-{args.experiment}-eps{eps}-seed{seed}-{args.epochs}ep", overrides)
            print(f"eps {eps:g} seed {seed}: validation {100 * m['val_acc']:.2f} %, test {100 * m['test_acc']:.2f} %")
            val, test = val + m["val_acc"] / len(args.seeds), test + m["test_acc"] / len(args.seeds)
        rows.append((f"data.whiten_eps={eps:g}", val, test, 1.0))  # every eps costs the same
    seeds = ", ".join(map(str, args.seeds))
    choose(rows, f"{args.experiment}, {args.epochs} epochs, seeds {seeds}, one view")


def views(args: argparse.Namespace) -> None:
    """The test-time views: one trained model of the recipe, evaluated with each set of views."""
    import torch
    from omegaconf import OmegaConf

    from mlp_sweep import data
    from mlp_sweep.model import build
    from mlp_sweep.train import EVAL_BATCH, pick_device

    overrides = [f"experiment={args.experiment}", f"trainer.seed={args.seeds[0]}", "save_model=true", *args.base]
    where, m = run(args.out, f"views-{args.experiment}-seed{args.seeds[0]}", overrides)
    cfg = OmegaConf.load(where / ".hydra" / "config.yaml")
    device = pick_device(cfg.trainer.device)
    splits = data.load(cfg.data, cfg.data_size, cfg.trainer.seed, device)
    model = build(splits.in_features, splits.n_classes, **cfg.model, projection=splits.basis).to(device)
    model.load_state_dict(torch.load(where / "model.pt", map_location=device))
    model.eval()
    said = f", its own {100 * m['val_acc_tta']:.2f} % with the recipe's views" if m.get("val_acc_tta") else ""
    print(f"{args.experiment} seed {args.seeds[0]}: one view {100 * m['val_acc']:.2f} % validation{said}")

    @torch.inference_mode()
    def accuracy(x: torch.Tensor, y: torch.Tensor, moves: list[tuple[int, int]]) -> float:
        s = max(max(abs(dy), abs(dx)) for dy, dx in moves)
        h, w = x.shape[2], x.shape[3]
        correct = 0
        for i in range(0, len(y), EVAL_BATCH):
            xb = x[i : i + EVAL_BATCH]
            probs = 0
            for image in (xb, xb.flip(3)):
                padded = torch.nn.functional.pad(image, (s, s, s, s))  # zero border, as the crops pad
                for dy, dx in moves:
                    probs = probs + model(padded[:, :, s - dy : s - dy + h, s - dx : s - dx + w]).float().softmax(1)
            correct += (probs.argmax(1) == y[i : i + EVAL_BATCH]).sum().item()
        return correct / len(y)

    rows = []
    for name, moves in VIEWS.items():
        val, test = accuracy(splits.x_val, splits.y_val, moves), accuracy(splits.x_test, splits.y_test, moves)
        cost = 2.0 * len(moves) if "trainer.tta_shift=" in name else None  # configurable: the grids
        rows.append((f"{name}: {2 * len(moves)} views", val, test, cost))
        print(f"{2 * len(moves):3d} views, {name}: validation {100 * val:.2f} %, test {100 * test:.2f} %", flush=True)
    choose(rows, f"views ({args.experiment}, seed {args.seeds[0]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["whiten", "views"])
    parser.add_argument("--experiment", default=None, help="the recipe (whiten: zca_mlp, views: best_mlp)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=20, help="whiten: epochs of each screening run")
    parser.add_argument("--values", type=float, nargs="+", help=f"whiten: the eps to try (default {WHITEN_EPS})")
    parser.add_argument("--base", nargs="*", default=[], help="overrides for every run, e.g. trainer.precision=bf16")
    parser.add_argument("--out", type=Path, default=Path("outputs/choices"))
    parser.add_argument("--tiny", action="store_true", help="both choices on digits, 1 epoch, in a temporary folder")
    args = parser.parse_args()
    in_this_process(args.tiny)  # its runs in this process: a tiny run's figures are meaningless
    if args.tiny:
        args.base = [*args.base, "data=digits", "data.whiten=zca", "data_size=1k", "data.project=0", "trainer.epochs=1"]
        args.epochs, args.values = 1, [0.1, 1.0]
        args.out = Path(tempfile.mkdtemp(prefix="choices-tiny-"))
        atexit.register(shutil.rmtree, args.out, True)
    elif args.what is None:
        parser.error("say what to choose: whiten or views")
    for what in ["whiten", "views"] if args.tiny else [args.what]:
        step = argparse.Namespace(**{**vars(args), "experiment": args.experiment or {"whiten": "zca_mlp"}.get(what)})
        step.experiment = step.experiment or "best_mlp"
        (whiten if what == "whiten" else views)(step)


if __name__ == "__main__":
    main()
