"""Control detectors against the libraries they restate, called directly here: OpenCV's Canny on the HWC RGB image
(ControlNet's annotator) and Pillow's resize and luma conversion; batch invariance; the spec checker."""

from __future__ import annotations

import inspect
import re
import sys

import numpy as np
import pytest
from PIL import Image

from evalkit.errors import ConfigError, DependencyError
from evalkit.imageops.detectors import DETECTORS, check_detector_spec, detect


def _photos(n: int = 4, size: int = 48) -> np.ndarray:
    """uint8 (n, 3, size, size): crops of scikit-learn's two sample photos (real edges and textures)."""
    from sklearn.datasets import load_sample_image

    out = []
    for k in range(n):
        photo = load_sample_image(("china.jpg", "flower.jpg")[k % 2])
        top, left = 60 * (k // 2), 90 * (k // 2)
        crop = Image.fromarray(photo[top : top + 4 * size, left : left + 4 * size]).resize((size, size), Image.BOX)
        out.append(np.asarray(crop).transpose(2, 0, 1))
    return np.stack(out)


def test_canny_is_controlnets_annotator_cv2_canny_on_the_rgb_image():
    cv2 = pytest.importorskip("cv2")
    x = _photos()
    for low, high in ((100, 200), (50, 120)):
        spec = {"detector": "canny"} if (low, high) == (100, 200) else {"detector": "canny", "low": low, "high": high}
        got = detect(spec, x)
        want = np.stack([cv2.Canny(np.ascontiguousarray(im.transpose(1, 2, 0)), low, high) for im in x])
        assert got.shape == x.shape and got.dtype == np.uint8
        np.testing.assert_array_equal(got, np.repeat(want[:, None], 3, axis=1))
        assert set(np.unique(got)) == {0, 255}
        print(f"[agreement] canny {low}/{high} vs cv2.Canny: equal, edge fraction {(got > 0).mean():.3f}")
    assert (detect({"detector": "canny", "low": 50, "high": 120}, x) != detect({"detector": "canny"}, x)).any()


@pytest.mark.parametrize("factor,filt", [(2, "bicubic"), (4, "bicubic"), (2, "box"), (3, "bilinear")])
def test_lowres_is_pillow_resize_with_the_filter(factor, filt):
    x = _photos(3, 48)
    got = detect({"detector": "lowres", "factor": factor, "filter": filt}, x)
    resample = {"bicubic": Image.BICUBIC, "box": Image.BOX, "bilinear": Image.BILINEAR}[filt]
    want = np.stack(
        [np.asarray(Image.fromarray(im.transpose(1, 2, 0)).resize((48 // factor,) * 2, resample)) for im in x]
    )
    np.testing.assert_array_equal(got, want.transpose(0, 3, 1, 2))
    assert got.shape == (3, 3, 48 // factor, 48 // factor)


def test_lowres_box_keeps_a_constant_image_and_refuses_indivisible_sizes():
    flat = np.full((2, 3, 16, 24), 173, dtype=np.uint8)
    flat[1] = 9
    for factor in (2, 4, 8):
        small = detect({"detector": "lowres", "factor": factor, "filter": "box"}, flat)
        np.testing.assert_array_equal(small, flat[:, :, ::factor, ::factor])
    with pytest.raises(ConfigError, match=r"factor 5 must divide .* 16×24") as e:
        detect({"detector": "lowres", "factor": 5}, flat)
    assert isinstance(e.value, ValueError)


def test_gray_is_pillow_luma_replicated():
    x = _photos(3, 32)
    want = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L")) for im in x])
    got = detect({"detector": "gray"}, x)
    np.testing.assert_array_equal(got, np.repeat(want[:, None], 3, axis=1))
    luma = x[:, 0] * 0.299 + x[:, 1] * 0.587 + x[:, 2] * 0.114  # ITU-R 601-2, as Pillow documents it
    print(f"[agreement] gray vs PIL convert('L'): equal; max |PIL - 601-2 float| {np.abs(want - luma).max():.3f}")
    assert np.abs(want - luma).max() <= 1.0


@pytest.mark.parametrize(
    "spec", [{"detector": "canny"}, {"detector": "lowres", "factor": 4}, {"detector": "gray"}], ids=str
)
def test_detect_does_not_depend_on_the_batch_split(spec):
    pytest.importorskip("cv2")
    x = _photos(5, 32)
    whole = detect(spec, x)
    parts = [detect(spec, x[a:b]) for a, b in ((0, 2), (2, 3), (3, 5))]
    assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_the_stated_defaults_are_the_ones_the_functions_use():
    for d in DETECTORS.values():
        params = inspect.signature(d.fn).parameters
        assert set(d.options) == set(list(params)[1:])
        for name, meaning in d.options.items():
            stated = re.search(r"\(default ([^()]*)\)", meaning).group(1)
            assert stated == str(params[name].default), (d.name, name)
    assert {d.kind for d in DETECTORS.values()} == {"edges", "image"}


def test_check_detector_spec_names_each_problem():
    assert check_detector_spec({"detector": "canny", "low": 50, "high": 150}) == []
    assert check_detector_spec({"detector": "lowres", "factor": 4, "filter": "box"}) == []
    assert check_detector_spec({"detector": "hed"}) == [
        "conditions.control.detector: unknown detector 'hed'; expected one of canny, lowres, gray"
    ]
    assert check_detector_spec({"low": 1})[0].startswith("conditions.control.detector: required")
    problems = check_detector_spec({"detector": "lowres", "factor": 1, "filter": "lanczos", "low": 3}, "c")
    assert problems == [
        "c.factor: expected an integer ≥ 2; got 1",
        "c.filter: expected one of bicubic, box, bilinear; got 'lanczos'",
        "c.low: unknown key for detector lowres; allowed: detector, factor, filter",
    ]
    assert check_detector_spec({"detector": "canny", "low": 200, "high": 100})[0].startswith("conditions.control.low")
    assert "allowed: detector" in check_detector_spec({"detector": "gray", "factor": 2})[0]
    with pytest.raises(ConfigError, match="control.factor"):
        detect({"detector": "lowres", "factor": 2.5}, np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(ConfigError, match="uint8 RGB images"):
        detect({"detector": "gray"}, np.zeros((1, 8, 8), np.uint8))


def test_canny_without_opencv_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(DependencyError, match=r"evalkit\[metrics\]"):
        detect({"detector": "canny"}, np.zeros((1, 3, 8, 8), np.uint8))
