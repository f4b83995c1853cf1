"""Precision/recall/density/coverage equal the authors' ``prdc`` package and a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

import evalkit.metrics.prdc as prdc_mod
from evalkit.metrics import MetricInputs, distances, get_metric


def _brute(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Definitions written out with explicit loops over full distance matrices."""

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    rr, ff, rf = dist(real, real), dist(fake, fake), dist(real, fake)
    r_rad = np.array([np.sort(row)[k] for row in rr])  # row[0] is the zero self-distance
    f_rad = np.array([np.sort(row)[k] for row in ff])
    precision = np.mean([any(rf[i, j] < r_rad[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(rf[i, j] < f_rad[j] for j in range(len(fake))) for i in range(len(real))])
    density = np.mean([sum(rf[i, j] < r_rad[i] for i in range(len(real))) for j in range(len(fake))]) / k
    coverage = np.mean([rf[i].min() < r_rad[i] for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return rng.normal(size=(150, 12)), rng.normal(size=(120, 12)) * 1.2 + 0.3


def test_prdc_matches_prdc_package(feats):
    prdc = pytest.importorskip("prdc")
    real, fake = feats
    theirs = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=3)
    ours = get_metric("pr").compute(MetricInputs(gen={"features": fake}, ref={"features": real}))
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key].value == pytest.approx(float(theirs[key]), abs=1e-12), key


def test_prdc_matches_brute_force_and_chunking(feats, monkeypatch):
    real, fake = feats
    expected = _brute(real, fake, 3)
    monkeypatch.setattr(distances, "CHUNK_ELEMS", 500)  # force many small chunks
    ours = prdc_mod.prdc(real, fake, k=3)
    for key, v in expected.items():
        assert ours[key] == pytest.approx(v, abs=1e-12), key


def test_prdc_identical_sets():
    x = np.random.default_rng(1).normal(size=(80, 5))
    out = prdc_mod.prdc(x, x.copy(), k=3)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
