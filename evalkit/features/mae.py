"""MAE ViT-L/16 representations (``features``) as dgm-eval computes them for FD_MAE (Stein et al. 2023, "Exposing
flaws of generative model evaluation metrics"; layer6ai-labs/dgm-eval, ``dgm_eval/models/mae.py``, encoder ``mae``).
The network is He et al. 2022's MAE-pretrained encoder. Every distribution metric (fd, kid, pr, fd_inf, vendi)
reads ``features``.

The protocol, step by step (dgm-eval's choice → what evalkit runs):

1. Images are 8-bit RGB (``Image.open(path).convert("RGB")``): evalkit's uint8 ``(B, 3, H, W)`` batches.
2. Resize: dgm-eval's MAE transform has two branches. The default one (no ``--clean_resize``) calls
   ``TF.resize(image, 224, interpolation=InterpolationMode.BICUBIC)`` with ``TF = torchvision.transforms``, which has
   no ``resize`` (``AttributeError`` on the first image; ``InterpolationMode`` is not imported either, and a short
   side of 224 would keep the aspect ratio, which the 224 px network rejects for non-square images). The branch that
   runs is ``--clean_resize``: dgm-eval's ``resizer.pil_resize(image, (224, 224))``, each channel as a 32-bit float
   (``"F"``) Pillow image resized to 224×224 (both sides, aspect ratio not kept, no crop) with ``BICUBIC``, then
   ``clip(0, 255)``. Pillow's float resize uses its bicubic weights (a = -0.5, support widened with the downscale
   factor: antialiased) in double precision without rounding to 8 bits: a horizontal pass stored as float32, then a
   vertical pass stored as float32. :func:`~evalkit.features.pil_resize.pil_float_bicubic_resize` runs that on
   tensors with Pillow's weights (:func:`~evalkit.features.pil_resize.pil_bicubic_weights`) in float64 and the
   float32 stores; sums in another order than Pillow's move a value by at most one float32 step. As for DINOv2,
   evalkit keeps Pillow ≤ 12.1's horizontal-first order, which later Pillows change for images whose height shrinks
   much more than their width (see :mod:`evalkit.features.dinov2`).
3. ``to_tensor(x) / 255`` (float32, ``to_tensor`` does not scale float arrays) and ``Normalize`` with the
   ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), in float32.
4. The network: dgm-eval's ``vit_large_patch16`` (timm's ``VisionTransformer``: patch 16, width 1024, 24 blocks,
   16 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6, 224 px) with Meta's ``mae_pretrain_vit_large.pth``,
   float32, eval mode. The feature is ``forward_features`` with ``global_pool=False``: the CLS token after the
   final LayerNorm, 1024-d, not L2-normalised (not the mean of the patch tokens, which is MAE's fine-tuning
   choice). evalkit builds timm's ``vit_large_patch16_224`` (the same architecture; timm's
   ``vit_large_patch16_224.mae`` names the same file) and takes token 0 of its ``forward_features``.

Weights: the checkpoint dgm-eval downloads with ``load_state_dict_from_url`` (torch hub's checkpoint folder),
``https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth``: ``{"model": state dict}`` in timm's
layout, 14×14 position grid (dgm-eval's ``interpolate_pos_embed`` leaves it as it is). It is read without
unpickling (:func:`~evalkit.features.safe_load.load_state_dict`) and passed through timm's own
``checkpoint_filter_fn``; MAE decoder entries (``decoder_*``, ``mask_token``), which dgm-eval's
``strict=False`` load ignores, are dropped, and the rest must load strictly. Meta publishes no sha256: a file
found in a search folder is taken as the standard file (as torch hub does), an explicit ``weights=<file>`` is
labelled ``custom:<sha256>``. ``pretrained=False`` builds timm's random initialisation (``random:<seed>``);
``embed_dim``/``depth``/``num_heads`` shrink the network for tests.
"""

from __future__ import annotations

import torch

from evalkit.features.hub_vit import HubVitExtractor, VitSpec, register_hub_vit
from evalkit.features.pil_resize import pil_float_bicubic_resize

NAME = "mae-vit-l16"
ARCH = "vit_large_patch16_224"  # timm; dgm-eval's vit_large_patch16 is this architecture
WEIGHTS_ENTRY = "mae-vitl16-pretrain"
_DECODER = ("decoder_", "mask_token")  # MAE's pretraining decoder: not part of the encoder dgm-eval runs


def convert_checkpoint(state: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Meta's MAE checkpoint (or a timm-layout file) → ``net``'s state dict: the decoder dropped, then timm's
    ``checkpoint_filter_fn`` (which also unwraps ``model``)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = {k: v for k, v in state.items() if not k.startswith(_DECODER)}
    return checkpoint_filter_fn(state, net)


SPEC = VitSpec(
    NAME,
    ARCH,
    WEIGHTS_ENTRY,
    resize=pil_float_bicubic_resize,
    convert=convert_checkpoint,
    mode="dgm-eval",  # --clean_resize: Pillow float bicubic to 224×224, ImageNet normalisation, CLS after the norm
    weights_text="MAE ViT-L/16 encoder weights",
    unwrap=("model", "state_dict"),
)
MaeExtractor = HubVitExtractor
build_mae_vit_l16 = register_hub_vit(SPEC, "MAE ViT-L/16 (1024-d)", __name__)
