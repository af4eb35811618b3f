"""A Hydra app that knows nothing of this project but the sweeper's job module: the sweeper's tests
sweep it. Its value is x^2 + y^2; with `steps`, it "trains": each step reports a loss that falls
towards the value, so the pruner has something to judge."""

import json
import logging
import math
import os
import time

import hydra
from hydra_study_sweeper import job
from omegaconf import DictConfig

log = logging.getLogger("sphere")


@hydra.main(config_path="conf", config_name="sphere")
def sphere(cfg: DictConfig):
    members = job.stack() if cfg.stacks else None
    if members is None:
        return one(cfg)
    # a stack: each member with its own config, reporter and folder, one result per trial number
    print(f"stack of trials {[m.trial.number for m in members]}")
    return {m.trial.number: one(m.config(), m.trial, m.reporter("loss"), str(m.output_dir)) for m in members}


def one(cfg: DictConfig, trial=None, report=None, out=None):
    trial = trial or job.current_trial()
    report = report if trial is not None and report is not None else job.reporter("loss")
    number = trial.number if trial else None
    print(f"job of trial {number} in study {trial.study if trial else None}")
    value = cfg.x**2 + cfg.y**2 + cfg.noise * cfg.seed
    if cfg.hold and number == 0:  # trial 0 runs until the test lets it end
        deadline = time.monotonic() + 600
        while not os.path.exists(cfg.hold) and time.monotonic() < deadline:
            time.sleep(0.05)
    if cfg.mode == "hang_first" and number == 0:  # one step, then hangs, with a child that hangs too
        hang(report)
    if cfg.seconds:  # a job that takes time; trial 0 takes six times as long
        time.sleep(cfg.seconds * (6 if number == 0 else 1))
    value = train(cfg, value, report)
    if cfg.results:  # a results file, as an app may leave one (hydra.sweeper.results_file)
        out = out or hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
        status = "diverged" if cfg.mode == "diverge_first" and number == 0 else "ok"
        with open(os.path.join(out, "results.json"), "w") as f:
            gpu = os.environ.get("CUDA_VISIBLE_DEVICES")  # what the sweeper handed this job
            json.dump({"status": status, "loss": value, "distance": math.sqrt(value), "gpu": gpu}, f)
    if cfg.mode == "pair":  # two objectives pulling apart
        return value, (cfg.x - 2) ** 2 + (cfg.y - 1) ** 2
    if cfg.mode == "nan_first" and number == 0:
        return math.nan
    if cfg.mode == "short_first" and number == 0:
        return [value]
    if cfg.mode == "raise_all":
        raise RuntimeError("this task always fails")
    return value


def hang(report) -> None:
    """Report one step, start a child process that ignores SIGTERM, then neither end nor report (a
    deadlocked loader)."""
    import subprocess
    import sys

    if report is not None:
        report(1, 5.0)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", code])
    out = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    with open(os.path.join(out, "child.pid"), "w") as f:
        f.write(str(child.pid))
    time.sleep(600)


def train(cfg: DictConfig, value: float, report) -> float:
    """`steps` steps of `step_seconds` each; the loss falls from value + 1 towards the value."""
    loss = value
    for step in range(1, cfg.steps + 1):
        time.sleep(cfg.step_seconds)
        loss = value + 1 / step
        log.info("step %d of %d: loss %.4f", step, cfg.steps, loss)
        if report is not None and not report(step, loss):
            log.info("stopped at step %d: %s", step, report.reason)
            break
    return loss


if __name__ == "__main__":
    sphere()
