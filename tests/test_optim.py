import pytest
import torch

from mlp_sweep.optim import Lion


def test_lion_moves_each_weight_by_lr_in_the_sign_of_the_blended_gradient():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    opt = Lion([w], lr=0.1, betas=(0.9, 0.99), weight_decay=0.0)
    w.grad = torch.tensor([2.0, -1e-6, -3.0, 0.0])
    opt.step()  # m = 0: the update is sign(g)
    assert torch.allclose(w.detach(), torch.tensor([0.9, -2.0 + 0.1, 3.1, 0.5]))
    m = opt.state[w]["exp_avg"]
    assert torch.allclose(m, 0.01 * torch.tensor([2.0, -1e-6, -3.0, 0.0]))
    w.grad = torch.tensor([-0.001, 0.0, 1.0, 1.0])
    before = w.detach().clone()
    opt.step()  # b1 m + (1 - b1) g: the momentum outweighs a small gradient of the other sign
    blend = 0.9 * 0.01 * torch.tensor([2.0, -1e-6, -3.0, 0.0]) + 0.1 * torch.tensor([-0.001, 0.0, 1.0, 1.0])
    assert torch.allclose(w.detach(), before - 0.1 * blend.sign())


def test_lion_decays_the_weights_by_lr_times_weight_decay_and_follows_a_schedule():
    w = torch.nn.Parameter(torch.full((3,), 2.0))
    opt = Lion([w], lr=0.01, weight_decay=5.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    w.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((3,), 2.0 * (1 - 0.005 * 5.0)))
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)


def test_lion_minimizes_a_quadratic_and_resumes_from_its_state():
    torch.manual_seed(0)
    target = torch.randn(20)
    w = torch.nn.Parameter(torch.zeros(20))
    opt = Lion([w], lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
    assert (w.detach() - target).abs().max() < 0.05
    again = Lion([torch.nn.Parameter(w.detach().clone())], lr=0.02)
    again.load_state_dict(opt.state_dict())
    assert torch.equal(next(iter(again.state.values()))["exp_avg"], opt.state[w]["exp_avg"])


@pytest.mark.parametrize("kw", [{"lr": 0.0}, {"betas": (1.0, 0.9)}, {"weight_decay": -1.0}])
def test_lion_refuses_bad_settings(kw):
    with pytest.raises(ValueError, match="Lion: "):
        Lion([torch.nn.Parameter(torch.zeros(1))], **kw)
