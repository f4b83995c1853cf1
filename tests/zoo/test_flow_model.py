"""mnist-flow, the zoo's rectified-flow model: its training pair, its schedule, and what the shipped weights draw."""

from __future__ import annotations

import torch

from evalkit.zoo import NULL_CLASS, MnistNet, load_mnist_net, load_mnist_unet
from evalkit.zoo.models import FLOW_NAME, UNET_NAME, model_card
from evalkit.zoo.train_unet import _flow_pair


def test_flow_pair_is_the_straight_path_and_its_velocity():
    """x_σ = (1 − σ)·x₀ + σ·ε and the target dx_σ/dσ = ε − x₀: a finite difference along the same path agrees."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    xt, t, target = _flow_pair(x0, eps, torch.Generator().manual_seed(1))
    sigma = (t / 1000).view(-1, 1, 1, 1)
    assert torch.allclose(xt, (1 - sigma) * x0 + sigma * eps)
    assert ((t > 0) & (t < 1000)).all() and torch.equal(target, eps - x0)
    h = 1e-3
    assert torch.allclose(((1 - sigma - h) * x0 + (sigma + h) * eps - xt) / h, target, atol=1e-3)


def test_flow_schedule_is_flow_match_euler_and_the_weights_are_its_own():
    from diffusers import FlowMatchEulerDiscreteScheduler

    unet, cfg = load_mnist_unet(model=FLOW_NAME)
    assert cfg["_class_name"] == "FlowMatchEulerDiscreteScheduler" and cfg["shift"] == 1.0
    sched = FlowMatchEulerDiscreteScheduler.from_config(cfg)
    sched.set_timesteps(4)
    assert sched.timesteps[0] == 1000 and float(sched.sigmas[-1]) == 0.0  # from pure noise (σ = 1) to data
    eps_unet = load_mnist_unet(model=UNET_NAME)[0]
    assert not torch.equal(unet.state_dict()["conv_in.weight"], eps_unet.state_dict()["conv_in.weight"])
    entry = model_card()["models"][FLOW_NAME]
    assert entry["command"].startswith("evalkit zoo train mnist-flow") and "--init mnist-unet" in entry["command"]
    assert "flow" in entry["architecture"] and entry["final_loss"] < 0.5


@torch.no_grad()
def test_flow_model_draws_the_requested_digits_with_euler_steps():
    """16 guided Euler steps along the learned velocity (σ: 1 → 0): the shipped model draws the asked-for digits;
    the same network's random init does not (chance is 0.1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    net, labels = load_mnist_net(), torch.arange(50) % 10

    def accuracy(trained: bool) -> float:
        unet, cfg = load_mnist_unet(trained=trained, model=FLOW_NAME)
        sched = FlowMatchEulerDiscreteScheduler.from_config(cfg)
        sched.set_timesteps(16)
        x = torch.randn(50, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        both = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
        for t in sched.timesteps:
            v_c, v_u = unet(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
            x = sched.step(v_u + 3.0 * (v_c - v_u), t, x).prev_sample
        img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return float((net(MnistNet.preprocess(img))[1].argmax(1) == labels).float().mean())

    assert accuracy(True) >= 0.9
    assert accuracy(False) <= 0.3
