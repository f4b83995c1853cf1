"""Shared test fixtures: offline mode, small synthetic image sets and random-weight reference networks.

Real Inception / CLIP / AlexNet weights cannot be downloaded here, so the cross-checks build each
network with random weights, save it to a file under the name the libraries expect, and inject that
one file into evalkit (explicit weights path) and into the reference library (its own loading path:
``feature_extractor_weights_path`` or the torch hub cache under ``TORCH_HOME``). Same file → same numbers.
"""

from __future__ import annotations

import contextlib
import os
import signal

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a failed hub lookup otherwise retries for 30-50 s
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads made small
# convolutions 10-100x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

INCEPTION_TF_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_PT_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_TS_FILE = "inception-2015-12-05.pt"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_weights_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Tests never see the developer's EVALKIT_WEIGHTS_DIR / torch hub / evalkit cache (real-weights tests excepted)."""
    if request.node.get_closest_marker("real_weights") is None:
        monkeypatch.delenv("EVALKIT_WEIGHTS_DIR", raising=False)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "evalkit_cache"))


def smooth_images(n: int, size: int, *, seed: int, shift: float = 0.0) -> np.ndarray:
    """uint8 (n, 3, size, size): low-resolution colour noise upsampled, so images have structure at
    every size (pure pixel noise would make every resize look alike)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g) + shift
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    img = img + 0.08 * torch.rand(n, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_pngs(images: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(folder / f"{i:04d}.png")
    return folder


# -- a random-weight FID Inception, in the three on-disk forms the libraries load ---------------------


class _TorchScriptInception(torch.nn.Module):
    """Stand-in with the interface of NVIDIA's inception-2015-12-05.pt that clean-fid loads:
    ``layers`` (normalised 299 px input → pool3) and ``output`` (the 1008-way fc); forward returns
    features with ``return_features=True``, softmax probabilities otherwise."""

    def __init__(self, layers: torch.nn.Module, output: torch.nn.Linear) -> None:
        super().__init__()
        self.layers = layers
        self.output = output

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.nn.functional.interpolate(img.float(), size=[299, 299], mode="bilinear", align_corners=False)
        features = self.layers((x - 128) / 128).reshape(-1, 2048)
        if return_features:
            return features
        return torch.softmax(self.output(features), dim=1)


def _random_fidelity_inception(seed: int) -> torch.nn.Module:
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    with (
        mock.patch.object(fe, "load_state_dict_from_url", return_value=None),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, **k: None),
    ):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    # Data-dependent init: BN running statistics from one batch, so activations keep unit scale through
    # ~90 random layers (with default statistics they vanish to ~1e-8 and FD would be all rounding).
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(smooth_images(6, 64, seed=seed + 1)))
    net.eval()
    with torch.no_grad():
        net.fc.weight.mul_(4.0)  # livelier class probabilities for IS
    return net


def write_random_inception(folder: Path, seed: int = 1234) -> dict[str, Path]:
    """Write the random FID Inception as the libraries load it: one state dict (torch-fidelity,
    torchmetrics and pytorch-fid share the layout) and the TorchScript form clean-fid loads."""
    folder.mkdir(parents=True, exist_ok=True)
    net = _random_fidelity_inception(seed=seed)
    torch.save({k: v.clone() for k, v in net.state_dict().items()}, folder / INCEPTION_TF_FILE)
    layers = torch.nn.Sequential(
        net.Conv2d_1a_3x3,
        net.Conv2d_2a_3x3,
        net.Conv2d_2b_3x3,
        net.MaxPool_1,
        net.Conv2d_3b_1x1,
        net.Conv2d_4a_3x3,
        net.MaxPool_2,
        net.Mixed_5b,
        net.Mixed_5c,
        net.Mixed_5d,
        net.Mixed_6a,
        net.Mixed_6b,
        net.Mixed_6c,
        net.Mixed_6d,
        net.Mixed_6e,
        net.Mixed_7a,
        net.Mixed_7b,
        net.Mixed_7c,
        net.AvgPool,
    )
    ts_model = _TorchScriptInception(layers, net.fc).eval()
    try:
        scripted = torch.jit.script(ts_model)
    except Exception:
        ts_model.layers = torch.jit.trace(layers, torch.zeros(1, 3, 299, 299))
        scripted = torch.jit.script(ts_model)
    scripted.save(str(folder / INCEPTION_TS_FILE))
    return {"tf": folder / INCEPTION_TF_FILE, "clean": folder / INCEPTION_TS_FILE, "dir": folder}


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random FID Inception weights (:func:`write_random_inception`), the pytorch-fid file name too, and a
    TORCH_HOME whose hub cache holds the .pth files."""
    root = tmp_path_factory.mktemp("random_inception")
    files = write_random_inception(root)
    shutil.copy(files["tf"], root / INCEPTION_PT_FILE)
    hub = root / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    for f in (INCEPTION_TF_FILE, INCEPTION_PT_FILE):
        shutil.copy(root / f, hub / f)
    return {**files, "pt": root / INCEPTION_PT_FILE, "torch_home": root / "torch_home"}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine OpenMP's spinning makes each small
    conv ~10-100× slower: a module of tiny pipelines runs on one thread (``pytestmark = usefixtures(...)``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail with TimeoutError (instead of hanging the test run) when the block takes longer than ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
