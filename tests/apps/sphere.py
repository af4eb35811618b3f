"""A Hydra app that knows nothing of mlp_sweep, swept with hydra/sweeper=mlp_sweep in the tests."""

import math
import os
import time

import hydra
from omegaconf import DictConfig

from mlp_sweep.job import current_trial


@hydra.main(config_path="conf", config_name="sphere", version_base=None)
def sphere(cfg: DictConfig):
    trial = current_trial()
    print(f"job of trial {trial.number if trial else None} in study {trial.study if trial else None}")
    value = cfg.x**2 + cfg.y**2
    if cfg.hold and trial and trial.number == 0:  # trial 0 runs until the test lets it end
        deadline = time.monotonic() + 600
        while not os.path.exists(cfg.hold) and time.monotonic() < deadline:
            time.sleep(0.05)
    if cfg.seconds:  # a job that takes time; trial 0 takes six times as long
        time.sleep(cfg.seconds * (6 if trial and trial.number == 0 else 1))
    if cfg.mode == "pair":  # two objectives pulling apart
        return value, (cfg.x - 2) ** 2 + (cfg.y - 1) ** 2
    if cfg.mode == "nan_first" and trial and trial.number == 0:
        return math.nan
    if cfg.mode == "short_first" and trial and trial.number == 0:
        return [value]
    return value


if __name__ == "__main__":
    sphere()
