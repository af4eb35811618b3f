import json
import shlex

import pytest
import torch
from omegaconf import OmegaConf

from mlp_sweep.data import PREPARED

from .conftest import CONF, run_cli, write_archive
from .sweeps import run_here

pytestmark = pytest.mark.slow  # runs of the CLI: one as typed and the reruns in subprocesses, the rest in this process

METRIC_KEYS = {
    "train_acc",
    "val_acc",
    "test_acc",
    "best_epoch",
    "epochs_run",
    "status",
    "seconds",
    "images_per_second",
    "history",
}
HISTORY_KEYS = {"train_loss", "train_acc", "val_loss", "val_acc", "seconds"}


def check_run_dir(out, epochs):
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics.keys() >= METRIC_KEYS
    assert len(metrics["history"]) == epochs and metrics["history"][0].keys() >= HISTORY_KEYS
    assert metrics["status"] == "ok" and metrics["images_per_second"] > 0
    assert (out / "curves.png").stat().st_size > 5000
    assert (out / "model.pt").is_file()
    return metrics


def test_digits_run_writes_metrics_curves_and_weights(tmp_path):
    out = tmp_path / "run"
    res = run_cli("data=digits", "trainer.epochs=4", f"hydra.run.dir={out}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    metrics = check_run_dir(out, 4)
    log = res.stdout + res.stderr
    assert log.count("img/s") >= 4  # one line per epoch
    assert "validation" in log and f"{metrics['test_acc']:8.2%}" in log


def test_the_saved_model_holds_the_averaged_weights_and_tta_is_in_the_metrics(tmp_path):
    from mlp_sweep import data
    from mlp_sweep.model import build
    from mlp_sweep.precision import autocast
    from mlp_sweep.train import evaluate

    runs = {}
    for name, extra in (("ema", ("trainer.ema=0.9", "trainer.tta=true")), ("raw", ())):
        out = tmp_path / name
        res = run_here(
            tmp_path, "data=digits", "trainer.epochs=3", "trainer.patience=0", f"hydra.run.dir={out}", *extra
        )
        assert res.returncode == 0, res.stderr
        runs[name] = (check_run_dir(out, 3), torch.load(out / "model.pt"), res.stdout + res.stderr)
    metrics, weights, log = runs["ema"]
    assert 0 < metrics["val_acc_tta"] <= 1 and 0 < metrics["test_acc_tta"] <= 1
    assert "with flips" in log and f"{metrics['test_acc_tta']:8.2%}" in log
    assert runs["raw"][0]["val_acc_tta"] is None
    cfg = OmegaConf.load(CONF / "data" / "digits.yaml")
    splits = data.load(cfg, OmegaConf.create({"train": 20000, "val": 4000}), 0, "cpu")
    model = build(splits.in_features, splits.n_classes, **OmegaConf.load(CONF / "model" / "mlp.yaml"))
    model.load_state_dict(weights)  # what was saved is what was validated and reported
    amp = autocast(torch.device("cpu"), metrics["precision"])  # in the precision the run used
    assert evaluate(model, splits.x_val, splits.y_val, amp)[1] == metrics["val_acc"]
    assert evaluate(model, splits.x_val, splits.y_val, amp, flips=True)[1] == metrics["val_acc_tta"]
    assert any(not torch.equal(weights[k], runs["raw"][1][k]) for k in weights)


def test_default_output_dir_is_under_outputs_of_the_launch_dir(tmp_path):
    res = run_here(tmp_path, "data=digits", "trainer.epochs=1", "save_model=false")
    assert res.returncode == 0, res.stderr
    [metrics_file] = (tmp_path / "outputs").glob("*/*/metrics.json")
    assert not (metrics_file.parent / "model.pt").exists()


def test_cfg_job_prints_the_composed_config(tmp_path):
    res = run_here(tmp_path, "--cfg", "job", "model.hidden_size=123")
    assert res.returncode == 0 and "hidden_size: 123" in res.stdout


def test_short_run_on_real_cifar10(tmp_path, cifar_dir):
    out = tmp_path / "run"
    res = run_here(
        tmp_path,
        "data_size=1k",
        "trainer.epochs=2",
        "augment=flip_crop",
        f"hydra.run.dir={out}",
        env={"MLP_SWEEP_DATA_DIR": str(cifar_dir)},
    )
    assert res.returncode == 0, res.stderr
    metrics = check_run_dir(out, 2)
    assert metrics["val_acc"] > 0.2  # well above chance (10 %) after 2 epochs on 1k images


def assert_user_error(res, *fragments):
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    for fragment in fragments:
        assert fragment in res.stderr, res.stderr


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.activation=swish", "model.activation='swish'"),
        ("optimizer.lr=-1", "optimizer.lr=-1"),
        ("model.dropout=1.5", "model.dropout=1.5"),
        ("trainer.batch_size=0", "trainer.batch_size=0"),
    ],
)
def test_bad_config_is_rejected_before_training(tmp_path, override, fragment):
    res = run_here(tmp_path, "data=digits", override)
    assert_user_error(res, fragment, "is not allowed")
    assert "epoch" not in res.stdout + res.stderr


