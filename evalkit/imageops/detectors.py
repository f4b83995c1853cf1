"""Control detectors: what turns a source image into a task's control input, and a generated image into what
``control_fidelity`` compares with that control. Each takes and returns uint8 ``(N, 3, H, W)``, image by image
(so the result never depends on the batch split):

- ``canny`` (edges): ControlNet's annotator exactly (lllyasviel/ControlNet ``annotator/canny``):
  ``cv2.Canny(rgb_hwc_uint8, low, high)`` on the RGB image (OpenCV takes the strongest channel's gradient),
  values 0/255, replicated to 3 channels as ControlNet's ``HWC3`` does.
- ``lowres`` (image): the low-resolution input of a super-resolution task: Pillow ``resize`` by 1/``factor`` with
  its ``filter`` (antialiased, as Pillow always is when it shrinks; SD upscaler data pipelines use Pillow).
- ``gray`` (image): Pillow ``convert("L")`` (ITU-R 601-2 luma, L = R·299/1000 + G·587/1000 + B·114/1000, rounded
  as Pillow does), replicated to 3 channels.

A spec is ``{"detector": name, **options}`` (suite ``conditions.control``). OpenCV is imported only by ``canny``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from evalkit.errors import ConfigError, DependencyError
from evalkit.imageops.specs import check_named_spec


@dataclass(frozen=True)
class Detector:
    name: str
    kind: str  # "edges" (a binary map: F1) or "image" (a picture: PSNR)
    options: dict[str, str]  # option → meaning, with "(default X)"
    fn: Callable[..., np.ndarray]  # fn(images uint8 (N, 3, H, W), **options) -> uint8 (N, 3, h, w)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise DependencyError(
            f"the canny detector needs OpenCV: pip install 'evalkit[metrics]' (or opencv-python-headless); {e}"
        ) from e
    return cv2


def _hwc(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] != 3 or x.dtype != np.uint8:
        raise ConfigError(f"detectors take uint8 RGB images (N, 3, H, W); got {x.dtype} of shape {x.shape}")
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _three(maps: list[np.ndarray], n: int, shape: tuple[int, ...]) -> np.ndarray:
    """(N, h, w) single-channel maps → uint8 (N, 3, h, w) (ControlNet's HWC3 replication)."""
    out = np.stack(maps) if maps else np.zeros((n, *shape), dtype=np.uint8)
    return np.repeat(out[:, None], 3, axis=1).astype(np.uint8, copy=False)


def canny(images: np.ndarray, low: float = 100, high: float = 200) -> np.ndarray:
    cv2 = _cv2()
    x = _hwc(images)
    return _three([cv2.Canny(im, low, high) for im in x], len(x), x.shape[1:3])


_FILTERS = ("bicubic", "box", "bilinear")


def lowres(images: np.ndarray, factor: int = 2, filter: str = "bicubic") -> np.ndarray:
    from PIL import Image

    x = _hwc(images)
    h, w = x.shape[1:3]
    if h % factor or w % factor:
        raise ConfigError(
            f"detector lowres: factor {factor} must divide the image height and width; got {h}×{w} "
            f"(use a factor dividing both, or source images of a size divisible by {factor})"
        )
    resample = {"bicubic": Image.BICUBIC, "box": Image.BOX, "bilinear": Image.BILINEAR}[filter]
    small = [np.asarray(Image.fromarray(im).resize((w // factor, h // factor), resample=resample)) for im in x]
    out = np.stack(small) if small else np.zeros((0, h // factor, w // factor, 3), dtype=np.uint8)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def gray(images: np.ndarray) -> np.ndarray:
    from PIL import Image

    x = _hwc(images)
    return _three([np.asarray(Image.fromarray(im).convert("L")) for im in x], len(x), x.shape[1:3])


DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            "canny",
            "edges",
            {"low": "lower hysteresis threshold (default 100)", "high": "upper hysteresis threshold (default 200)"},
            canny,
        ),
        Detector(
            "lowres",
            "image",
            {
                "factor": "downsampling factor, an integer ≥ 2 dividing the image sides (default 2)",
                "filter": "Pillow resize filter: bicubic, box or bilinear (default bicubic)",
            },
            lowres,
        ),
        Detector("gray", "image", {}, gray),
    )
}


def _option_problem(key: str, x: Any) -> str | None:
    if key in ("low", "high"):
        ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
        return None if ok else "expected a number ≥ 0"
    if key == "factor":
        return None if isinstance(x, int) and not isinstance(x, bool) and x >= 2 else "expected an integer ≥ 2"
    if key == "filter":
        return None if x in _FILTERS else f"expected one of {', '.join(_FILTERS)}"
    return None


def check_detector_spec(spec: Any, field: str = "conditions.control") -> list[str]:
    """Every problem of ``{"detector": name, **options}`` as a line naming the field; [] when fine. Never raises."""
    known = {n: d.options for n, d in DETECTORS.items()}
    problems, name = check_named_spec(spec, field, "detector", known, _option_problem, "{detector: canny}", "detector")
    if name is None:
        return problems
    low, high = spec.get("low", 100), spec.get("high", 200)
    if name == "canny" and not problems and low > high:
        problems.append(f"{field}.low: must not exceed high ({high!r}); got {low!r}")
    return problems


def get_detector(spec: dict[str, Any]) -> Detector:
    """The detector a valid spec names; a :class:`ConfigError` listing every problem otherwise."""
    problems = check_detector_spec(spec, "control")
    if problems:
        raise ConfigError("; ".join(problems))
    return DETECTORS[spec["detector"]]


def detect(spec: dict[str, Any], images: np.ndarray) -> np.ndarray:
    """Apply ``spec``'s detector with its options to uint8 ``(N, 3, H, W)`` images, image by image."""
    d = get_detector(spec)
    return d.fn(images, **{k: v for k, v in spec.items() if k != "detector"})
