import pytest
import torch
from torch import nn

from mlp_sweep.model import ACTIVATIONS, build


def mlp(**kw):
    args = dict(num_layers=3, hidden_size=16, activation="relu", dropout=0.0, norm="none") | kw
    return build(3072, 10, **args)


@pytest.mark.parametrize("num_layers", [1, 2, 4])
def test_num_layers_counts_linear_layers(num_layers):
    net = mlp(num_layers=num_layers)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert len(linears) == num_layers
    assert linears[0].in_features == 3072 and linears[-1].out_features == 10


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_forward_shapes_and_finite(activation, norm):
    net = mlp(activation=activation, norm=norm, dropout=0.2)
    out = net(torch.randn(5, 3, 32, 32))
    assert out.shape == (5, 10) and torch.isfinite(out).all()
    assert any(isinstance(m, ACTIVATIONS[activation]) for m in net)


def test_course_architecture_parameter_count():
    net = build(3072, 10, num_layers=2, hidden_size=200, activation="leaky_relu", dropout=0.0, norm="none")
    assert sum(p.numel() for p in net.parameters()) == 3072 * 200 + 200 + 200 * 10 + 10


def test_misspelled_key_fails_loudly():
    with pytest.raises(TypeError):
        build(64, 10, num_layers=2, hidden_size=8, activation="relu", dropout=0.0, norm="none", widht=3)


def test_the_checks_allow_exactly_the_models_names():
    from mlp_sweep import checks, model

    assert tuple(model.ACTIVATIONS) == checks.ACTIVATIONS and tuple(model.NORMS) == checks.NORMS
