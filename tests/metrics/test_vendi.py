"""Vendi score against the authors' package (vendi-score 0.0.3, ``vendi_score/vendi.py``: its formulas transcribed
below, as the package is not installed beside evalkit), closed forms, and the rows through `evalkit run`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.linalg

from evalkit.metrics import MetricInputs, get_metric
from evalkit.metrics.vendi import vendi


# -- vendi-score 0.0.3, transcribed (weight_K, entropy_q, score_K, score_dual) ------------------------------------
def _ref_entropy_q(p, q=1):
    p_ = p[p > 0]
    if q == 1:
        return -(p_ * np.log(p_)).sum()
    if q == "inf":
        return -np.log(np.max(p))
    return np.log((p_**q).sum()) / (1 - q)


def _ref_score_K(K, q=1, p=None):
    K_ = K / K.shape[0] if p is None else K * np.outer(np.sqrt(p), np.sqrt(p))
    w = scipy.linalg.eigvalsh(K_)
    return np.exp(_ref_entropy_q(w, q=q))


def _ref_score_dual(X, q=1):
    X = X / np.linalg.norm(X, axis=1, keepdims=True)  # sklearn.preprocessing.normalize(X, axis=1)
    w = scipy.linalg.eigvalsh(X.T @ X / X.shape[0])
    return np.exp(_ref_entropy_q(w, q=q))


def _x(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + 0.5


@pytest.mark.parametrize("n,d", [(200, 16), (40, 64)])  # the d×d and the n×n paths
def test_equals_the_packages_score_dual(n, d):
    x = _x(n, d)
    theirs = _ref_score_dual(x)
    print(f"[agreement] vendi n={n} d={d}: evalkit={vendi(x):.12g} reference={theirs:.12g}")
    assert vendi(x) == pytest.approx(theirs, rel=1e-9)
    assert vendi(x, q=2) == pytest.approx(_ref_score_dual(x, q=2), rel=1e-9)
    assert vendi(x, q=math.inf) == pytest.approx(_ref_score_dual(x, q="inf"), rel=1e-9)


def test_closed_forms():
    assert vendi(np.tile([[1.0, 2.0, 3.0]], (10, 1))) == pytest.approx(1.0)  # all alike: one effective sample
    assert vendi(np.eye(7)) == pytest.approx(7.0)  # orthogonal: n
    two = np.repeat(np.eye(2), 5, axis=0)  # two equal, orthogonal clusters
    assert vendi(two) == pytest.approx(2.0)
    assert vendi(np.eye(7), q=math.inf) == pytest.approx(7.0)  # uniform spectrum: every order agrees


def test_a_bootstrap_resample_is_the_packages_weighted_score():
    """Repeated samples give the package's score with p = multiplicities / n: the CI's replicates are well defined."""
    x = _x(30, 8, seed=3)
    idx = np.random.default_rng(1).integers(0, 30, 30)
    u, counts = np.unique(idx, return_counts=True)
    xn = x[u] / np.linalg.norm(x[u], axis=1, keepdims=True)
    assert vendi(x[idx]) == pytest.approx(_ref_score_K(xn @ xn.T, p=counts / counts.sum()), rel=1e-9)


def test_within_condition_is_the_mean_over_classes():
    x = _x(40, 8, seed=5)
    labels = np.arange(40) % 4
    out = get_metric("vendi").compute(MetricInputs(gen={"features": x}, labels=labels))
    per_class = [vendi(x[labels == c]) for c in range(4)]
    assert out["vendi"].value == pytest.approx(vendi(x))
    assert (
        out["vendi_within"].value == pytest.approx(np.mean(per_class)) and out["vendi_within"].extra["conditions"] == 4
    )
    assert "vendi_within" not in get_metric("vendi").compute(MetricInputs(gen={"features": x}))


def test_rows_through_evalkit_run(tmp_path):
    """On the built-in model: guidance narrows each class, so diversity within a class falls as guidance rises."""
    from evalkit.cli import main

    suite = tmp_path / "v.yaml"
    suite.write_text(
        "name: v\nmodels: [{name: m, adapter: zoo}]\nsamplers: [ddim]\nsteps: [8]\nguidance: [1, 5]\nsamples: 60\n"
        "batch_size: 60\nconditions: {classes: 10}\nextractor: mnist-net\nmetrics: [vendi]\ntiming: {repeats: 1}\n"
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 0
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet").set_index(["cell_id", "metric"])["value"]
    for cell in ("m__ddim__s8__g1", "m__ddim__s8__g5"):
        assert 1 < rows[(cell, "vendi_within")] < rows[(cell, "vendi")] < 60
    assert rows[("m__ddim__s8__g5", "vendi_within")] < rows[("m__ddim__s8__g1", "vendi_within")]
