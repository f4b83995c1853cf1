"""The built-in domain extractor "mnist-net": penultimate features (64) and logits (10) of the small
MNIST classifier that evalkit trains (``evalkit.zoo``). Mode "native": the net's own preprocessing
(channel mean, /255, antialiased resize to 32 px when needed).

IS on a 10-class classifier is bounded by 10; FD/KID/PR read its 64-d features.
``weights_id`` is the sha256 of ``mnist_net.safetensors`` from the model card (the zoo verifies the
file against it on load); weights from another folder than the shipped one are marked ``custom:``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from evalkit.errors import WeightsError
from evalkit.features.base import register_extractor

NET_MODEL = "mnist-net"
NET_WEIGHTS_FILE = "mnist_net.safetensors"


def card_sha256(card: dict) -> str:
    """sha256 of the mnist-net weights file as the model card records it."""
    try:
        return str(card["models"][NET_MODEL]["files"][NET_WEIGHTS_FILE]["sha256"])
    except (KeyError, TypeError):
        files = card.get("models", {}).get(NET_MODEL, {}).get("files", {})
        shas = [m["sha256"] for n, m in sorted(files.items()) if n.endswith(".safetensors")]
        if not shas:
            raise WeightsError(f"the zoo model card has no sha256 for {NET_MODEL}'s weights") from None
        return str(shas[0])


class MnistNetExtractor:
    name = "mnist-net"
    mode = "native"
    outputs = ("features", "logits")
    resolution = 32

    def __init__(self, *, device: str | torch.device = "cpu", weights: str | Path | None = None) -> None:
        from evalkit import zoo

        self.device = torch.device(device)
        try:  # safetensors only (no pickle), each file's sha256 checked against the card first
            self.net = zoo.load_mnist_net(weights).to(self.device).eval()
            sha = card_sha256(zoo.model_card(weights))
        except WeightsError:
            raise
        except Exception as err:  # a card that is not JSON, a file that is not safetensors / not this network
            raise WeightsError(f"cannot load mnist-net weights from {weights}: {type(err).__name__}: {err}") from err
        shipped = card_sha256(zoo.model_card()) if weights is not None else sha
        self.weights_id = sha if sha == shipped else f"custom:{sha}"

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = self.net.preprocess(images.to(self.device))
        feats, logits = self.net(x)
        return {"features": feats.float().cpu().numpy(), "logits": logits.float().cpu().numpy()}


@register_extractor("mnist-net")
def build_mnist_net(*, device: str | torch.device = "cpu", weights: str | Path | None = None) -> MnistNetExtractor:
    """``weights``: a folder holding a zoo model card and the mnist-net files (default: the shipped ones)."""
    return MnistNetExtractor(device=device, weights=weights)
