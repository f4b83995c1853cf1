"""KID and IS equal torch-fidelity's on the same features with the same seeds and splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalkit.metrics import MetricInputs, get_metric


def _tf_kid(gen: np.ndarray, ref: np.ndarray, seed: int, subset: int) -> dict:
    from torch_fidelity.metric_kid import kid_features_to_metric

    return kid_features_to_metric(
        torch.from_numpy(gen),
        torch.from_numpy(ref),
        kid_subsets=100,
        kid_subset_size=subset,
        rng_seed=seed,
        verbose=False,
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kid_matches_torch_fidelity(dtype):
    rng = np.random.default_rng(0)
    gen = (rng.normal(size=(260, 48)) + 0.3).astype(dtype)
    ref = rng.normal(size=(300, 48)).astype(dtype)
    theirs = _tf_kid(gen, ref, seed=2020, subset=200)
    ours = get_metric("kid").compute(
        MetricInputs(gen={"features": gen}, ref={"features": ref}, options={"subset_size": 200, "kid_seed": 2020})
    )["kid"]
    tol = 1e-12 if dtype == np.float64 else 1e-4  # torch-fidelity keeps float32 kernels; evalkit float64
    for ours_v, key in ((ours.value, "kernel_inception_distance_mean"), (ours.std, "kernel_inception_distance_std")):
        rel = abs(ours_v - theirs[key]) / abs(theirs[key])
        print(f"[agreement] KID {key.split('_')[-1]} ({np.dtype(dtype).name}) vs torch-fidelity: rel={rel:.3e}")
        assert rel <= tol


def test_kid_subset_size_is_capped_by_the_smaller_set():
    rng = np.random.default_rng(1)
    out = get_metric("kid").compute(
        MetricInputs(gen={"features": rng.normal(size=(50, 8))}, ref={"features": rng.normal(size=(80, 8))})
    )["kid"]
    assert out.extra["subset_size"] == 50 and out.extra["subsets"] == 100


@pytest.mark.parametrize("seed", [0, 2020])
def test_is_matches_torch_fidelity(seed):
    from torch_fidelity.metric_isc import isc_features_to_metric

    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(503, 1008)) * 3).astype(np.float32)
    theirs = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=seed)
    ours = get_metric("is").compute(MetricInputs(gen={"logits": logits}, seed=seed))["is"]
    rel_m = abs(ours.value - theirs["inception_score_mean"]) / theirs["inception_score_mean"]
    rel_s = abs(ours.std - theirs["inception_score_std"]) / theirs["inception_score_std"]
    print(f"[agreement] IS mean/std vs torch-fidelity (seed {seed}): {rel_m:.3e} / {rel_s:.3e}")
    assert rel_m <= 1e-10 and rel_s <= 1e-8


def test_is_bounds():
    onehot = np.eye(10)[np.arange(100) % 10] * 50.0  # confident and uniform over classes → IS ≈ 10 (one split)
    one_split = MetricInputs(gen={"logits": onehot}, options={"splits": 1})
    assert get_metric("is").compute(one_split)["is"].value == pytest.approx(10.0, rel=1e-6)
    same = np.tile(np.arange(10.0), (100, 1))  # the same prediction everywhere → IS = 1
    assert get_metric("is").compute(MetricInputs(gen={"logits": same}))["is"].value == pytest.approx(1.0, abs=1e-12)
