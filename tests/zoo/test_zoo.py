"""The built-in zoo: data split, shipped weights + model card, loaders, and the training code."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.zoo import NULL_CLASS, MnistNet, ZooWeightsError, load_mnist_net, load_mnist_unet, model_card
from evalkit.zoo.data import mnist_split
from evalkit.zoo.models import WEIGHTS_DIR

UNET_FILE = "mnist_unet.safetensors"


def _rows(x: np.ndarray, y: np.ndarray) -> set[bytes]:
    return {img.tobytes() + bytes([int(lab)]) for img, lab in zip(x, y)}


# --- data -------------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete() -> None:
    s = mnist_split(0)
    assert s.train_x.shape == (4000, 32, 32) and s.heldout_x.shape == (1000, 32, 32)
    assert s.train_x.dtype == np.uint8 and s.train_y.dtype == np.int64
    assert set(np.unique(s.train_y)) == set(range(10)) == set(np.unique(s.heldout_y))
    train, held = _rows(s.train_x, s.train_y), _rows(s.heldout_x, s.heldout_y)
    assert len(train) == 4000 and len(held) == 1000 and not (train & held)  # the 5000 digits are unique
    # zero padding 28 -> 32, content in the middle
    assert s.train_x[:, :2].max() == 0 and s.train_x[:, -2:].max() == 0 and s.train_x[:, :, :2].max() == 0
    assert s.train_x.max() == 255

    from evalkit.zoo import data

    data.mnist_split.cache_clear()  # recompute from scratch, not from the cache
    again = mnist_split(0)
    assert np.array_equal(again.train_x, s.train_x) and np.array_equal(again.heldout_y, s.heldout_y)
    assert again.data_sha256 == s.data_sha256 and len(s.data_sha256) == 64
    other = mnist_split(1)
    assert other.data_sha256 == s.data_sha256  # same raw data, different permutation
    assert _rows(other.train_x, other.train_y) != train
    with pytest.raises(ValueError):
        s.train_x[0, 0, 0] = 1  # cached arrays are read-only


# --- shipped weights and the model card ----------------------------------------------------------------


def test_card_hashes_match_shipped_files_and_size_budget() -> None:
    card = model_card()
    assert set(card["models"]) == {"mnist-unet", "mnist-flow", "mnist-net"}
    total = 0
    for name, entry in card["models"].items():
        assert entry["data_sha256"] == mnist_split(entry["seed"]).data_sha256
        assert entry["command"].startswith("evalkit zoo train mnist")
        assert entry["steps"] > 0 and entry["wall_time_s"] > 0 and np.isfinite(entry["final_loss"])
        for fname, meta in entry["files"].items():
            path = WEIGHTS_DIR / fname
            assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"], fname
            assert path.stat().st_size == meta["bytes"]
            total += meta["bytes"]
    assert total <= 10 * 2**20
    assert sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir()) <= 10 * 2**20


def test_corrupted_or_missing_file_raises_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "w"
    shutil.copytree(WEIGHTS_DIR, d)
    expected = model_card(d)["models"]["mnist-unet"]["files"][UNET_FILE]["sha256"]
    data = bytearray((d / UNET_FILE).read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last weight value
    (d / UNET_FILE).write_bytes(bytes(data))
    with pytest.raises(ZooWeightsError) as err:
        load_mnist_unet(weights_dir=d)
    msg = str(err.value)
    assert UNET_FILE in msg and expected in msg and str(d / UNET_FILE) in msg
    (d / "mnist_net.safetensors").unlink()
    with pytest.raises(ZooWeightsError, match="mnist_net.safetensors.*missing"):
        load_mnist_net(weights_dir=d)
    with pytest.raises(ZooWeightsError, match="model card not found"):
        model_card(tmp_path / "nowhere")


# --- mnist-net -------------------------------------------------------------------------------------


def test_mnist_net_heldout_accuracy_and_outputs() -> None:
    s = mnist_split(0)
    net = load_mnist_net()
    x = torch.from_numpy(np.array(s.heldout_x)).unsqueeze(1).expand(-1, 3, -1, -1)  # grey -> RGB uint8
    with torch.no_grad():
        feats, logits = net(MnistNet.preprocess(x))
    assert feats.shape == (1000, 64) and logits.shape == (1000, 10) and feats.dtype == torch.float32
    acc = (logits.argmax(1).numpy() == s.heldout_y).mean()
    assert acc >= 0.97
    # one prediction is 1e-3 of 1000; 1.5e-3 so that a single flip on another CPU's float32 sums still passes
    assert acc == pytest.approx(model_card()["models"]["mnist-net"]["heldout_accuracy"], abs=1.5e-3)


def test_mnist_net_preprocess() -> None:
    img = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8)
    out = MnistNet.preprocess(img)
    assert out.shape == (2, 1, 32, 32) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    grey = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    assert torch.equal(MnistNet.preprocess(grey), torch.ones(1, 1, 32, 32))  # no resize at 32
    with pytest.raises(TypeError):
        MnistNet.preprocess(img.float())


# --- mnist-unet ------------------------------------------------------------------------------------


def test_unet_forward_config_and_untrained_init() -> None:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    unet, cfg = load_mnist_unet()
    assert not unet.training and unet.config.num_class_embeds == NULL_CLASS + 1
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        out = unet(x, torch.tensor([10, 500, 999]), class_labels=torch.tensor([0, 7, NULL_CLASS])).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert cfg["prediction_type"] == "epsilon" and cfg["num_train_timesteps"] == 1000
    for cls in (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler):
        assert cls.from_config(cfg).config.beta_schedule == cfg["beta_schedule"]

    state = torch.get_rng_state()
    raw1, cfg1 = load_mnist_unet(trained=False)
    raw2, _ = load_mnist_unet(trained=False)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert cfg1 == cfg
    trained_sd, raw_sd = unet.state_dict(), raw1.state_dict()
    assert trained_sd.keys() == raw_sd.keys()
    assert all(torch.equal(raw_sd[k], raw2.state_dict()[k]) for k in raw_sd)  # deterministic init
    assert not torch.equal(trained_sd["conv_in.weight"], raw_sd["conv_in.weight"])


@torch.no_grad()
def _guided_accuracy(unet: torch.nn.Module, cfg: dict, net: MnistNet, n: int = 40, steps: int = 10) -> float:
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(cfg)
    sched.set_timesteps(steps)
    labels = torch.arange(n) % 10
    x = torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    both = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
    for t in sched.timesteps:
        eps_c, eps_u = unet(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
        x = sched.step(eps_u + 3.0 * (eps_c - eps_u), t, x).prev_sample
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return float((net(MnistNet.preprocess(img))[1].argmax(1) == labels).float().mean())


def test_trained_unet_draws_the_requested_digits() -> None:
    """A short guided DDIM run: the trained model draws the asked-for digit, the untrained one does not."""
    net = load_mnist_net()
    assert _guided_accuracy(*load_mnist_unet(), net) >= 0.6
    assert _guided_accuracy(*load_mnist_unet(trained=False), net) <= 0.3  # chance is 0.1


def test_guided_ddim_does_not_degrade_with_more_steps() -> None:
    """Regression: with diffusers' default ``clip_sample=True`` DDIM clipped x0 but kept the unclipped
    epsilon, and at guidance 3 class accuracy fell with steps (0.98 at 4, 0.08 at 50). The shipped
    schedule turns clipping off; 50 steps must be at least as good as the issue's 90 % bar."""
    from diffusers import DDIMScheduler

    unet, cfg = load_mnist_unet()
    assert cfg["clip_sample"] is False and DDIMScheduler.from_config(cfg).config.clip_sample is False
    assert _guided_accuracy(unet, cfg, load_mnist_net(), n=40, steps=50) >= 0.9


