"""The images themselves as a feature, for the paired pixel metrics (``psnr``, ``ssim``, ``ms_ssim``).

Output ``images``: the uint8 batch as float in [0, 1], ``(B, 3, H, W)`` (x / 255, nothing else: no resize, no
colour conversion). No network and no weights file: ``weights_id`` is ``"none"``. Storage is the image itself
(3·H·W values per image, float32 by default; ``dtype="float16"`` halves it and still rounds back to the same
uint8 values, at the cost of ~1e-4 absolute error in [0, 1]).
"""

from __future__ import annotations

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.features.base import register_extractor

WEIGHTS_ID = "none"


class PixelsExtractor:
    outputs = ("images",)

    def __init__(self, *, device: str | torch.device = "cpu", dtype: str = "float32", name: str = "pixels") -> None:
        if np.dtype(dtype).kind != "f":
            raise ConfigError(f"the pixels extractor stores floats in [0, 1]; dtype {dtype!r} is not a float type")
        self.name = name
        self.mode = "unit-float"  # x / 255, no resize
        self.weights_id = WEIGHTS_ID
        self.device = torch.device(device)
        self.dtype = np.dtype(dtype)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"the pixels extractor expects uint8 images (B, 3, H, W); got shape {tuple(images.shape)}")
        x = images.detach().cpu().to(torch.float32) / 255.0
        return {"images": x.numpy().astype(self.dtype, copy=False)}


@register_extractor("pixels")
def build(*, device: str | torch.device = "cpu", dtype: str = "float32") -> PixelsExtractor:
    return PixelsExtractor(device=device, dtype=dtype)
