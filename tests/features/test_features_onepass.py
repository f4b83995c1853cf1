"""One pass: FD, KID, IS and PR on Inception all read ONE forward per image (the test counts them)."""

from __future__ import annotations

from conftest import smooth_images

from evalkit.features.inception import InceptionExtractor
from evalkit.metrics import MetricInputs, get_metric
from evalkit.references import ArrayReference, reference_features


def test_inception_metrics_share_one_forward_per_image(random_inception, tmp_path):
    ex = InceptionExtractor("legacy_tensorflow", weights=random_inception["tf"])
    calls: list[int] = []
    ex.net.register_forward_hook(lambda m, inp, out: calls.append(len(inp[0])))
    gen = ArrayReference("gen", smooth_images(7, 32, seed=1))
    ref = ArrayReference("ref", smooth_images(7, 32, seed=2, shift=0.2))
    g = reference_features(gen, [ex], batch_size=3, cache_dir=tmp_path)[ex.name]
    r = reference_features(ref, [ex], batch_size=3, cache_dir=tmp_path)[ex.name]
    assert calls == [3, 3, 1, 3, 3, 1]  # one network call per batch, every image once
    assert set(g) == {"features", "logits"} and g["logits"].shape == (7, 1008)
    inputs = MetricInputs(gen=g, ref=r, options={"bootstrap": 0, "subset_size": 6, "splits": 2})
    rows = {}
    for name in ("fd", "kid", "is", "pr"):
        rows.update(get_metric(name).compute(inputs))
    assert set(rows) == {"fd", "kid", "is", "precision", "recall", "density", "coverage"}
    assert len(calls) == 6  # the metrics ran no network
    reference_features(ref, [ex], cache_dir=tmp_path)
    assert len(calls) == 6  # cached reference features: no network either
