"""Hydra + Optuna hyperparameter sweeps for MLP image classifiers."""

from pathlib import Path

__version__ = "0.1.0"
_PACKAGE = Path(__file__).resolve().parent
# the config folder: inside the installed package (a wheel), else the checkout's conf/
CONF = str(_PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf")
