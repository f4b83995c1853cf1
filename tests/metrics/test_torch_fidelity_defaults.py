"""torch-fidelity's DEFAULT KID and IS numbers, reproduced through evalkit's documented options.

evalkit draws KID subsets and the IS shuffle with the cell's seed (default 0); torch-fidelity uses
``rng_seed=2020``. evalkit keeps its default (changing it would shift every stored baseline) and documents
``{name: kid, options: {kid_seed: 2020}}`` / ``{name: is, options: {is_seed: 2020}}`` as the way to get
torch-fidelity's default numbers. Here torch-fidelity is called with no seed, subset size, subset count or
split count at all: its defaults (100 subsets of 1000, 10 splits, rng_seed 2020) against evalkit's defaults
plus only the seed option.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalkit.metrics import MetricInputs, get_metric

# Both sides are float64 end to end on the same float64 features: torch-fidelity keeps the input dtype for
# the KID kernels (the same BLAS product as evalkit's) and casts the IS logits to float64 before the softmax.
# What differs is summation order (row sums then total vs one pairwise sum; torch vs scipy log-softmax), a
# few ulp on each of ~10^6 kernel terms: ~1e-14 relative on KID's mean, more on its std (a spread of values
# ~30x smaller than their mean, so the same absolute error is a larger relative one). Measured: means equal,
# stds ~5e-15 apart (KID and IS).
TOL_MEAN, TOL_STD = 1e-11, 1e-9


@pytest.fixture(scope="module")
def kid_features():
    rng = np.random.default_rng(2020)
    gen = rng.normal(size=(1100, 16)) + 0.2  # ≥ 1000 per side: torch-fidelity's default subset size
    ref = rng.normal(size=(1200, 16))
    return gen, ref


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_kid_with_kid_seed_2020_equals_torch_fidelity_defaults(kid_features):
    from torch_fidelity.metric_kid import kid_features_to_metric

    gen, ref = kid_features
    theirs = kid_features_to_metric(torch.from_numpy(gen), torch.from_numpy(ref), verbose=False)  # all defaults
    ours = get_metric("kid").compute(
        MetricInputs(gen={"features": gen}, ref={"features": ref}, options={"kid_seed": 2020})
    )["kid"]
    assert ours.extra == {"subsets": 100, "subset_size": 1000}
    rel_m = _rel(ours.value, theirs["kernel_inception_distance_mean"])
    rel_s = _rel(ours.std, theirs["kernel_inception_distance_std"])
    print(f"[agreement] KID (kid_seed 2020) vs torch-fidelity defaults: mean {rel_m:.3e}, std {rel_s:.3e}")
    assert rel_m <= TOL_MEAN and rel_s <= TOL_STD


def test_is_with_is_seed_2020_equals_torch_fidelity_defaults():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = np.random.default_rng(7).normal(size=(1003, 1008)) * 3  # N not a multiple of 10: uneven splits
    theirs = isc_features_to_metric(torch.from_numpy(logits))  # all defaults: 10 splits, shuffle, rng_seed 2020
    metric = get_metric("is")
    ours = metric.compute(MetricInputs(gen={"logits": logits}, options={"is_seed": 2020}))["is"]
    assert ours.extra == {"splits": 10}
    rel_m = _rel(ours.value, theirs["inception_score_mean"])
    rel_s = _rel(ours.std, theirs["inception_score_std"])
    print(f"[agreement] IS (is_seed 2020) vs torch-fidelity defaults: mean {rel_m:.3e}, std {rel_s:.3e}")
    assert rel_m <= TOL_MEAN and rel_s <= TOL_STD
    # without the option evalkit shuffles with the cell's seed (default 0): other splits, other numbers
    default = metric.compute(MetricInputs(gen={"logits": logits}))["is"]
    assert _rel(default.std, theirs["inception_score_std"]) > 1e-6
