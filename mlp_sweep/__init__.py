"""Hydra + Optuna hyperparameter sweeps for MLP image classifiers."""

__version__ = "0.1.0"
