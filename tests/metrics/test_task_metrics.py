"""Task-suite metrics: psnr/ssim/ms_ssim/lpips_paired against each sample's source (torchmetrics on the same pairs),
inpainting regions (torchmetrics' PSNR on just those pixels, its SSIM map averaged by a loop), and
``control_fidelity`` against a brute-force transcription with explicit loops (edge F1) and Pillow + numpy (lowres)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.metrics import MetricInputs, get_metric
from evalkit.metrics._common import MetricInputError
from evalkit.metrics.base import MetricContext
from evalkit.metrics.resampling import bootstrap_mean_ci


def _images(n: int, size: int, seed: int) -> np.ndarray:
    """uint8-valued images as float in [0, 1], as the pixels extractor gives them."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, size, size)).astype(np.float32) / 255.0


def _noisy(x: np.ndarray, seed: int, scale: float = 0.1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(scale=scale, size=x.shape)
    return (np.round(np.clip(x + noise, 0, 1) * 255) / 255).astype(np.float32)


def _run(name: str, gen, source=None, ref=None, mask=None, per: bool = False, **options):
    """The row ``name`` and, with ``per``, its per-sample terms (computed twice: kept to the tests that read them)."""
    inputs = MetricInputs(gen={"images": gen}, ref=None if ref is None else {"images": ref}, options=options)
    inputs.source = None if source is None else {"images": source}
    inputs.mask = mask
    return get_metric(name).compute(inputs)[name], get_metric(name).per_sample(inputs)[name] if per else None


def _box_masks(n: int, size: int, seed: int) -> np.ndarray:
    rng, m = np.random.default_rng(seed), np.zeros((n, 1, size, size), np.uint8)
    for i in range(n):
        t, l = rng.integers(0, size // 2, 2)
        m[i, 0, t : t + size // 2, l : l + size // 3] = 1
    return m


# -- paired metrics against the source ------------------------------------------------------------------------
def test_source_mode_equals_torchmetrics_on_the_same_pairs_and_needs_no_reference():
    from torchmetrics.functional.image import (
        multiscale_structural_similarity_index_measure,
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    src = _images(3, 44, 0)  # 44 px: the least MS-SSIM takes with 3 scales
    gen = _noisy(src, 1)
    g, s = torch.from_numpy(gen).double(), torch.from_numpy(src).double()
    psnr = np.mean([float(peak_signal_noise_ratio(g[i : i + 1], s[i : i + 1], data_range=1.0)) for i in range(3)])
    ssim = float(structural_similarity_index_measure(g, s, data_range=1.0))
    betas = (0.3, 0.4, 0.3)
    ms = float(multiscale_structural_similarity_index_measure(g, s, data_range=1.0, betas=betas))
    for name, want, opts in (("psnr", psnr, {}), ("ssim", ssim, {}), ("ms_ssim", ms, {"betas": list(betas)})):
        got, _ = _run(name, gen, source=src, bootstrap=0, **opts)  # no reference needed
        rel = abs(got.value - want) / abs(want)
        print(f"[agreement] {name} vs source: evalkit {got.value:.9f} torchmetrics {want:.9f} (rel diff {rel:.1e})")
        assert got.value == pytest.approx(want, rel=1e-6, abs=1e-9)
        assert got.extra["against"] == "source" and got.extra["region"] == "whole"
        assert get_metric(name).reads_source and get_metric(name).needs_reference
    decoy = _images(3, 44, 9)  # a reference present too: the source wins
    with_ref, per = _run("psnr", gen, source=src, ref=decoy, per=True, bootstrap=0)
    assert with_ref.value == pytest.approx(psnr, rel=1e-6) and with_ref.extra["against"] == "source" and len(per) == 3
    assert _run("psnr", gen, ref=decoy, bootstrap=0)[0].extra == {"pairs": 3, "identical_pairs": 0, "max_db": 100.0}
    with pytest.raises(MetricInputError, match="one source per sample; got 2 source rows for 3"):
        _run("psnr", gen, source=src[:2])


def test_lpips_paired_against_the_source_is_the_squared_embedding_distance():
    rng = np.random.default_rng(0)
    phi_gen, phi_src = rng.normal(size=(6, 5, 2, 2)), rng.normal(size=(6, 5, 2, 2))
    inputs = MetricInputs(gen={"lpips": phi_gen}, ref={"lpips": rng.normal(size=(6, 5, 2, 2))}, options={})
    inputs.source = {"lpips": phi_src}
    got = get_metric("lpips_paired").compute(inputs)["lpips_paired"]
    want = np.mean([sum((a - b) ** 2 for a, b in zip(x.ravel(), y.ravel())) for x, y in zip(phi_gen, phi_src)])
    assert got.value == pytest.approx(want, rel=1e-12)
    assert got.extra == {"pairs": 6, "against": "source", "region": "whole"} and get_metric("lpips_paired").reads_source
    inputs.options = {"region": "unmasked"}
    with pytest.raises(MetricInputError, match="always scores the whole image"):
        get_metric("lpips_paired").compute(inputs)


# -- inpainting regions -------------------------------------------------------------------------------------------
def test_region_psnr_equals_torchmetrics_psnr_of_just_those_pixels():
    from torchmetrics.functional.image import peak_signal_noise_ratio

    src = _images(4, 24, 2)
    gen, mask = _noisy(src, 3, 0.2), _box_masks(4, 24, 4)
    for region, keep in (("unmasked", 0), ("masked", 1)):
        got, per = _run("psnr", gen, source=src, mask=mask, per=True, region=region, bootstrap=0)
        want = []
        for g, s, m in zip(gen, src, mask[:, 0]):
            sel = m == keep  # (H, W) → g[:, sel] is (C, pixels)
            t = peak_signal_noise_ratio(torch.from_numpy(g[:, sel]).double(), torch.from_numpy(s[:, sel]).double(), 1.0)
            want.append(float(t))
        np.testing.assert_allclose(per, want, rtol=1e-6)
        assert got.value == pytest.approx(np.mean(want), rel=1e-6) and got.extra["region"] == region
        rel = np.max(np.abs(per - want) / np.abs(want))
        print(
            f"[agreement] psnr {region}: {got.value:.6f} dB; per pair vs torchmetrics on those pixels: rel ≤ {rel:.1e}"
        )
    whole, _ = _run("psnr", gen, source=src, mask=mask, region="whole", bootstrap=0)
    assert whole.value == _run("psnr", gen, source=src, bootstrap=0)[0].value


def test_region_ssim_is_torchmetrics_ssim_map_averaged_over_the_region():
    from torchmetrics.functional.image import structural_similarity_index_measure

    src = _images(3, 20, 5)
    gen, mask = _noisy(src, 6, 0.15), _box_masks(3, 20, 7)
    _, maps = structural_similarity_index_measure(
        torch.from_numpy(gen).double(), torch.from_numpy(src).double(), data_range=1.0, return_full_image=True
    )
    maps = maps.numpy()
    for region, keep in (("unmasked", 0), ("masked", 1)):
        want = []
        for i in range(3):
            total, count = 0.0, 0
            for c in range(3):
                for y in range(20):
                    for x in range(20):
                        if mask[i, 0, y, x] == keep:
                            total, count = total + maps[i, c, y, x], count + 1
            want.append(total / count)
        got, per = _run("ssim", gen, source=src, mask=mask, per=True, region=region, bootstrap=0)
        np.testing.assert_allclose(per, want, rtol=0, atol=1e-12)
        print(f"[agreement] ssim {region}: {got.value:.12f} vs loop over torchmetrics' map {np.mean(want):.12f}")
    whole, _ = _run("ssim", gen, source=src, mask=mask, region="whole", bootstrap=0)
    assert whole.value == _run("ssim", gen, source=src, bootstrap=0)[0].value


def test_an_inpainting_that_keeps_the_unmasked_pixels_reaches_the_cap_there():
    src = _images(4, 16, 8)
    mask = _box_masks(4, 16, 9)
    gen = np.where(mask == 1, _images(4, 16, 10), src).astype(np.float32)  # new pixels only where masked
    got, per = _run("psnr", gen, source=src, mask=mask, per=True, bootstrap=0)  # default region: unmasked
    assert got.value == 100.0 and got.extra["region"] == "unmasked" and got.extra["identical_pairs"] == 4
    assert (per == 100.0).all()
    masked, _ = _run("psnr", gen, source=src, mask=mask, region="masked", bootstrap=0)
    assert masked.value < 20 and masked.extra["identical_pairs"] == 0
    assert _run("ssim", gen, source=src, mask=mask, bootstrap=0)[0].value < 1  # the window crosses the mask edge
    assert _run("psnr", gen, source=src, bootstrap=0)[0].extra["region"] == "whole"  # no mask: whole


def test_region_errors_and_checks():
    src = _images(2, 16, 0)
    full = np.ones((2, 1, 16, 16), np.uint8)
    with pytest.raises(MetricInputError, match="region 'unmasked' holds no pixels in sample 0"):
        _run("psnr", src, source=src, mask=full)
    with pytest.raises(MetricInputError, match="one mask"):
        _run("ssim", src, source=src, mask=full[:, :, :8])
    with pytest.raises(MetricInputError, match="region: expected one of unmasked, masked, whole"):
        _run("psnr", src, source=src, mask=full, region="inside")
    with pytest.raises(MetricInputError, match="takes no option region"):
        _run("ms_ssim", src, source=src, region="whole")
    no_masks = MetricContext(samples=4, conditions={"images": {"dataset": "mnist-heldout"}})
    assert "needs masks" in get_metric("psnr").check({"region": "masked"}, no_masks)[0]
    assert get_metric("ssim").check({"region": "whole"}, no_masks) == []
    assert get_metric("ssim").check({"region": "unmasked"}, MetricContext(4, conditions={"masks": {}})) == []
    assert "region" in get_metric("psnr").options and "region" not in get_metric("ms_ssim").options


# -- control_fidelity ---------------------------------------------------------------------------------------------
def _brute_f1(pred: np.ndarray, target: np.ndarray, tol: int) -> float:
    """F1 of two (H, W) boolean edge maps, Chebyshev tolerance, by explicit loops over pixels."""
    h, w = pred.shape

    def near(a: np.ndarray, y: int, x: int) -> bool:
        for yy in range(h):
            for xx in range(w):
                if a[yy, xx] and max(abs(yy - y), abs(xx - x)) <= tol:
                    return True
        return False

    n_pred = n_target = tp_pred = tp_target = 0
    for y in range(h):
        for x in range(w):
            if pred[y, x]:
                n_pred += 1
                tp_pred += near(target, y, x)
            if target[y, x]:
                n_target += 1
                tp_target += near(pred, y, x)
    if n_pred == 0 and n_target == 0:
        return 1.0
    if n_pred == 0 or n_target == 0:
        return 0.0
    p, r = tp_pred / n_pred, tp_target / n_target
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _fidelity(gen, control, spec, **options):
    inputs = MetricInputs(gen={"images": gen}, options=options)
    inputs.control, inputs.control_spec = control, spec
    defn = get_metric("control_fidelity")
    return defn.compute(inputs), defn.per_sample(inputs)


def _blocky(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 (n, 3, size, size) of random 3×3-px blocks: sharp edges for Canny."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n, 3, size // 3, size // 3)).astype(np.uint8)
    return blocks.repeat(3, axis=2).repeat(3, axis=3)


@pytest.mark.parametrize("tol", [0, 1])
def test_control_f1_equals_a_brute_force_transcription(tol):
    cv2 = pytest.importorskip("cv2")
    out = _blocky(6, 12, 0)
    out[4] = 128  # no edges in the output ...
    rng = np.random.default_rng(1)
    edges = (rng.random((6, 12, 12)) < 0.2).astype(np.uint8) * 255
    edges[4], edges[5] = 0, 0  # ... and none in its control (both empty: 1); output 5 has edges, control none: 0
    control = np.repeat(edges[:, None], 3, axis=1)
    rows, per = _fidelity(out.astype(np.float32) / 255.0, control, {"detector": "canny"}, tolerance=tol, bootstrap=200)
    want = [
        _brute_f1(cv2.Canny(np.ascontiguousarray(o.transpose(1, 2, 0)), 100, 200) > 127, e > 127, tol)
        for o, e in zip(out, edges)
    ]
    assert set(rows) == {"control_f1"} and want[4] == 1.0 and want[5] == 0.0
    np.testing.assert_allclose(per["control_f1"], want, rtol=0, atol=1e-12)
    got = rows["control_f1"]
    assert got.value == pytest.approx(np.mean(want), abs=1e-12)
    assert (got.ci_low, got.ci_high) == bootstrap_mean_ci(np.array(want), n_resamples=200, seed=0)
    assert got.extra["tolerance"] == tol and got.extra["images"] == 6
    print(f"[agreement] control_f1 tol {tol}: {got.value:.12f} vs brute force {np.mean(want):.12f}")


def test_control_psnr_for_lowres_equals_pillow_and_numpy_by_hand():
    out = (_images(4, 16, 3) * 255).round().astype(np.uint8)
    other = (_noisy(out.astype(np.float32) / 255, 4, 0.05) * 255).round().astype(np.uint8)

    def down(x):
        return np.asarray(Image.fromarray(x.transpose(1, 2, 0)).resize((8, 8), Image.BICUBIC)).transpose(2, 0, 1)

    control = np.stack([down(o) for o in other])
    control[3] = down(out[3])  # an output that downsamples exactly to its control: the cap
    spec = {"detector": "lowres", "factor": 2}
    rows, per = _fidelity(out.astype(np.float32) / 255, control, spec, bootstrap=0)
    want = []
    for o, c in zip(out, control):
        mse = np.mean(((down(o).astype(np.float64) - c) / 255.0) ** 2)
        want.append(100.0 if mse == 0 else min(100.0, 10 * np.log10(1 / mse)))
    assert set(rows) == {"control_psnr"} and want[3] == 100.0
    np.testing.assert_allclose(per["control_psnr"], want, rtol=1e-12)
    assert rows["control_psnr"].value == pytest.approx(np.mean(want), rel=1e-12)
    print(f"[agreement] control_psnr lowres: {rows['control_psnr'].value:.9f} dB vs PIL+numpy {np.mean(want):.9f}")
    files, _ = _fidelity(out.astype(np.float32) / 255, control, None, detector=spec, bootstrap=0)
    assert files["control_psnr"].value == rows["control_psnr"].value  # controls from files, detector as an option


def test_control_fidelity_inputs_and_checks():
    gen = _images(2, 12, 0)
    control = np.zeros((2, 3, 12, 12), np.uint8)
    with pytest.raises(MetricInputError, match="conditions.control"):
        _fidelity(gen, None, {"detector": "gray"})
    with pytest.raises(MetricInputError, match="set option detector"):
        _fidelity(gen, control, None)
    assert set(_fidelity(gen, control, None, detector="gray", bootstrap=0)[0]) == {"control_psnr"}
    with pytest.raises(MetricInputError, match=r"\(6, 6\) maps but the controls are \(12, 12\)"):
        _fidelity(gen, control, {"detector": "lowres"})
    with pytest.raises(MetricInputError, match="one control"):
        _fidelity(gen, control[:1], {"detector": "gray"})
    defn = get_metric("control_fidelity")
    assert defn.reads_source and not defn.needs_reference and defn.default_extractor == "pixels"
    assert defn.higher_is_better == {"control_f1": True, "control_psnr": True}
    check = defn.check
    assert "needs conditions.control" in check({}, MetricContext(4, conditions={"images": {}}))[0]
    assert check({}, MetricContext(4, conditions={"control": {"detector": "canny"}})) == []
    files = MetricContext(4, conditions={"control": {"path": "c/"}})
    assert "name no detector" in check({}, files)[0] and check({"detector": "canny"}, files) == []
    problems = check({"tolerance": -1, "detector": "hed", "bootstrap": -1}, files)
    assert len(problems) == 3 and "option detector: unknown detector 'hed'" in problems[2]
