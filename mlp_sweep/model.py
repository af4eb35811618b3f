"""The MLP: flatten, then (Linear, norm, activation, dropout) blocks, then a Linear classifier."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}
NORMS = {"none": None, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


def build(
    in_features: int,
    n_classes: int,
    *,
    num_layers: int,
    hidden_size: int,
    activation: str,
    dropout: float,
    norm: str,
) -> nn.Sequential:
    """num_layers counts Linear layers: 1 is a linear classifier, 2 has one hidden layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(width, hidden_size))
        if NORMS[norm] is not None:
            layers.append(NORMS[norm](hidden_size))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden_size
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)
