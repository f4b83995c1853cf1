"""Paired pixel metrics (psnr, ssim, ms_ssim) and the pixels extractor, against independent references:
PSNR's closed form, a numpy transcription of SSIM (Wang et al. 2004) and torchmetrics' class API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalkit.features import build_extractor
from evalkit.features.weights import check_extractor_weights
from evalkit.metrics import MetricInputs, get_metric
from evalkit.metrics._common import MetricInputError
from evalkit.metrics.base import MetricContext
from evalkit.metrics.paired import ms_ssim_min_size


def _images(n: int, size: int, seed: int) -> np.ndarray:
    """uint8-valued images as float in [0, 1], as the pixels extractor gives them."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, size, size)).astype(np.float32) / 255.0


def _noisy(x: np.ndarray, seed: int, scale: float = 0.1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(scale=scale, size=x.shape)
    return (np.round(np.clip(x + noise, 0, 1) * 255) / 255).astype(np.float32)


def _compute(name: str, gen: np.ndarray, ref: np.ndarray, **options):
    return get_metric(name).compute(MetricInputs(gen={"images": gen}, ref={"images": ref}, options=options))[name]


# -- references -----------------------------------------------------------------------------------------------
def _gauss_1d(k: int = 11, sigma: float = 1.5) -> np.ndarray:
    d = np.arange(k) - (k - 1) / 2
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2D array with the outer product g gᵀ."""
    k = len(g)
    rows = sum(g[i] * x[i : x.shape[0] - k + 1 + i, :] for i in range(k))
    return sum(g[j] * rows[:, j : rows.shape[1] - k + 1 + j] for j in range(k))


def ssim_numpy(a: np.ndarray, b: np.ndarray, k: int = 11, sigma: float = 1.5) -> float:
    """SSIM (Wang et al. 2004) of two (C, H, W) images in [0, 1]: Gaussian window, K1 0.01, K2 0.03, L 1. As
    torchmetrics does, each channel is reflect-padded by (k - 1) / 2 (edge not repeated) so the map covers the image,
    and the map is averaged over channels and pixels."""
    c1, c2 = 0.01**2, 0.03**2
    g, p = _gauss_1d(k, sigma), (k - 1) // 2
    maps = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
        x, y = np.pad(x, p, mode="reflect"), np.pad(y, p, mode="reflect")
        mx, my = _filter_valid(x, g), _filter_valid(y, g)
        vx = np.maximum(_filter_valid(x * x, g) - mx**2, 0)
        vy = np.maximum(_filter_valid(y * y, g) - my**2, 0)
        cxy = _filter_valid(x * y, g) - mx * my
        maps.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(maps))


# -- the pixels extractor --------------------------------------------------------------------------------------
def test_pixels_extractor_returns_the_image_in_unit_range_and_needs_no_weights():
    x = torch.randint(0, 256, (2, 3, 8, 5), dtype=torch.uint8)
    ex = build_extractor("pixels")
    out = ex(x)
    assert ex.outputs == ("images",) and ex.name == "pixels" and ex.weights_id == "none"
    assert out["images"].dtype == np.float32 and out["images"].shape == (2, 3, 8, 5)
    np.testing.assert_array_equal(out["images"], x.numpy().astype(np.float32) / 255.0)
    assert check_extractor_weights("pixels") == []
    assert get_metric("psnr").default_extractor == "pixels"


# -- psnr -------------------------------------------------------------------------------------------------------
def test_psnr_is_the_mean_over_pairs_of_the_closed_form():
    ref = _images(6, 16, 0)
    gen = _noisy(ref, 1)
    mse = ((gen.astype(np.float64) - ref) ** 2).reshape(6, -1).mean(axis=1)
    want = 10 * np.log10(1.0 / mse)
    got = _compute("psnr", gen, ref, bootstrap=200)
    # rel 1e-6: torchmetrics holds its 10 / ln(10) factor in float32 (the rest runs in float64)
    assert got.value == pytest.approx(want.mean(), rel=1e-6)
    assert got.extra == {"pairs": 6, "identical_pairs": 0, "max_db": 100.0}
    assert got.ci_low < got.value < got.ci_high
    np.testing.assert_allclose(
        get_metric("psnr").per_sample(MetricInputs(gen={"images": gen}, ref={"images": ref}))["psnr"], want, rtol=1e-6
    )


def test_pairs_are_the_first_min_n_in_order_as_lpips_paired():
    ref = _images(5, 16, 0)
    gen = _noisy(ref, 1)
    assert _compute("psnr", gen[:3], ref).value == pytest.approx(_compute("psnr", gen[:3], ref[:3]).value)
    assert _compute("ssim", gen, ref[:2], bootstrap=0).extra["pairs"] == 2


def test_identical_pairs_cap_psnr_at_max_db_and_give_ssim_one():
    ref = _images(4, 16, 0)
    gen = ref.copy()
    gen[:2] = _noisy(ref[:2], 3)
    mse = ((gen[:2].astype(np.float64) - ref[:2]) ** 2).reshape(2, -1).mean(axis=1)
    got = _compute("psnr", gen, ref, bootstrap=0)
    assert got.value == pytest.approx((10 * np.log10(1 / mse).sum() + 2 * 100.0) / 4, rel=1e-6)
    assert got.extra["identical_pairs"] == 2 and np.isfinite(got.value)
    assert _compute("psnr", ref, ref, max_db=60.0, bootstrap=0).value == 60.0
    assert _compute("ssim", ref, ref, bootstrap=0).value == pytest.approx(1.0, abs=1e-12)
    assert _compute("ms_ssim", *[_images(2, 48, 0)] * 2, betas=[0.5, 0.5], bootstrap=0).value == pytest.approx(1.0)


# -- ssim -------------------------------------------------------------------------------------------------------
def test_ssim_matches_a_numpy_transcription_of_wang_2004():
    ref = _images(3, 24, 0)
    gen = _noisy(ref, 2, scale=0.2)
    want = [ssim_numpy(g, r) for g, r in zip(gen, ref)]
    got = _compute("ssim", gen, ref, bootstrap=0)
    assert got.value == pytest.approx(np.mean(want), abs=1e-9)
    per = get_metric("ssim").per_sample(MetricInputs(gen={"images": gen}, ref={"images": ref}))["ssim"]
    np.testing.assert_allclose(per, want, atol=1e-9)


def test_ssim_equals_torchmetrics_class_api_over_batches():
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    ref = _images(7, 20, 4)
    gen = _noisy(ref, 5)
    m = StructuralSimilarityIndexMeasure(data_range=1.0).double()
    for s in range(0, 7, 3):
        m.update(torch.from_numpy(gen[s : s + 3]).double(), torch.from_numpy(ref[s : s + 3]).double())
    # abs 1e-6: the class accumulates its sum in a float32 state (the per-image values are float64)
    assert _compute("ssim", gen, ref, bootstrap=0).value == pytest.approx(float(m.compute()), abs=1e-6)


# -- ms_ssim ----------------------------------------------------------------------------------------------------
def test_ms_ssim_at_192px_equals_torchmetrics_class_api():
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

    ref = _images(3, 192, 6)
    gen = _noisy(ref, 7, scale=0.15)
    m = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0).double()
    for s in range(0, 3, 2):
        m.update(torch.from_numpy(gen[s : s + 2]).double(), torch.from_numpy(ref[s : s + 2]).double())
    got = _compute("ms_ssim", gen, ref, bootstrap=100)
    assert got.value == pytest.approx(float(m.compute()), abs=1e-6)  # the class's state is float32
    assert got.ci_low <= got.value <= got.ci_high and got.extra == {"pairs": 3}


def test_ms_ssim_refuses_small_images_naming_the_minimum_and_allows_fewer_scales():
    assert ms_ssim_min_size() == 176 and ms_ssim_min_size(11, 3) == 44
    ref = _images(2, 64, 0)
    gen = _noisy(ref, 1)
    with pytest.raises(MetricInputError, match=r"at least 176×176 px .*got 64×64"):
        _compute("ms_ssim", gen, ref)
    small = _compute("ms_ssim", gen, ref, betas=[0.3, 0.4, 0.3], bootstrap=0)
    assert 0 < small.value < 1
    with pytest.raises(MetricInputError, match="at least 44×44"):
        _compute("ms_ssim", gen[..., :40, :40], ref[..., :40, :40], betas=[0.3, 0.4, 0.3])


# -- input and option checks -------------------------------------------------------------------------------------
def test_mismatched_sizes_and_missing_reference_are_clear_errors():
    with pytest.raises(MetricInputError, match="same size"):
        _compute("psnr", _images(2, 16, 0), _images(2, 17, 0))
    with pytest.raises(MetricInputError, match="needs reference"):
        get_metric("ssim").compute(MetricInputs(gen={"images": _images(2, 16, 0)}))


def test_checks_refuse_bad_options():
    ctx = MetricContext(samples=4, reference=True)
    assert get_metric("ssim").check({}, ctx) == [] and get_metric("ms_ssim").check({}, ctx) == []
    assert "max_db" in get_metric("psnr").check({"max_db": float("inf")}, ctx)[0]
    problems = get_metric("ms_ssim").check({"kernel_size": 10, "betas": [], "bootstrap": -1}, ctx)
    assert len(problems) == 3 and any("kernel_size" in p for p in problems) and any("betas" in p for p in problems)
    for name in ("psnr", "ssim", "ms_ssim"):
        defn = get_metric(name)
        assert defn.needs_reference and defn.higher_is_better == {name: True}
