"""Training the zoo's diffusion UNets: mnist-unet (ε-prediction, DDPM) and mnist-flow (rectified flow), the same
network and loop with a different (input, target) pair, label dropout for classifier-free guidance, EMA weights."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.zoo.data import MnistSplit
from evalkit.zoo.models import (
    FLOW_FILES,
    FLOW_NAME,
    FLOW_SCHEDULE,
    NOISE_SCHEDULE,
    NULL_CLASS,
    UNET_ARCH,
    UNET_FILES,
    UNET_NAME,
    build_unet,
)
from evalkit.zoo.training import LOG_EVERY, Log, batches, lr_factor, write_model

UNET_LR = 2e-3
UNET_BATCH_SIZE = 64  # 8000 steps at 64 beat 5000 at 128 and take ~50 min on 2 CPU cores
LABEL_DROPOUT = 0.1
EMA_DECAY = 0.999
WARM_EMA_DECAY = 0.995  # a warm start trains for fewer steps: a shorter EMA window forgets the start weights
NUM_CLASSES_TXT = f"class embeddings for digits 0-9 + NULL_CLASS={NULL_CLASS} (label dropout {LABEL_DROPOUT})"


def _eps_pair(x0: torch.Tensor, noise: torch.Tensor, gen: torch.Generator, alphas: torch.Tensor):
    """DDPM (Ho et al. 2020): t ~ U{0..T-1}, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; the target is eps."""
    t = torch.randint(0, len(alphas), (len(x0),), generator=gen).to(x0.device)
    a = alphas[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, t, noise


def _flow_pair(x0: torch.Tensor, noise: torch.Tensor, gen: torch.Generator, alphas: torch.Tensor | None = None):
    """Rectified flow (Liu et al. 2023; SD3's logit-normal sigma, Esser et al. 2024): sigma = sigmoid(n), n ~ N(0, 1),
    x_sigma = (1 - sigma) x0 + sigma eps; the target is the velocity d x_sigma / d sigma = eps - x0. The network sees
    sigma * 1000, the timestep diffusers' FlowMatchEulerDiscreteScheduler passes it."""
    sigma = torch.sigmoid(torch.randn(len(x0), generator=gen)).to(x0.device)
    s = sigma.view(-1, 1, 1, 1)
    return (1 - s) * x0 + s * noise, sigma * FLOW_SCHEDULE["num_train_timesteps"], noise - x0


def train_unet(
    split: MnistSplit,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    device: str,
    log: Log,
    objective: str = "eps",
    init: dict | None = None,
    ema_decay: float = EMA_DECAY,
) -> tuple[dict, dict]:
    """Train the MNIST UNet (label dropout for CFG) to predict eps (mnist-unet) or the flow velocity (mnist-flow,
    ``objective='flow'``), from ``init`` weights when given (a warm start); return (EMA state dict, stats)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    unet = build_unet()
    if init is not None:
        unet.load_state_dict(init, strict=True)
    unet = unet.to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    alphas = DDPMScheduler.from_config(NOISE_SCHEDULE).alphas_cumprod.to(device)
    pair = _flow_pair if objective == "flow" else _eps_pair
    tag = "flow" if objective == "flow" else "unet"
    opt = torch.optim.AdamW(unet.parameters(), lr=UNET_LR, weight_decay=0.0)
    warmup = min(100, max(1, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup))

    x_all, y_all = _pixels(split)
    gen = torch.Generator().manual_seed(seed + 1)
    batch_indices = batches(len(x_all), batch_size, gen)
    losses: list[float] = []
    curve: list[list[float]] = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = next(batch_indices)
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(len(idx), generator=gen) < LABEL_DROPOUT] = NULL_CLASS
        noise = torch.randn(x0.shape, generator=gen)
        x0, y, noise = x0.to(device), y.to(device), noise.to(device)
        xt, t, target = pair(x0, noise, gen, alphas)
        loss = F.mse_loss(unet(xt, t, class_labels=y).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        _ema_update(ema, unet, min(ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item())
        if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
            recent = float(np.mean(losses[-LOG_EVERY:]))
            curve.append([step + 1, round(recent, 5)])
            el = time.perf_counter() - t0
            log(
                f"[{tag}] step {step + 1}/{steps} loss {recent:.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"{el / (step + 1):.3f} s/step, {el:.0f}s elapsed"
            )
    stats = _stats(steps, time.perf_counter() - t0, losses, curve, objective)
    return {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, stats


def _pixels(split: MnistSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """The train split as the UNets see it: (N, 1, 32, 32) in [-1, 1], and its labels."""
    x = torch.from_numpy(np.array(split.train_x)).float().div(127.5).sub(1.0).unsqueeze(1)
    return x, torch.from_numpy(np.array(split.train_y))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - decay)


def _stats(steps: int, wall: float, losses: list[float], curve: list[list[float]], objective: str) -> dict:
    return {
        "steps": steps,
        "wall_time_s": round(wall, 1),
        "s_per_step": round(wall / max(1, steps), 4),
        "final_loss": round(float(np.mean(losses[-100:])), 5),
        "final_loss_definition": f"mean training MSE({'eps - x0' if objective == 'flow' else 'eps'}) over the last "
        "100 steps (online weights)",
        "loss_curve": curve,
    }


def _warm_start(init_from: str | None, log: Log) -> dict | None:
    """The shipped, hash-checked weights of zoo model ``init_from`` to start from (None: a random init). mnist-flow
    starts from mnist-unet: the same network, whose features already know the digits, so the flow objective
    converges in a fraction of the steps on 2 CPU cores."""
    if init_from is None:
        return None
    from evalkit.zoo.models import load_mnist_unet

    log(f"[init] starting from the shipped {init_from} weights")
    return load_mnist_unet(model=init_from)[0].state_dict()


def train_unet_entry(
    split: MnistSplit,
    out: Path,
    *,
    steps: int,
    batch: int,
    seed: int,
    device: str,
    log: Log,
    objective: str = "eps",
    init_from: str | None = None,
) -> tuple[str, dict, list[str], str, dict]:
    """Train an MNIST UNet (``objective`` eps: mnist-unet, flow: mnist-flow) and write its EMA weights:
    (name, training stats, files, architecture, hyperparameters)."""
    flow = objective == "flow"
    init = _warm_start(init_from, log)
    ema_decay = WARM_EMA_DECAY if init is not None else EMA_DECAY
    state, stats = train_unet(
        split,
        steps=steps,
        batch_size=batch,
        seed=seed,
        device=device,
        log=log,
        objective=objective,
        init=init,
        ema_decay=ema_decay,
    )
    name, files = (FLOW_NAME, FLOW_FILES) if flow else (UNET_NAME, UNET_FILES)
    schedule = FLOW_SCHEDULE if flow else NOISE_SCHEDULE
    config = {
        "model": name,
        "class": "diffusers.UNet2DModel",
        "unet": UNET_ARCH,
        "noise_schedule": schedule,
        "null_class": NULL_CLASS,
        "pixel_range": [-1.0, 1.0],
        "weights": "EMA",
    }
    written = write_model(out, files, state, config, name)
    return name, stats, written, _architecture(state, flow), _hyperparameters(schedule, ema_decay, init_from, flow)


def _architecture(state: dict, flow: bool) -> str:
    n_params = sum(v.numel() for v in state.values())
    output = "flow-velocity (eps - x0) prediction, rectified flow" if flow else "epsilon-prediction"
    return (
        f"diffusers UNet2DModel, channels {UNET_ARCH['block_out_channels']}, layers_per_block "
        f"{UNET_ARCH['layers_per_block']}, no attention, {NUM_CLASSES_TXT}, {output}, {n_params} parameters"
    )


def _hyperparameters(schedule: dict, ema_decay: float, init_from: str | None, flow: bool) -> dict:
    from diffusers import __version__ as diffusers_version

    hyper = {
        "lr": UNET_LR,
        "optimizer": "AdamW(wd=0), warm-up + cosine to 10%, grad clip 1.0",
        "label_dropout": LABEL_DROPOUT,
        "ema_decay": ema_decay,
        "shipped_weights": "EMA",
        "init": f"{init_from} weights (shipped, sha256-checked): a warm start" if init_from else "random (torch seed)",
        "noise_schedule": schedule,
        "diffusers": diffusers_version,
    }
    if flow:
        hyper["sigma_sampling"] = "logit-normal: sigmoid(N(0, 1)) (Esser et al. 2024)"
    return hyper
