"""Clean mode's resize as a torch operation (the path a GPU takes): Pillow's float bicubic per channel, then
clean-fid's clip, on uint8 batches that never leave the device. Checked on the CPU against clean-fid's own path
(Pillow per image) with the same random-weight TorchScript Inception: features and FD agree at every size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import rel_diff, smooth_images

from evalkit.features.inception import InceptionExtractor
from evalkit.metrics.frechet import frechet_distance


@pytest.fixture(scope="module")
def extractors(random_inception):
    path = random_inception["clean"]
    return {r: InceptionExtractor("clean", weights=path, resize=r) for r in ("pil", "torch")}


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


@pytest.mark.parametrize("size", [32, 64, 256, 512])
def test_device_resize_gives_clean_fids_features(extractors, size):
    gen = torch.from_numpy(smooth_images(4, size, seed=size))
    ref = torch.from_numpy(smooth_images(4, size, seed=size + 1, shift=0.3))
    out = {r: {k: ex(x)["features"] for k, x in (("gen", gen), ("ref", ref))} for r, ex in extractors.items()}
    feats = max(
        float(np.abs(out["torch"][k] - out["pil"][k]).max() / np.abs(out["pil"][k]).max()) for k in ("gen", "ref")
    )
    fd = rel_diff(_fd(out["torch"]["gen"], out["torch"]["ref"]), _fd(out["pil"]["gen"], out["pil"]["ref"]))
    print(f"[agreement] clean resize on the device vs clean-fid's Pillow, {size} px: features {feats:.1e}, FD {fd:.1e}")
    assert feats <= 1e-4 and fd <= 1e-4
    assert extractors["torch"].mode == extractors["pil"].mode == "clean"


def test_auto_picks_the_device_path_only_on_a_gpu(random_inception):
    assert InceptionExtractor("clean", weights=random_inception["clean"]).resize == "pil"  # the CPU: clean-fid's own
    with pytest.raises(Exception, match="unknown resize"):
        InceptionExtractor("clean", weights=random_inception["clean"], resize="cv2")
