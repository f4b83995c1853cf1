"""DINOv2 ViT-L/14 and ViT-B/14 representations (``features``) as dgm-eval computes them for FD_DINOv2
(Stein et al. 2023, "Exposing flaws of generative model evaluation metrics"; layer6ai-labs/dgm-eval,
``dgm_eval/models/dinov2.py``). Every distribution metric (fd, kid, pr, fd_inf, vendi) reads ``features``.

The protocol, step by step (dgm-eval's choice → what evalkit runs):

1. Images are 8-bit RGB (``Image.open(path).convert("RGB")``): evalkit's uint8 ``(B, 3, H, W)`` batches.
2. ``transforms.Resize((224, 224), BICUBIC)`` on the PIL image: both sides to 224 px, aspect ratio not kept, no
   centre crop. On a PIL image that is Pillow's ``Image.resize``: bicubic (a = -0.5) whose support widens with the
   downscale factor (antialiased), in 8-bit fixed point, a horizontal pass rounded to uint8, then a vertical pass.
   :func:`~evalkit.features.pil_resize.pil_bicubic_resize` runs that arithmetic on tensors (Pillow's coefficients in
   its 22-bit fixed point, rounding and clipping after each pass, as exact integer float64 matrix products) and gives
   the same pixels as Pillow ≤ 12.1, which dgm-eval's published numbers were computed with. Later Pillows run the
   vertical pass first in some cases, moving pixels by a few levels there: 12.2 for images over 100× taller than
   wide, 13.0 whenever the height shrinks by more than twice the pixels the width does (e.g. 400×256 (H×W) → 224×224;
   never for square images). evalkit keeps the horizontal-first order.
3. ``ToTensor`` (÷255 in float32) and ``Normalize`` with the ImageNet mean (0.485, 0.456, 0.406) and std
   (0.229, 0.224, 0.225), in float32, in that order.
4. ``torch.hub.load("facebookresearch/dinov2", "dinov2_vitl14")`` (``--arch vitb14``: B/14) in float32,
   eval mode. The feature is ``model(x)``: the CLS token after the final LayerNorm (``x_norm_clstoken``; the
   hub model's head is the identity), 1024-d (L/14) or 768-d (B/14), not L2-normalised.
5. The checkpoints' position embedding is for 518 px (37×37 patches). At 224 px (16×16) DINOv2 interpolates
   it on every forward: bicubic ``F.interpolate`` with ``scale_factor=(16 + 0.1) / 37`` (DINO's "+0.1"
   offset), ``align_corners=False``, no antialias, in float32. :func:`dinov2_pos_embed` computes that same
   embedding once at load time, and the network is timm's ``vit_large_patch14_dinov2`` /
   ``vit_base_patch14_dinov2`` built for 224 px with it. (timm's own resampling and transformers'
   ``Dinov2Model`` resize to ``size=(16, 16)`` without the offset: different features.)

Weights: the original checkpoints torch hub downloads (``dinov2_vitl14_pretrain.pth``,
``dinov2_vitb14_pretrain.pth``; registry entries in :mod:`evalkit.features.weights`), read without unpickling
(:func:`~evalkit.features.safe_load.load_state_dict`) and converted to timm's layout by timm's own converter
(``_convert_dinov2``); a timm-layout DINOv2 file loads too. Meta publishes no sha256: a file found in a search
folder is taken as the standard file (as torch hub does), an explicit ``weights=<file>`` is labelled
``custom:<sha256>``. ``pretrained=False`` builds random weights (``random:<seed>``, layer scale 1.0 as the
hub's ``pretrained=False``); ``embed_dim``/``depth``/``num_heads`` shrink the network for tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from evalkit.errors import WeightsError
from evalkit.features.hub_vit import HubVitExtractor, VitSpec, register_hub_vit
from evalkit.features.pil_resize import pil_bicubic_resize

# extractor name → (timm architecture, weights registry entry)
NETS = {
    "dinov2-vit-l14": ("vit_large_patch14_dinov2", "dinov2-vitl14-pretrain"),
    "dinov2-vit-b14": ("vit_base_patch14_dinov2", "dinov2-vitb14-pretrain"),
}
WEIGHTS_ENTRY = {name: entry for name, (_, entry) in NETS.items()}
POS_OFFSET = 0.1  # DINOv2's interpolate_offset
# -- the position embedding ---------------------------------------------------------------------------


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: int, offset: float = POS_OFFSET) -> torch.Tensor:
    """DINOv2's ``interpolate_pos_encoding`` for a ``grid``×``grid`` patch input: ``(1, 1 + M², D)`` →
    ``(1, 1 + grid², D)``, bicubic with ``scale_factor=(grid + offset) / M``, no antialias, in float32."""
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise WeightsError(f"DINOv2 position embedding of {n} patches is not a square grid")
    if m == grid:
        return pos_embed
    pos = pos_embed.float()
    patch = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    scale = float(grid + offset) / m
    patch = F.interpolate(patch, scale_factor=(scale, scale), mode="bicubic", align_corners=False, antialias=False)
    if tuple(patch.shape[-2:]) != (grid, grid):
        raise WeightsError(f"DINOv2 position embedding interpolated to {tuple(patch.shape[-2:])}, not {grid}²")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat((pos[:, :1], patch), dim=1).to(pos_embed.dtype)


# -- the network and its weights ----------------------------------------------------------------------


def convert_checkpoint(state: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An original DINOv2 (torch hub) or timm-layout state dict → ``net``'s: timm's ``_convert_dinov2`` for the
    names, then the position embedding interpolated to ``net``'s grid as DINOv2 does (:func:`dinov2_pos_embed`)."""
    from timm.models.vision_transformer import _convert_dinov2

    out = _convert_dinov2(dict(state), net) if "mask_token" in state else dict(state)
    if "pos_embed" in out:
        out["pos_embed"] = dinov2_pos_embed(out["pos_embed"], net.patch_embed.grid_size[0])
    return out


SPECS = {
    name: VitSpec(
        name,
        arch,
        entry,
        resize=pil_bicubic_resize,
        convert=convert_checkpoint,
        mode="dgm-eval",  # PIL bicubic to 224×224 (uint8), ImageNet normalisation, CLS after the final norm
        weights_text="DINOv2 weights (torch hub or timm layout)",
        timm_kwargs={"init_values": 1.0},  # layer scale, as the hub's pretrained=False
    )
    for name, (arch, entry) in NETS.items()
}
Dinov2Extractor = HubVitExtractor
build_dinov2_vit_l14 = register_hub_vit(SPECS["dinov2-vit-l14"], "DINOv2 ViT-L/14 (1024-d)", __name__)
build_dinov2_vit_b14 = register_hub_vit(SPECS["dinov2-vit-b14"], "DINOv2 ViT-B/14 (768-d)", __name__)