def test_unknown_optimizer_lists_the_options(tmp_path):
    res = run_here(tmp_path, "optimizer=adagrad")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "optimizer/adagrad" in res.stderr and "adamw" in res.stderr


def test_unwritable_output_dir(tmp_path):
    (tmp_path / "file").write_text("")
    res = run_here(tmp_path, "data=digits", f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    assert_user_error(res, "hydra.run.dir=", "use a directory you can write to")


def test_corrupt_data_file_is_named(tmp_path):
    (tmp_path / PREPARED).write_bytes(b"\x00" * 100)
    res = run_here(tmp_path, "data_size=1k", env={"MLP_SWEEP_DATA_DIR": str(tmp_path)})
    assert_user_error(res, str(tmp_path / PREPARED), "corrupt")


def test_size_beyond_the_data(tmp_path):
    write_archive(tmp_path / "cifar-10-python.tar.gz")  # 100 training images
    res = run_here(tmp_path, "data_size=1k", env={"MLP_SWEEP_DATA_DIR": str(tmp_path)})
    assert_user_error(res, "data_size.train + data_size.val", "exceeds the 100 training images")


def test_missing_data_offline(tmp_path):
    res = run_here(tmp_path, "data.download=false", env={"MLP_SWEEP_DATA_DIR": str(tmp_path / "none")})
    assert_user_error(res, "CIFAR-10 was not found", "data=digits")


@pytest.mark.slow
def test_the_best_trial_reruns_from_its_command_and_from_its_experiment_file(tmp_path):
    from .sweeps import study, sweep_here

    res = sweep_here(tmp_path, "data=digits", "trainer.epochs=2", "hydra.sweeper.n_trials=3")
    assert res.returncode == 0, res.stderr
    best = study(tmp_path, "tpe-digits-20k").best_value
    md = (tmp_path / "outputs" / "sweeps" / "tpe-digits-20k" / "summary.md").read_text()
    [line] = [s for s in md.splitlines() if s.startswith("Rerun as a single run: `")]
    words = shlex.split(line.split("`")[1])
    assert words[:3] == ["python", "-m", "mlp_sweep"] and "data=digits" in words
    experiment = tmp_path / "outputs" / "configs" / "experiment" / "tpe-digits-20k-best.yaml"
    assert experiment.is_file() and f"`python -m mlp_sweep experiment={experiment.stem}`" in md
    assert "hparams_search" not in experiment.read_text()  # rerun_skip: a single run selects no preset
    for args in (words[3:], [f"experiment={experiment.stem}"]):
        run = run_cli(*args, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        [shown] = [s for s in (run.stdout + run.stderr).splitlines() if s.strip().startswith("validation")]
        assert f"{best:.2%}" in shown  # the same validation accuracy as the trial's
