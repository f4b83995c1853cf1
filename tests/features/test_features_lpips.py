"""LPIPS through evalkit's per-image embedding equals the lpips package's distance (≤ 1e-5 relative),
for the same backbone weights: SqueezeNet from a random file placed in the torch hub cache (the
package's own loading path), AlexNet and VGG16 from the same random seed on both sides (their
random torchvision files would be 0.2–0.5 GB)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from conftest import smooth_images

from evalkit.features.lpips_net import LpipsExtractor
from evalkit.metrics import MetricInputs, get_metric

TOL = 1e-5
N, SIZE = 5, 64


def _lpips_reference(model, images: np.ndarray) -> dict[tuple[int, int], float]:
    import lpips

    x = torch.cat([lpips.im2tensor(np.ascontiguousarray(im.transpose(1, 2, 0))) for im in images])
    with torch.no_grad():
        return {(i, j): float(model(x[i : i + 1], x[j : j + 1])) for i, j in itertools.combinations(range(len(x)), 2)}


def _max_rel(phi: np.ndarray, ref: dict[tuple[int, int], float]) -> float:
    phi = phi.astype(np.float64)
    return max(abs(float(((phi[i] - phi[j]) ** 2).sum()) - v) / v for (i, j), v in ref.items())


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return smooth_images(N, SIZE, seed=7)


def test_lpips_squeeze_from_file_matches_package(images, tmp_path, monkeypatch):
    import lpips
    import torchvision

    torch.manual_seed(3)
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    weights = hub / "squeezenet1_1-b8a52dc0.pth"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_model = lpips.LPIPS(net="squeeze", verbose=False).eval()  # loads the hub-cache file
    ours = LpipsExtractor("squeeze", weights=weights)
    assert ours.weights_id.startswith("custom:")  # a random file is not the published backbone
    d = _max_rel(ours(torch.from_numpy(images))["lpips"], _lpips_reference(ref_model, images))
    print(f"[agreement] lpips squeeze (file) max rel diff over {N * (N - 1) // 2} pairs: {d:.3e}")
    assert d <= TOL


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_random_backbone_matches_package(net, images):
    import lpips

    ours = LpipsExtractor(net, random_seed=11)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    assert ours.weights_id == "random:11"
    d = _max_rel(ours(torch.from_numpy(images))["lpips"], _lpips_reference(ref_model, images))
    print(f"[agreement] lpips {net} (random:11) max rel diff: {d:.3e}")
    assert d <= TOL


def test_lpips_metrics_from_features(images):
    ex = LpipsExtractor("alex", random_seed=5)
    phi = ex(torch.from_numpy(images))["lpips"]
    labels = np.array([0, 0, 1, 1, 1])
    div = get_metric("lpips_diversity").compute(MetricInputs(gen={"lpips": phi}, labels=labels, seed=1))[
        "lpips_diversity"
    ]
    d = lambda i, j: float(((phi[i].astype(np.float64) - phi[j]) ** 2).sum())  # noqa: E731
    expected = np.mean([d(0, 1), np.mean([d(2, 3), d(2, 4), d(3, 4)])])
    assert div.value == pytest.approx(expected, rel=1e-9)
    assert div.ci_low <= div.value <= div.ci_high or div.ci_low == pytest.approx(div.ci_high)
    paired = get_metric("lpips_paired").compute(MetricInputs(gen={"lpips": phi[:3]}, ref={"lpips": phi[2:5]}, seed=1))
    assert paired["lpips_paired"].value == pytest.approx(np.mean([d(0, 2), d(1, 3), d(2, 4)]), rel=1e-9)
