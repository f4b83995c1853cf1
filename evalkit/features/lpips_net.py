"""LPIPS (Zhang et al. 2018, ``lpips`` package v0.1, alex / vgg / squeeze) as a per-image feature.

Why a feature: LPIPS(x, y) = Σ_l mean_hw Σ_c w_lc (n_l(x) - n_l(y))²_chw, where n_l are the
channel-unit-normalised backbone activations and w_lc ≥ 0 the package's linear heads. So with
φ_l(x) = sqrt(w_lc / (H_l W_l)) · n_l(x), LPIPS(x, y) = ||φ(x) - φ(y)||² exactly. The extractor runs
the backbone ONCE per image and returns φ (output ``lpips``); the metrics ``lpips_diversity`` (pairs
within a condition) and ``lpips_paired`` (sample i vs reference image i) are then pure distances,
instead of one backbone pass per pair. The cost is storage: φ has Σ_l C_l H_l W_l values per image
(alex: ~32 k at 64 px, ~0.6 M at 256 px); ``dtype="float16"`` halves it.

The backbone, the scaling layer, the heads and the normalisation are the lpips package's own modules.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from evalkit.errors import ConfigError, DependencyError, WeightsError
from evalkit.features.base import register_extractor
from evalkit.features.safe_load import load_state_dict, mismatch
from evalkit.features.weights import resolve_weights

NETS = {"alex": "lpips-alex-backbone", "vgg": "lpips-vgg-backbone", "squeeze": "lpips-squeeze-backbone"}


def load_backbone_file(model: torch.nn.Module, path: os.PathLike) -> None:
    """Copy a torchvision ``features.*`` state dict (AlexNet / VGG16 / SqueezeNet 1.1) into lpips' slices,
    which hold the same modules under their ``features`` index."""
    state = load_state_dict(path)
    feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    if not feats:
        raise WeightsError(f"{path} is not a torchvision backbone state dict (no 'features.*' keys)")
    for slice_name, block in model.net.named_children():
        if not slice_name.startswith("slice"):
            continue
        for idx, layer in block.named_children():
            wanted = layer.state_dict()
            if wanted:
                try:
                    layer.load_state_dict({p: feats[f"{idx}.{p}"] for p in wanted})
                except (KeyError, RuntimeError) as err:
                    raise mismatch(Path(path), "this LPIPS backbone (torchvision 'features.*')", err) from err


def load_heads(model: torch.nn.Module, net: str) -> None:
    """The v0.1 linear heads that ship in the lpips wheel, read as plain tensors (``lpips.LPIPS(pretrained=True)``
    would ``torch.load`` them with the library's default, which an environment variable can turn into unpickling)."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    model.load_state_dict(load_state_dict(path), strict=False)  # as lpips does: the heads only


class LpipsExtractor:
    outputs = ("lpips",)

    def __init__(
        self,
        net: str = "alex",
        *,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        random_seed: int | None = None,
        dtype: str = "float32",
        name: str | None = None,
    ) -> None:
        if net not in NETS:
            raise ConfigError(f"unknown LPIPS backbone {net!r}; expected one of: {', '.join(NETS)}")
        try:
            import lpips
        except ImportError as err:
            raise DependencyError("the lpips extractors need the lpips package: pip install lpips") from err
        self._normalize = lpips.normalize_tensor
        self.name = name or f"lpips-{net}"
        self.mode = "lpips-v0.1"
        self.device = torch.device(device)
        self.dtype = np.dtype(dtype)
        with torch.random.fork_rng(devices=[]):
            if random_seed is not None:
                torch.manual_seed(random_seed)
            # pnet_rand=True: build the backbone without torchvision's download; heads and backbone are loaded below.
            self.model = lpips.LPIPS(net=net, pnet_rand=True, pretrained=False, verbose=False)
        load_heads(self.model, net)
        if random_seed is not None and weights is None:
            self.weights_id = f"random:{random_seed}"
        else:
            resolved = resolve_weights(NETS[net], weights)
            load_backbone_file(self.model, resolved.path)
            self.weights_id = resolved.weights_id
        self.model = self.model.to(self.device).eval()
        heads = [lin.model[-1].weight.detach() for lin in self.model.lins]  # (1, C, 1, 1) each, ≥ 0
        if any(float(h.min()) < 0 for h in heads):
            raise ValueError("LPIPS heads with negative weights cannot be written as a feature distance")
        self._heads = [h[0].to(self.device) for h in heads]  # (C, 1, 1)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = images.to(self.device).float() / 127.5 - 1.0  # lpips.im2tensor: [0, 255] → [-1, 1]
        outs = self.model.net.forward(self.model.scaling_layer(x))
        parts = []
        for feat, w in zip(outs, self._heads):
            n = self._normalize(feat)
            parts.append((n * torch.sqrt(w / (n.shape[2] * n.shape[3]))).flatten(1))
        return {"lpips": torch.cat(parts, dim=1).cpu().numpy().astype(self.dtype, copy=False)}


def _factory(net: str):
    def build(
        *,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        random_seed: int | None = None,
        dtype: str = "float32",
    ) -> LpipsExtractor:
        return LpipsExtractor(net, device=device, weights=weights, random_seed=random_seed, dtype=dtype)

    return build


for _net in NETS:
    register_extractor(f"lpips-{_net}")(_factory(_net))
