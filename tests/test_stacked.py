"""Stacked training: a member's result is the one it gets alone; members are pruned, stop and
diverge alone; a stacked sweep writes what single runs write."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate

from mlp_sweep import data, stacked
from mlp_sweep.members import Member, network_key, stream_key
from mlp_sweep.model import build
from mlp_sweep.train import fit

from .sweeps import FAST, studies, study, sweep_here

BASE = ("data=digits", "trainer.epochs=6", "trainer.patience=0", "trainer.precision=fp32")
MEMBERS = (  # one stream; three networks (2 and 3 layers), other widths, lrs, decays, smoothing, seeds
    ("optimizer.lr=0.001", "model.hidden_size=64"),
    ("optimizer.lr=0.0003", "model.hidden_size=40", "model.activation=relu", "trainer.init_seed=5"),
    ("optimizer.lr=0.002", "optimizer.weight_decay=0.001", "trainer.label_smoothing=0.1", "model.hidden_size=64"),
    ("model.num_layers=3", "model.hidden_size=32", "optimizer.lr=0.003"),
    ("model.num_layers=3", "model.hidden_size=48", "model.activation=tanh", "optimizer.lr=0.001"),
    # sigmoid is not 0 at 0: its padded units are masked (a network of its own, two widths)
    ("model.num_layers=3", "model.hidden_size=24", "model.activation=sigmoid", "optimizer.lr=0.003"),
    ("model.num_layers=3", "model.hidden_size=40", "model.activation=sigmoid", "optimizer.lr=0.003"),
)
SGD = (("optimizer=sgd", "optimizer.lr=0.02", "model.hidden_size=50"), ("optimizer=sgd", "model.hidden_size=30"))


def alone(cfg):
    """The member trained as a single run trains it."""
    splits = data.load(cfg.data, cfg.data_size, cfg.trainer.seed, "cpu")
    seed = cfg.trainer.init_seed if cfg.trainer.init_seed is not None else cfg.trainer.seed
    torch.manual_seed(seed)
    model = build(splits.in_features, splits.n_classes, **cfg.model)
    metrics = fit(
        model, splits, instantiate(cfg.optimizer, _execution_whitelist_=("torch.optim.*",)), cfg.trainer, cfg.augment
    )
    return metrics, model


def together(cfgs, on_epoch=None):
    members = [Member(i, c, on_epoch=(on_epoch or {}).get(i)) for i, c in enumerate(cfgs)]
    splits = data.load(cfgs[0].data, cfgs[0].data_size, cfgs[0].trainer.seed, "cpu")
    nets = {}
    for m in members:
        key = network_key(m.cfg)
        assert key is not None
        nets.setdefault(key, []).append(m)
    stacked.fit_stream(members, splits, cfgs[0].trainer, cfgs[0].augment, list(nets.values()))
    return members


def same_training(single, member, rel=1e-4, images=1):
    """Equal up to float rounding: every epoch's losses (to `rel`), the best epoch, the accuracies
    (to `images` of the 240 validation images)."""
    assert member.status == single.status
    assert member.precision == single.precision
    assert (member.best_epoch, member.epochs_run) == (single.best_epoch, single.epochs_run)
    for a, b in zip(single.history, member.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rel, abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=rel, abs=1e-6)
        assert abs(a["val_acc"] - b["val_acc"]) <= images / 240
    for key in ("val_acc", "test_acc", "train_acc"):
        assert abs(getattr(single, key) - getattr(member, key)) <= images / 240


@pytest.mark.parametrize("group", [MEMBERS, SGD], ids=["adam", "sgd"])
def test_a_member_trains_as_it_would_alone(cfg_of, group):
    cfgs = [cfg_of(*BASE, *extra) for extra in group]
    members = together(cfgs)
    for cfg, member in zip(cfgs, members, strict=True):
        single, model = alone(cfg)
        same_training(single, member.metrics)
        for p, q in zip(model.parameters(), member.model.parameters(), strict=True):  # the kept weights too
            assert torch.allclose(p, q, atol=1e-4)


def test_a_member_trains_in_bf16_as_it_would_alone(cfg_of):
    """bf16 autocast rounds each product's inputs; a stack's wider products may sum in another order
    than a member's own, so the tolerance is looser than fp32's: losses to 1 %, accuracies to 2 of
    the 240 validation images (measured on AMX: equal to the last digit)."""
    cfgs = [cfg_of(*BASE, *extra, "trainer.precision=bf16") for extra in MEMBERS]
    members = together(cfgs)
    for cfg, member in zip(cfgs, members, strict=True):
        single, model = alone(cfg)
        assert single.precision == "bf16"
        same_training(single, member.metrics, rel=1e-2, images=2)
        for p, q in zip(model.parameters(), member.model.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-2)


def test_a_pruned_member_leaves_and_the_others_go_on_as_alone(cfg_of):
    cfgs = [cfg_of(*BASE, *extra) for extra in MEMBERS[:3]]
    members = together(cfgs, on_epoch={1: lambda epoch, row: epoch < 2})  # the pruner stops member 1 at epoch 2
    assert members[1].metrics.status == "pruned" and members[1].metrics.epochs_run == 2
    for i in (0, 2):
        same_training(alone(cfgs[i])[0], members[i].metrics)


def test_early_stopping_and_epochs_are_each_members_own(cfg_of):
    cfgs = [
        cfg_of(*BASE, "trainer.epochs=3", "model.hidden_size=64"),
        cfg_of(*BASE, "trainer.patience=1", "optimizer.lr=0.05", "model.hidden_size=64"),
        cfg_of(*BASE, "model.hidden_size=32"),
    ]
    members = together(cfgs)
    assert members[0].metrics.epochs_run == 3 and members[2].metrics.epochs_run == 6
    for cfg, member in zip(cfgs, members, strict=True):
        same_training(alone(cfg)[0], member.metrics)


def test_a_diverging_member_fails_alone(cfg_of):
    cfgs = [cfg_of(*BASE, "optimizer.lr=1e30", "model.hidden_size=64"), cfg_of(*BASE, "model.hidden_size=64")]
    members = together(cfgs)
    assert members[0].metrics.status == "diverged"
    assert members[1].metrics.status == "ok"
    same_training(alone(cfgs[1])[0], members[1].metrics)


def test_what_cannot_be_stacked_is_named(cfg_of):
    assert network_key(cfg_of("model.norm=batch")) is None
    assert network_key(cfg_of("trainer.ema=0.99")) is None
    bf16 = cfg_of("trainer.precision=bf16")  # one network in either precision; the stream says which
    assert network_key(bf16) == network_key(cfg_of("trainer.precision=fp32"))
    assert stream_key(bf16) != stream_key(cfg_of("trainer.precision=fp32"))
    assert network_key(cfg_of("model.block=residual")) is None
    assert network_key(cfg_of("data.project=16")) is None
    assert network_key(cfg_of("model.hidden_size=10")) == network_key(cfg_of("model.hidden_size=99"))
    assert network_key(cfg_of("model.num_layers=3")) != network_key(cfg_of())
    assert stream_key(cfg_of("trainer.seed=1")) != stream_key(cfg_of())
    assert stream_key(cfg_of("trainer.init_seed=1")) == stream_key(cfg_of())


@pytest.mark.slow
def test_a_stacked_sweep_writes_each_trial_what_a_single_run_writes(tmp_path):
    space = ("model.norm=choice(none,batch)", "model.hidden_size=int(interval(20,90))")  # batch norm: trained alone
    res = sweep_here(tmp_path, *FAST, "hydra.sweeper.stack=4", "hydra.sweeper.n_trials=6", *space)
    assert res.returncode == 0, res.stderr
    [name] = studies(tmp_path)
    s = study(tmp_path, name)
    assert len(s.trials) == 6 and {t.state.name for t in s.trials} <= {"COMPLETE", "PRUNED"}
    assert "train together (stack of 4)" in res.stdout
    for t in s.trials:
        folder = tmp_path / "outputs" / "sweeps" / s.study_name / str(t.number)
        for name in (
            "metrics.json",
            "curves.png",
            "model.pt",
            "mlp_sweep.log",
            ".hydra/config.yaml",
            ".hydra/hydra.yaml",
        ):
            assert (folder / name).is_file(), (t.number, name)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert t.user_attrs["val_acc"] == pytest.approx(metrics["val_acc"], abs=1e-5)
        if t.state.name == "COMPLETE":
            assert t.value == metrics["val_acc"]
        weights = torch.load(folder / "model.pt")
        hidden = t.params.get("model.hidden_size", 200)
        assert weights["1.weight"].shape[0] == hidden  # its own width, not the stack's widest


@pytest.mark.slow
def test_a_staged_search_runs_in_stacks(tmp_path):
    stages = "hydra.sweeper.stages=[{data_size:1k,n_trials:4,keep:0.5},{data_size:10k,n_trials:2}]"
    res = sweep_here(
        tmp_path, "hparams_search=staged", "data=digits", "trainer.epochs=2", "hydra.sweeper.stack=4", stages
    )
    assert res.returncode == 0, res.stderr
    assert "trials 0, 1, 2, 3 train together (stack of 4)" in res.stdout
    assert "trials 0, 1 train together (stack of 2)" in res.stdout  # the second stage's two
    assert studies(tmp_path) == {"staged-digits-1k": 4, "staged-digits-10k": 2}
    second = study(tmp_path, "staged-digits-10k").trials
    assert all(t.state.is_finished() and t.state.name != "FAIL" for t in second)
