"""The MLP: flatten, (optionally a fixed projection onto principal components), then (Linear, norm,
activation, dropout) blocks, then a Linear classifier; or, with block=residual, a Linear stem,
pre-norm residual bottleneck blocks (norm, expand, activation, contract, skip), a norm and the
classifier."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}
NORMS = {"none": None, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class Residual(nn.Module):
    """x + inner(x)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


class Projection(nn.Module):
    """x @ basis: a fixed linear map (data.project's principal directions), never trained. Its
    matrix is a buffer, so it travels in the model's state dict (model.pt is the whole model)."""

    def __init__(self, basis: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("basis", basis.detach().clone(memory_format=torch.contiguous_format))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.basis

    def extra_repr(self) -> str:
        return f"in_features={self.basis.shape[0]}, out_features={self.basis.shape[1]}, fixed"


def build(
    in_features: int,
    n_classes: int,
    *,
    num_layers: int,
    hidden_size: int,
    activation: str,
    dropout: float,
    norm: str,
    block: str = "plain",
    expansion: int = 4,
    projection: torch.Tensor | None = None,
) -> nn.Sequential:
    """num_layers counts Linear layers: 1 is a linear classifier, 2 has one hidden layer.
    block=residual: num_layers - 2 residual blocks between the stem and the classifier, each
    hidden_size -> expansion x hidden_size -> hidden_size (two Linear layers), normalized first
    (norm, LayerNorm when none).
    projection (in_features, N): the fixed map in front of the first Linear layer (data.project)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    if projection is not None:
        layers.append(Projection(projection))
        width = projection.shape[1]
    if block == "residual":
        return nn.Sequential(
            *layers, *_residual(width, n_classes, num_layers, hidden_size, activation, dropout, norm, expansion)
        )
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


def _residual(
    width: int,
    n_classes: int,
    num_layers: int,
    hidden_size: int,
    activation: str,
    dropout: float,
    norm: str,
    expansion: int,
) -> list[nn.Module]:
    if num_layers < 2:
        return [nn.Linear(width, n_classes)]
    make_norm = NORMS[norm] or nn.LayerNorm
    layers: list[nn.Module] = [nn.Linear(width, hidden_size)]
    for _ in range(num_layers - 2):
        inner: list[nn.Module] = [
            make_norm(hidden_size),
            nn.Linear(hidden_size, expansion * hidden_size),
            ACTIVATIONS[activation](),
        ]
        if dropout > 0:
            inner.append(nn.Dropout(dropout))
        inner.append(nn.Linear(expansion * hidden_size, hidden_size))
        layers.append(Residual(nn.Sequential(*inner)))
    layers += [make_norm(hidden_size), ACTIVATIONS[activation](), nn.Linear(hidden_size, n_classes)]
    return layers
