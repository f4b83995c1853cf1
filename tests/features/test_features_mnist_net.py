"""The built-in "mnist-net" extractor over the built-in reference: shapes, weights id, determinism."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from evalkit.features import build_extractor
from evalkit.references import open_reference, reference_features


@pytest.fixture(scope="module")
def extractor():
    from evalkit import zoo

    try:
        zoo.model_card()
    except Exception as e:
        pytest.skip(f"zoo weights not available: {e}")
    return build_extractor("mnist-net")


def test_mnist_net_features_on_heldout(extractor, tmp_path):
    from evalkit import zoo
    from evalkit.features.mnist_net import card_sha256

    assert extractor.weights_id == card_sha256(zoo.model_card()) and len(extractor.weights_id) == 64
    ref = open_reference({"dataset": "mnist-heldout", "samples": 100})
    a = reference_features(ref, [extractor], batch_size=32, use_cache=False)["mnist-net"]
    b = reference_features(ref, [extractor], batch_size=7, use_cache=False)["mnist-net"]
    assert a["features"].shape == (100, 64) and a["logits"].shape == (100, 10)
    # batch size does not matter, up to float32 rounding: the conv kernels' accumulation order changes with the
    # batch (and the CPU), and an output's error scales with the magnitude of the sums it is made of (features
    # up to ~30: one ulp ≈ 2e-6; measured max |diff| 7.6e-6, also on near-zero outputs), not with its own value
    scale = float(np.abs(a["features"]).max())
    np.testing.assert_allclose(a["features"], b["features"], rtol=1e-5, atol=1e-5 * scale)
    assert (a["logits"].argmax(1) == ref.labels).mean() > 0.9


def test_mnist_net_weights_from_another_folder_are_marked(extractor, tmp_path):
    from evalkit.zoo.models import WEIGHTS_DIR

    shutil.copytree(WEIGHTS_DIR, tmp_path / "w")
    ex = build_extractor("mnist-net", weights=tmp_path / "w")
    assert ex.weights_id == extractor.weights_id  # same files → same (standard) id
