"""class_acc: agreement with the requested labels, Wilson interval checked against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.metrics.classification import wilson_interval


@pytest.mark.parametrize("k,n", [(0, 10), (7, 10), (950, 1000), (1000, 1000), (1, 3)])
def test_wilson_interval_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    np.testing.assert_allclose(wilson_interval(k, n), (ref.low, ref.high), rtol=1e-9, atol=1e-12)


def test_class_acc_counts_argmax_agreement():
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    logits = rng.normal(size=(200, 10))
    logits[np.arange(150), labels[:150]] += 100.0  # the first 150 are surely right
    hits = int((logits.argmax(1) == labels).sum())
    out = get_metric("class_acc").compute(MetricInputs(gen={"logits": logits}, labels=labels))["class_acc"]
    assert out.value == hits / 200 and out.value >= 0.75
    assert out.ci_low < out.value < out.ci_high


def test_class_acc_needs_labels():
    with pytest.raises(ValueError, match="class-conditional"):
        get_metric("class_acc").compute(MetricInputs(gen={"logits": np.zeros((4, 10))}))
