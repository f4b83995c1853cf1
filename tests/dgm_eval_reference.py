"""What the dgm-eval encoder tests (DINOv2, MAE) share: dgm-eval's FD pipeline written out (its ImagePathDataset over
PNG files, the encoder's transform, ``compute_FD_with_reps`` with scipy's sqrtm) against evalkit's folder reader,
extractor and ``fd`` metric, plus the ``[agreement]`` line and the relative difference they print."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from conftest import smooth_images, write_pngs

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet, as dgm-eval normalises


def rel_norm(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def agreement(name: str, ours: float, theirs: float, rel: float) -> None:
    print(f"[agreement] {name}: evalkit={ours:.6f} reference={theirs:.6f} rel={rel:.2e}")


def pil(image: np.ndarray):
    """uint8 (3, H, W) → an RGB PIL image, as dgm-eval opens files."""
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).convert("RGB")


def fd_against_dgm_eval(
    extractor: Callable[[torch.Tensor], dict[str, np.ndarray]],
    transform: Callable[..., torch.Tensor],
    network: Callable[[torch.Tensor], np.ndarray],
    folder: Path,
) -> tuple[float, float, float]:
    """(evalkit's FD, dgm-eval's, relative difference) on 40 + 40 PNGs written under ``folder`` (generated 180×260,
    reference 256×256: both are resized). ``transform``: dgm-eval's for a PIL image; ``network``: the reference
    network, a normalised batch → (B, D) representations."""
    from PIL import Image
    from scipy import linalg

    from evalkit.metrics import get_metric
    from evalkit.metrics.base import MetricInputs
    from evalkit.references.open import open_images

    gen = write_pngs(smooth_images(40, 260, seed=21, shift=0.15)[:, :, :180], folder / "gen")
    ref = write_pngs(smooth_images(40, 256, seed=22), folder / "ref")

    def evalkit_features(path: Path) -> np.ndarray:
        return np.concatenate([extractor(b)["features"] for b in open_images(path).iter_batches(16)])

    inputs = MetricInputs(
        gen={"features": evalkit_features(gen)}, ref={"features": evalkit_features(ref)}, options={"bootstrap": 0}
    )
    value = get_metric("fd").compute(inputs)["fd"].value

    def dgm_eval_reps(path: Path) -> np.ndarray:  # ImagePathDataset + get_representations (float64 array)
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in sorted(path.glob("*.png"))])
        with torch.no_grad():
            return np.asarray(network(x), dtype=np.float64)

    r1, r2 = dgm_eval_reps(ref), dgm_eval_reps(gen)  # dgm-eval: compute_FD_with_reps(reps_real, reps_gen)
    mu1, mu2, s1, s2 = r1.mean(0), r2.mean(0), np.cov(r1, rowvar=False), np.cov(r2, rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2)).real
    want = float((mu1 - mu2).dot(mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    return value, want, abs(value - want) / abs(want)
