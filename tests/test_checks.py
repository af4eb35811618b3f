import pytest

from mlp_sweep.checks import check, problems
from mlp_sweep.errors import UserError


def test_default_and_named_configs_are_valid(cfg_of):
    for overrides in [
        (),
        ("data=digits",),
        ("optimizer=sgd",),
        ("optimizer=adamw", "augment=full"),
        ("optimizer=lion",),
    ]:
        assert problems(cfg_of(*overrides)) == []
    for name in ("course_report", "zca_mlp", "best_mlp", "long_mlp"):
        assert problems(cfg_of(f"experiment={name}")) == [], name
    best, long = cfg_of("experiment=best_mlp"), cfg_of("experiment=long_mlp")
    assert best.data.project == long.data.project == 512 and best.trainer.tta_shift == 2
    assert (best.trainer.epochs, long.trainer.epochs) == (140, 350)  # 79.9 and 199.7 TFLOP


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.activation=swish", "model.activation='swish' is not allowed: use one of relu, leaky_relu"),
        ("model.norm=group", "model.norm='group' is not allowed: use one of none, batch, layer"),
        ("optimizer.lr=0", "optimizer.lr=0 is not allowed: use a number > 0"),
        ("optimizer.lr=-1e-3", "optimizer.lr=-0.001 is not allowed"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1 is not allowed: use a number >= 0"),
        ("model.dropout=1.0", "model.dropout=1.0 is not allowed: use a number in [0, 1)"),
        ("model.hidden_size=0", "model.hidden_size=0 is not allowed: use an integer >= 1"),
        ("model.num_layers=0", "model.num_layers=0 is not allowed"),
        ("data_size.train=0", "data_size.train=0 is not allowed: use an integer >= 1"),
        ("trainer.batch_size=0", "trainer.batch_size=0 is not allowed: use an integer >= 1"),
        ("trainer.precision=fp16", "trainer.precision='fp16' is not allowed: use auto (bf16 on bf16 units)"),
        ("optimized_metric=test_acc", "optimized_metric='test_acc' is not allowed"),
        ("model.hidden_size=abc", "model.hidden_size='abc' is not allowed"),
    ],
)
def test_message_names_key_value_and_allowed(cfg_of, override, expected):
    with pytest.raises(UserError) as err:
        check(cfg_of(override))
    assert expected in str(err.value)


def test_all_problems_reported_at_once(cfg_of):
    found = problems(cfg_of("optimizer.lr=-1", "model.activation=x"))
    assert len(found) == 2


def test_nesterov_needs_momentum(cfg_of):
    assert "needs optimizer.momentum > 0" in problems(cfg_of("optimizer=sgd", "optimizer.momentum=0"))[0]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.whiten=pcaa", "data.whiten='pcaa' is not allowed: use one of none, pca, zca"),
        ("data.whiten_eps=0", "data.whiten_eps=0 is not allowed: use a number > 0"),
        ("augment.mixup=-0.2", "augment.mixup=-0.2 is not allowed: use a number >= 0 (alpha of Beta"),
        ("augment.cutmix=nan", "augment.cutmix=nan is not allowed: use a number >= 0"),
        ("trainer.ema=1.0", "trainer.ema=1.0 is not allowed: use null (off) or a decay in (0, 1)"),
        ("trainer.ema=0", "trainer.ema=0 is not allowed"),
        ("trainer.tta=maybe", "trainer.tta='maybe' is not allowed: use true or false"),
        ("trainer.tta_shift=-1", "trainer.tta_shift=-1 is not allowed: use an integer >= 0 (pixels"),
        ("trainer.tta_shift=2", "trainer.tta_shift=2 needs trainer.tta=true"),
        ("augment.flip=sometimes", "augment.flip='sometimes' is not allowed: use true, false or alternate"),
        ("data.project=-5", "data.project=-5 is not allowed: use an integer >= 0 (principal components"),
    ],
)
def test_new_options_out_of_range_are_refused(cfg_of, override, expected):
    with pytest.raises(UserError) as err:
        check(cfg_of(override))
    assert expected in str(err.value)


def test_whitening_refuses_what_needs_pixels(cfg_of):
    [pca] = problems(cfg_of("data.whiten=pca", "augment=flip_crop", "augment.cutmix=1", "trainer.tta=true"))
    for key in ("augment.flip=True", "augment.crop_padding=4", "augment.cutmix=1", "trainer.tta=True"):
        assert key in pca
    assert "use data.whiten=zca" in pca
    [zca] = problems(cfg_of("data.whiten=zca", "augment=full"))
    assert "augment.brightness=0.2, augment.saturation=0.2" in zca and "augment.flip" not in zca
    ok = ("data.whiten=zca", "augment=flip_crop", "augment.mixup=0.2", "augment.cutmix=1", "trainer.tta=true")
    assert problems(cfg_of(*ok, "trainer.ema=0.999")) == []
    assert problems(cfg_of("data.whiten=pca", "augment.mixup=0.2")) == []


def test_residual_options_are_checked(cfg_of):
    with pytest.raises(UserError) as err:
        check(cfg_of("model.block=dense", "model.expansion=0"))
    assert "model.block='dense' is not allowed: use plain or residual" in str(err.value)
    assert "model.expansion=0 is not allowed: use an integer >= 1" in str(err.value)


def test_every_setting_of_the_multifidelity_preset_is_overridden_as_the_docs_write_it():
    from hydra import compose, initialize_config_dir

    from .conftest import CONF

    given = {"min": 3000, "max": 45000, "eta": 2, "brackets": 2}  # without a `+`, as docs/results.md writes them
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(
            config_name="config",
            overrides=["hparams_search=multifidelity", *(f"hydra.sweeper.fidelity.{k}={v}" for k, v in given.items())],
            return_hydra_config=True,
        )
    assert {k: cfg.hydra.sweeper.fidelity[k] for k in given} == given
