"""The zoo's two networks, their weight files and the model card that vouches for them.

- ``mnist-unet``: a small class-conditional epsilon-prediction diffusers ``UNet2DModel`` (no
  attention, so it is fast on a CPU). Class ``NULL_CLASS`` means "no class", which the model saw
  during training (label dropout), so classifier-free guidance works.
- ``mnist-flow``: the same UNet trained as a class-conditional rectified flow: it predicts the velocity
  ε − x₀ at σ·1000 (diffusers' FlowMatchEulerDiscreteScheduler convention).
- ``mnist-net``: a small CNN digit classifier whose 64-d penultimate features and 10 logits serve as
  a domain-appropriate extractor for FD / KID / IS / precision-recall on 32x32 digits.

Every weight file is listed in ``weights/model_card.json`` with its sha256; loading checks each
file first, so a stale or corrupted file fails loudly instead of silently changing scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.errors import WeightsError
from evalkit.hashing import sha256_file
from evalkit.zoo.schedule import FLOW_SCHEDULE as FLOW_SCHEDULE  # re-exported: their home is torch-free
from evalkit.zoo.schedule import NOISE_SCHEDULE as NOISE_SCHEDULE

NULL_CLASS = 10
NUM_CLASS_EMBEDS = 11  # digits 0-9 plus NULL_CLASS
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CARD_NAME = "model_card.json"

UNET_NAME = "mnist-unet"
FLOW_NAME = "mnist-flow"
NET_NAME = "mnist-net"
UNET_FILES = ("mnist_unet.safetensors", "mnist_unet.json")
FLOW_FILES = ("mnist_flow.safetensors", "mnist_flow.json")
NET_FILES = ("mnist_net.safetensors", "mnist_net.json")

# UNet2DModel keyword arguments. Three resolutions (32, 16, 8), one resnet per level, no attention
# anywhere (add_attention=False also removes it from the mid block): ~0.6M parameters.
UNET_ARCH: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "UpBlock2D"],
    "add_attention": False,
    "norm_num_groups": 8,
    "num_class_embeds": NUM_CLASS_EMBEDS,
}


# the zoo's diffusion models: name -> (weight files, the schedule they were trained on)
UNET_MODELS: dict[str, tuple[tuple[str, str], dict[str, Any]]] = {
    UNET_NAME: (UNET_FILES, NOISE_SCHEDULE),
    FLOW_NAME: (FLOW_FILES, FLOW_SCHEDULE),
}


class ZooWeightsError(WeightsError):
    """A zoo weight file is missing or does not match the model card."""


class MnistNet(nn.Module):
    """Small CNN digit classifier; ``forward`` returns (64-d penultimate features, 10 logits)."""

    feature_dim = 64
    num_classes = 10

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(1, 16),
            nn.MaxPool2d(2),  # 32 -> 16
            *block(16, 32),
            *block(32, 32),
            nn.MaxPool2d(2),  # 16 -> 8
            *block(32, 64),
            nn.MaxPool2d(2),  # 8 -> 4
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.3)
        self.fc = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float (B, 1, 32, 32) in [0, 1]: channel mean, /255, resize if needed."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"expected a uint8 (B, C, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        x = images.float().mean(dim=1, keepdim=True) / 255.0
        if tuple(x.shape[-2:]) != (32, 32):
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: float (B, 1, 32, 32) in [0, 1] (see ``preprocess``)."""
        h = self.body(x * 2.0 - 1.0)
        features = F.relu(self.fc(self.dropout(h)))
        return features, self.head(features)


def build_unet() -> torch.nn.Module:
    """A freshly initialised mnist-unet (uses the global torch RNG)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_ARCH)


def _dir(weights_dir: str | Path | None) -> Path:
    return Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR


def model_card(weights_dir: str | Path | None = None) -> dict:
    """The parsed model card (``weights/model_card.json`` unless ``weights_dir`` is given)."""
    path = _dir(weights_dir) / CARD_NAME
    if not path.is_file():
        raise ZooWeightsError(
            f"zoo model card not found at {path}; reinstall evalkit or create it with "
            f"`evalkit zoo train mnist --out {path.parent}`"
        )
    return json.loads(path.read_text())


def verified_files(model: str, weights_dir: str | Path | None = None) -> dict[str, Path]:
    """Paths of ``model``'s files after checking each one's sha256 against the model card."""
    d = _dir(weights_dir)
    card = model_card(d)
    entry = card.get("models", {}).get(model)
    if entry is None:
        raise ZooWeightsError(f"model card {d / CARD_NAME} has no entry for {model!r}")
    paths = {}
    for name, meta in entry["files"].items():
        path = d / name
        expected = meta["sha256"]
        if not path.is_file():
            raise ZooWeightsError(
                f"{model}: weight file {name} is missing; expected it at {path} with sha256 {expected} "
                f"(see {d / CARD_NAME})"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise ZooWeightsError(
                f"{model}: weight file {name} at {path} has sha256 {actual}, but the model card "
                f"{d / CARD_NAME} expects {expected}; the file is corrupted or from another training run"
            )
        paths[name] = path
    return paths


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def load_mnist_unet(
    trained: bool = True, weights_dir: str | Path | None = None, model: str = UNET_NAME
) -> tuple[torch.nn.Module, dict]:
    """(an MNIST UNet in eval mode, the noise-schedule config it was trained with); ``model`` is
    ``mnist-unet`` (ε-prediction) or ``mnist-flow`` (flow velocity).

    ``trained=False`` gives the same architecture at a deterministic random init (torch seed 0),
    without touching the caller's RNG state and without needing any weight file.
    """
    if model not in UNET_MODELS:
        raise ZooWeightsError(f"unknown zoo UNet {model!r}; expected one of {', '.join(UNET_MODELS)}")
    files, schedule = UNET_MODELS[model]
    if not trained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            unet = build_unet()
        return unet.eval(), dict(schedule)
    paths = verified_files(model, weights_dir)
    config = json.loads(paths[files[1]].read_text())
    from diffusers import UNet2DModel

    unet = UNet2DModel(**config["unet"])
    unet.load_state_dict(_load_state(paths[files[0]]), strict=True)
    return unet.eval(), dict(config["noise_schedule"])


def load_mnist_net(weights_dir: str | Path | None = None) -> MnistNet:
    """The trained mnist-net classifier / feature extractor in eval mode."""
    paths = verified_files(NET_NAME, weights_dir)
    net = MnistNet()
    net.load_state_dict(_load_state(paths[NET_FILES[0]]), strict=True)
    return net.eval()
