"""How evalkit reads one image file into pixels: the one decoder for reference sets, `evalkit score`, the images and
http adapters (it sits below every stage, so each of them may import it).

The rules (:data:`DECODING`, recorded in every run that reads images from files):

- EXIF orientation is applied (PIL ``ImageOps.exif_transpose``): a photo stored sideways with an Orientation tag
  is scored as it is shown. clean-fid, pytorch-fid and torch-fidelity ignore the tag; images without one (almost
  every generated image) decode identically.
- colour: PIL ``convert("RGB")``, as clean-fid, pytorch-fid and torch-fidelity do, so numbers agree with theirs:
  grayscale (L, 1) repeated into three channels, palette (P) looked up, CMYK by PIL's conversion; **alpha is
  dropped, not composited** (RGBA, LA, P with transparency): a transparent pixel counts as the colour stored
  under it.
- 16-bit (I;16, I;16L, I;16B, and I holding 0..65535): the high byte, ``v >> 8`` (⌊v / 256⌋), the reduction
  Pillow itself applies to 16-bit RGB PNGs (the libraries' ``convert("RGB")`` would clip every value above 255
  to white). Float images (F) are refused as undecodable.
- sizes are kept: a batch never mixes sizes, each extractor resizes per its mode (clean-fid's PIL bicubic,
  the legacy modes' resize inside the network, open_clip's own transform), nothing is cropped on reading.

Image files are those ending in :data:`IMAGE_EXTENSIONS` (any case; clean-fid's list less ``.npy``).
"""

from __future__ import annotations

import io

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")
DECODING = {
    "orientation": "EXIF orientation applied (PIL ImageOps.exif_transpose)",
    "colour": "PIL convert('RGB') as clean-fid, pytorch-fid and torch-fidelity: grayscale repeated, palette "
    "looked up; alpha (RGBA, LA, P with transparency) dropped, not composited",
    "16-bit": "I;16 / I;16L / I;16B / I: high byte (v >> 8); float images (F) refused",
    "sizes": "kept as stored: batches never mix sizes, each extractor resizes per its mode; nothing cropped",
}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def decode_rgb(data: bytes) -> np.ndarray:
    """uint8 (H, W, 3) pixels of one image file by the rules of :data:`DECODING`."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im) or im
        if im.mode in _SIXTEEN_BIT:
            v = np.asarray(im, dtype=np.int64)
            if v.min() < 0 or v.max() > 65535:
                raise ValueError(f"mode {im.mode} image with values outside 0..65535 (not a 16-bit image)")
            return np.ascontiguousarray(np.repeat((v >> 8).astype(np.uint8)[..., None], 3, axis=-1))
        if im.mode == "F":
            raise ValueError("floating-point image (mode F): no defined mapping to 8-bit pixels")
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def verify(data: bytes) -> None:
    """Header and chunk check only (PIL ``verify``: cheap, no pixel decoding)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.verify()
