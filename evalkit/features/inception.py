"""The FID Inception-v3 in its three conventions, each run through the library that defines it.

=====================  ==============================================  =====================================
mode                   preprocessing + network                          weights file (registry entry)
=====================  ==============================================  =====================================
``clean``              clean-fid: PIL bicubic resize on float32 per     ``inception-2015-12-05.pt`` TorchScript
                       channel, no quantisation; ``InceptionV3W``       (``inception-clean``)
``legacy_tensorflow``  torch-fidelity ``FeatureExtractorInceptionV3``:  ``weights-inception-2015-12-05-…pth``
                       TF1-style bilinear resize inside the network     (``inception-torch-fidelity``)
``legacy_pytorch``     pytorch-fid ``InceptionV3``: bilinear resize     ``pt_inception-2015-12-05-…pth``
                       (align_corners=False) of [0, 1] input            (``inception-pytorch-fid``)
=====================  ==============================================  =====================================

torchmetrics' ``FrechetInceptionDistance`` uses the torch-fidelity network but by default resizes with
``antialias=True``; it equals ``legacy_tensorflow`` at 299 px, and at other sizes only with
``antialias=False`` (with the default it differed by 8% at 32 px in our tests).

On the CPU, ``clean`` runs clean-fid's TorchScript layers frozen and optimised for inference (same graph
and weights, batch norms folded, oneDNN convolutions: 1.25× faster per image with the resize included,
features within ~1e-5 relative of clean-fid's own forward); ``optimize=False`` runs clean-fid's forward
as is.

Every mode gives ``features`` (pool3, 2048) and ``logits`` (the 1008-way head *without* its bias, as
torch-fidelity's ``logits_unbiased`` that its IS uses) from ONE forward per image: the logits are the
network's own fc weight applied to the pool3 features, not a second pass.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.errors import ConfigError, DependencyError
from evalkit.features.base import register_extractor
from evalkit.features.pil_resize import pil_float_bicubic_resize
from evalkit.features.safe_load import check_torchscript, library_loader, load_state_dict, mismatch
from evalkit.features.weights import resolve_weights

MODES = ("clean", "legacy_tensorflow", "legacy_pytorch")
RESIZES = ("auto", "pil", "torch")  # clean mode's resize: where it runs (the numbers agree to ~1e-6, tested)
WEIGHTS_ENTRY = {
    "clean": "inception-clean",
    "legacy_tensorflow": "inception-torch-fidelity",
    "legacy_pytorch": "inception-pytorch-fid",
}
CLEANFID_FILENAME = "inception-2015-12-05.pt"


def _need(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DependencyError(
            f"this extractor needs the {package!r} package: pip install {package} (or pip install 'evalkit[metrics]')"
        ) from err


class InceptionExtractor:
    """Inception-v3 pool3 features + unbiased logits in one of :data:`MODES`."""

    outputs = ("features", "logits")
    resolution = 299

    def __init__(
        self,
        mode: str = "clean",
        *,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        name: str | None = None,
        optimize: bool = True,
        resize: str = "auto",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown Inception mode {mode!r}; expected one of: {', '.join(MODES)}")
        if resize not in RESIZES:
            raise ConfigError(f"unknown resize {resize!r}; expected one of: {', '.join(RESIZES)}")
        self.mode = mode
        self.optimize = optimize
        self.name = name or f"inception-{mode}"  # the registry name it was built under
        self.device = torch.device(device)
        # clean mode's resize: clean-fid's own (Pillow, per image on the CPU) or the same Pillow float bicubic as a
        # torch operation on the device (features.pil_resize), the default on a GPU ("auto")
        self.resize = ("torch" if self.device.type == "cuda" else "pil") if resize == "auto" else resize
        self.resize = self.resize if mode == "clean" else None  # the legacy modes resize inside their networks
        self._bands: dict = {}
        resolved = resolve_weights(WEIGHTS_ENTRY[mode], weights)
        self.weights_path = resolved.path
        self.weights_id = resolved.weights_id
        build = {"clean": self._build_clean, "legacy_tensorflow": self._build_tf, "legacy_pytorch": self._build_pt}[
            mode
        ]
        build(resolved.path)

    # -- clean-fid -------------------------------------------------------------------------------
    def _build_clean(self, path: Path) -> None:
        tsmod = _need("cleanfid.inception_torchscript", "clean-fid")
        resize = _need("cleanfid.resize", "clean-fid")
        check_torchscript(path)  # clean-fid calls torch.jit.load on it: a TorchScript archive, nothing else
        with _as_named(path, CLEANFID_FILENAME) as folder:
            try:
                net = tsmod.InceptionV3W(str(folder), download=False, resize_inside=False)
            except (RuntimeError, AttributeError) as err:
                raise mismatch(path, "clean-fid's TorchScript Inception", err) from err
        self.net = net.to(self.device).eval()
        self._resizer = resize.build_resizer("clean")
        out = getattr(self.net.base, "output", None)
        self._fc_weight = None if out is None else out.weight.detach().float()
        if self._fc_weight is None:
            self.outputs = ("features",)
        self._cpu_layers = _optimized_for_cpu(self.net.layers) if self.optimize and self.device.type == "cpu" else None

    def _forward_clean(self, images: torch.Tensor) -> torch.Tensor:
        if self.resize == "torch":  # uint8 stays on the device; Pillow's float bicubic, then clean-fid's clip
            size = (self.resolution, self.resolution)
            x = pil_float_bicubic_resize(images.to(self.device), size, self._bands).clamp_(0, 255)
        else:
            arr = images.cpu().numpy().transpose(0, 2, 3, 1)  # clean-fid resizes HWC numpy images one by one
            x = np.stack([self._resizer(img) for img in arr]).transpose(0, 3, 1, 2)
            x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if self._cpu_layers is None:
            return self.net(x)
        return self._cpu_layers((x - 128) / 128).view(x.shape[0], 2048)  # InceptionV3W.forward, frozen layers

    # -- torch-fidelity --------------------------------------------------------------------------
    def _build_tf(self, path: Path) -> None:
        fe = _need("torch_fidelity.feature_extractor_inceptionv3", "torch-fidelity")
        # torch-fidelity unpickles ``feature_extractor_weights_path`` with weights_only=False (a weights file could
        # run code): read the tensors ourselves and hand them to it through the loader it calls without a path.
        state = load_state_dict(path)
        try:
            with library_loader(fe, "load_state_dict_from_url", lambda *a, **k: state):
                net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
        except RuntimeError as err:  # load_state_dict: missing / unexpected keys, shape mismatch
            raise mismatch(path, "torch-fidelity's Inception-v3", err) from err
        self.net = net.to(self.device)
        self._fc_weight = None  # torch-fidelity returns logits_unbiased itself

    # -- pytorch-fid -----------------------------------------------------------------------------
    def _build_pt(self, path: Path) -> None:
        inc = _need("pytorch_fid.inception", "pytorch-fid")
        state = load_state_dict(path)
        # pytorch-fid only loads from its release URL via the torch hub cache; hand it our tensors instead.
        try:
            with library_loader(inc, "load_state_dict_from_url", lambda *a, **k: state):
                net = inc.InceptionV3(
                    [inc.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True
                )
        except RuntimeError as err:
            raise mismatch(path, "pytorch-fid's Inception-v3", err) from err
        self.net = net.to(self.device).eval()
        self._fc_weight = state["fc.weight"].float() if "fc.weight" in state else None
        if self._fc_weight is None:
            self.outputs = ("features",)

    # -- the pass --------------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name} expects uint8 (B, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        if self.mode == "clean":
            feats = self._forward_clean(images)
        elif self.mode == "legacy_tensorflow":
            feats, logits = self.net(images.to(self.device))
            return {"features": feats.float().cpu().numpy(), "logits": logits.float().cpu().numpy()}
        else:  # pytorch-fid reads images as ToTensor() gives them: float in [0, 1]
            feats = self.net(images.to(self.device).float() / 255.0)[0].squeeze(-1).squeeze(-1)
        out = {"features": feats.float().cpu().numpy()}
        if self._fc_weight is not None:
            out["logits"] = F.linear(feats.float(), self._fc_weight.to(feats.device)).cpu().numpy()
        return out


def _optimized_for_cpu(layers: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """clean-fid's TorchScript layers frozen and passed through ``torch.jit.optimize_for_inference``
    (batch norms folded into convolutions, oneDNN convolutions with prepacked weights): 1.4× faster on
    2 CPU cores, features within ~1e-6 relative of the unoptimised graph (float reassociation only)."""
    return torch.jit.optimize_for_inference(torch.jit.freeze(layers.eval()))


@contextlib.contextmanager
def _as_named(path: Path, filename: str):
    """A folder holding ``path`` under ``filename`` (clean-fid loads ``<folder>/<filename>`` only)."""
    if path.name == filename:
        yield path.parent
        return
    with tempfile.TemporaryDirectory(prefix="evalkit-weights-") as tmp:
        os.symlink(path.resolve(), Path(tmp) / filename)
        yield Path(tmp)


def _factory(mode: str, name: str):
    def build(*, device: str | torch.device = "cpu", weights: str | os.PathLike | None = None) -> InceptionExtractor:
        return InceptionExtractor(mode, device=device, weights=weights, name=name)

    build.__doc__ = f"FID Inception-v3, mode {mode!r}."
    return build


for _mode in MODES:
    register_extractor(f"inception-{_mode}")(_factory(_mode, f"inception-{_mode}"))
register_extractor("inception")(_factory("clean", "inception"))  # the default convention: clean-fid
