"""Optional heads on ``clip-vit-l14``'s image embeddings, computed in the same forward (no second CLIP pass).

``aesthetic``: the LAION improved aesthetic predictor v2 (Schuhmann 2022, christophschuhmann/improved-aesthetic-
predictor, file ``sac+logos+ava1-l14-linearMSE.pth``), as its ``simple_inference.py`` runs it: the OpenAI CLIP
ViT-L/14 projected image embedding, L2-normalised (a zero vector left as it is), through an MLP of five linear
layers with no activations (Linear 768→1024, Dropout 0.2, 1024→128, Dropout 0.2, 128→64, Dropout 0.1, 64→16,
16→1; dropout is inactive in eval mode). Output ``aesthetic``: one score per image, (B,), roughly 1-10.

The reference runs CLIP in float16 on a GPU (``clip.load`` on CUDA); evalkit runs it in float32, so scores differ
from the reference's GPU numbers by float16 rounding of the embedding, not by method.

The head's file has no published hash (registry entry ``laion-aesthetic-v2``, ``sha256=None``): any file of that
name is accepted if it loads as plain tensors in this layout. Random CLIP weights (tests) get a random head,
seeded, ``random:<seed>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.features.safe_load import load_state_dict, mismatch
from evalkit.features.weights import resolve_weights

AESTHETIC_ENTRY = "laion-aesthetic-v2"
AESTHETIC_DIM = 768  # CLIP ViT-L/14's projected embedding
HEADS = ("aesthetic",)  # the heads clip-vit-l14 computes on request


class AestheticMLP(torch.nn.Module):
    """The predictor's MLP, with the parameter names of its state dict (``layers.0.weight`` ... ``layers.7.bias``)."""

    def __init__(self, input_size: int = AESTHETIC_DIM) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(input_size, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def check_heads(extractor: str, heads: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``heads`` as a tuple, or a :class:`ConfigError` naming an unknown one and the known heads."""
    heads = tuple(heads)
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise ConfigError(
            f"extractor {extractor!r} has no head {', '.join(map(repr, unknown))}; known heads: {', '.join(HEADS)}"
        )
    return heads


def load_aesthetic(
    *, random_seed: int | None = None, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> tuple[AestheticMLP, str]:
    """(the MLP in eval mode, its weights id). ``random_seed``: random weights from that seed (``random:<seed>``);
    otherwise the registered file (``weights``, an explicit path, else found as :func:`resolve_weights` finds it)."""
    if random_seed is not None and weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_seed)
            mlp = AestheticMLP()
        return mlp.to(device).eval(), f"random:{random_seed}"
    resolved = resolve_weights(AESTHETIC_ENTRY, weights)
    mlp = AestheticMLP()
    try:
        mlp.load_state_dict(load_state_dict(resolved.path))
    except RuntimeError as err:
        raise mismatch(Path(resolved.path), "the LAION aesthetic predictor MLP (layers.0 ... layers.7)", err) from err
    return mlp.to(device).eval(), resolved.weights_id


def normalized(embeds: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation as the reference's ``normalized`` (numpy, a zero norm taken as 1)."""
    l2 = np.atleast_1d(np.linalg.norm(embeds, 2, -1))
    l2[l2 == 0] = 1
    return embeds / np.expand_dims(l2, -1)


@torch.inference_mode()
def aesthetic_scores(mlp: AestheticMLP, image_embeds: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """(B,) scores of the (B, 768) float32 image embeddings."""
    x = np.asarray(image_embeds, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != AESTHETIC_DIM:
        raise ConfigError(
            f"the aesthetic head takes {AESTHETIC_DIM}-d CLIP ViT-L/14 image embeddings; got shape {x.shape}"
        )
    out = mlp(torch.from_numpy(normalized(x)).to(device=device, dtype=torch.float32))
    return out.reshape(-1).float().cpu().numpy()
