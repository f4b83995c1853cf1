"""The image contract between adapters and the harness: validate a batch, convert it to uint8 once."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from evalkit.errors import RunError


class ImageContractError(RunError):
    """An adapter yielded images that break the contract (shape, dtype, range, NaN): the cell fails."""


def check_images(images: torch.Tensor, cell_id: str, indices: np.ndarray) -> torch.Tensor:
    """Validate one batch and return it as uint8 (B, 3, H, W); floats in [0, 1] are rounded once."""
    where = f"cell {cell_id}, samples {int(indices[0])}..{int(indices[-1])}"
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ImageContractError(f"{where}: expected images of shape (B, 3, H, W); got {shape}")
    if images.shape[0] != len(indices):
        raise ImageContractError(f"{where}: {images.shape[0]} images for {len(indices)} sample indices")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ImageContractError(f"{where}: expected uint8 or float images; got {images.dtype}")
    bad = ~torch.isfinite(images).flatten(1).all(1)
    if bad.any():
        raise ImageContractError(f"{where}: NaN/Inf in samples {indices[bad.cpu().numpy()].tolist()}")
    out_of_range = ((images < 0) | (images > 1)).flatten(1).any(1)
    if out_of_range.any():
        raise ImageContractError(
            f"{where}: float images must lie in [0, 1]; samples {indices[out_of_range.cpu().numpy()].tolist()} do not"
        )
    return (images * 255).round().to(torch.uint8)


def grid_png(images: np.ndarray, nrow: int = 8) -> bytes:
    grid = make_grid(torch.from_numpy(images), nrow=nrow, padding=2, pad_value=64)
    buf = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
