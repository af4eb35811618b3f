import pytest
import torch
from torch import nn

from mlp_sweep.model import ACTIVATIONS, Projection, build


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


def test_a_projection_is_a_fixed_first_layer_saved_with_the_model():
    basis = torch.linalg.qr(torch.randn(3072, 40))[0]
    net = build(3072, 10, num_layers=2, hidden_size=16, activation="relu", dropout=0.0, norm="none", projection=basis)
    assert isinstance(net[1], Projection) and net[2].in_features == 40
    assert all(p.shape != basis.shape for p in net.parameters())  # not trained: a buffer
    x = torch.randn(5, 3, 32, 32)
    assert torch.allclose(net[1](x.flatten(1)), x.flatten(1) @ basis, atol=1e-5)
    again = build(
        3072,
        10,
        num_layers=2,
        hidden_size=16,
        activation="relu",
        dropout=0.0,
        norm="none",
        projection=torch.zeros(3072, 40),
    )
    again.load_state_dict(net.state_dict())  # model.pt carries the basis
    assert torch.equal(again(x), net(x))


def test_residual_blocks_sit_between_a_stem_and_the_classifier():
    from mlp_sweep.model import Residual

    net = mlp(num_layers=4, hidden_size=16, block="residual", expansion=3, activation="gelu")
    blocks = [m for m in net if isinstance(m, Residual)]
    assert len(blocks) == 2
    norm, expand, _, contract = blocks[0].inner
    assert isinstance(norm, nn.LayerNorm) and (expand.in_features, expand.out_features) == (16, 48)
    assert (contract.in_features, contract.out_features) == (48, 16)
    stem = 3072 * 16 + 16
    block = 2 * 16 + (16 * 48 + 48) + (48 * 16 + 16)
    assert sum(p.numel() for p in net.parameters()) == stem + 2 * block + 2 * 16 + 16 * 10 + 10
    x = torch.randn(4, 16)
    with torch.no_grad():
        contract.weight.zero_(), contract.bias.zero_()
    assert torch.equal(blocks[0](x), x)  # the skip: a block whose branch gives 0 passes x through
    assert net(torch.randn(5, 3, 32, 32)).shape == (5, 10)