def test_zoo_adapter_records_the_shipped_weight_hashes() -> None:
    from evalkit.generate.zoo_adapter import ZooMnistAdapter

    files = model_card()["models"]["mnist-unet"]["files"]
    assert ZooMnistAdapter().info()["weights_sha256"] == {name: meta["sha256"] for name, meta in files.items()}
    assert ZooMnistAdapter(weights="untrained").info()["weights_sha256"] == "random-init:seed0"


# --- training code -----------------------------------------------------------------------------------


def test_tiny_training_run_writes_a_valid_card(tmp_path: Path) -> None:
    from evalkit.zoo.train import train_mnist

    logs: list[str] = []
    card = train_mnist(
        tmp_path, models=("unet", "flow", "net"), steps=2, net_steps=2, batch_size=8, seed=3, log=logs.append
    )
    assert json.loads((tmp_path / "model_card.json").read_text()) == card == model_card(tmp_path)
    for name, entry in card["models"].items():
        assert entry["seed"] == 3 and entry["steps"] == 2 and entry["data_sha256"] == mnist_split(3).data_sha256
        assert "--seed 3" in entry["command"] and np.isfinite(entry["final_loss"])
        assert entry["batch_size"] == 8 and "--batch-size 8" in entry["command"]
        for fname, meta in entry["files"].items():
            assert hashlib.sha256((tmp_path / fname).read_bytes()).hexdigest() == meta["sha256"]
    assert 0.0 <= card["models"]["mnist-net"]["heldout_accuracy"] <= 1.0
    unet, cfg = load_mnist_unet(weights_dir=tmp_path)  # the loaders accept what training wrote
    assert cfg == load_mnist_unet(trained=False)[1]
    load_mnist_net(weights_dir=tmp_path)
    assert any("[unet] step 2/2" in line for line in logs) and any("[flow] step 2/2" in line for line in logs)
    flow, flow_cfg = load_mnist_unet(weights_dir=tmp_path, model="mnist-flow")
    assert flow_cfg["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert card["models"]["mnist-flow"]["command"].startswith(f"evalkit zoo train mnist-flow --out {tmp_path}")

    # training one model keeps the other's card entry
    card2 = train_mnist(tmp_path, models=("net",), net_steps=1, batch_size=8, seed=3, log=logs.append)
    assert card2["models"]["mnist-unet"] == card["models"]["mnist-unet"]
    assert card2["models"]["mnist-net"]["steps"] == 1


def test_cli_registration() -> None:
    from evalkit.zoo.commands import register, run_train_mnist

    parser = argparse.ArgumentParser(prog="evalkit")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["zoo", "train", "mnist", "--out", "x", "--steps", "5", "--seed", "2", "--model", "net"])
    assert args.func is run_train_mnist
    assert (args.out, args.steps, args.seed, args.model, args.device) == ("x", 5, 2, "net", "cpu")
    assert args.batch_size is None  # each model's own default batch size (64 UNet, 128 mnist-net)
    flow = parser.parse_args(["zoo", "train", "mnist-flow", "--steps", "7", "--init", "mnist-unet"])
    assert (flow.func, flow.model, flow.steps, flow.init) == (run_train_mnist, "flow", 7, "mnist-unet")
