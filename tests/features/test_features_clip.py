"""CLIP score through evalkit equals torchmetrics ``CLIPScore`` given the same open_clip model
(≤ 1e-4), and CMMD equals a direct transcription of the CMMD reference code.

A tiny open_clip architecture (registered from a JSON config) with random weights is saved to a file;
evalkit loads the file as custom weights, torchmetrics gets an open_clip model built from the same file.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import rel_diff, smooth_images

from evalkit.features.clip import ClipExtractor
from evalkit.metrics import MetricInputs, get_metric

TINY = "evalkit-tiny-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PROMPTS = [
    "a red square",
    "a photo of a cat",
    "blue sky over hills",
    "a handwritten digit seven",
    "green noise",
    "two dogs playing",
    "an abstract painting",
    "a bowl of soup",
]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("clip")
    cfg = root / f"{TINY}.json"
    cfg.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(str(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    weights = root / "tiny_clip.pt"
    torch.save(model.state_dict(), weights)
    return weights


class _OpenClipAsHF(torch.nn.Module):
    """The two methods torchmetrics' CLIPScore calls on a transformers CLIPModel, served by open_clip."""

    config = SimpleNamespace()

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_image_features(self, pixel_values):
        return self.model.encode_image(pixel_values)

    def get_text_features(self, input_ids, attention_mask=None):
        return self.model.encode_text(input_ids)


class _OpenClipProcessor:
    def __init__(self, preprocess, tokenizer):
        self.preprocess, self.tokenizer = preprocess, tokenizer

    def __call__(self, images=None, text=None, return_tensors="pt", padding=True):
        from PIL import Image

        if images is not None:
            return {
                "pixel_values": torch.stack(
                    [self.preprocess(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images]
                )
            }
        ids = self.tokenizer(text)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _torchmetrics_clip_score(weights, images: np.ndarray, prompts: list[str]) -> float:
    import open_clip
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=str(weights))
    model.eval()
    metric = CLIPScore(
        model_name_or_path=lambda: (_OpenClipAsHF(model), _OpenClipProcessor(preprocess, open_clip.get_tokenizer(TINY)))
    )
    with torch.no_grad():
        metric.update(torch.from_numpy(images), prompts)
    return float(metric.compute())


def test_clip_score_matches_torchmetrics(tiny_clip):
    images = smooth_images(len(PROMPTS), 48, seed=3)
    ex = ClipExtractor(TINY, pretrained=None, weights=tiny_clip)
    assert ex.weights_id.startswith("custom:")
    gen = {"image_embeds": ex(torch.from_numpy(images))["image_embeds"], "text_embeds": ex.encode_text(PROMPTS)}
    metric = get_metric("clip_score")
    per = 100 * np.einsum("ij,ij->i", *(g / np.linalg.norm(g, axis=1, keepdims=True) for g in gen.values()))
    keep = np.flatnonzero(per > 0)  # a random net's mean cosine may be < 0, where both sides clamp to 0
    assert keep.size >= 2
    sub = {k: v[keep] for k, v in gen.items()}
    ours = metric.compute(MetricInputs(gen=sub, seed=0))["clip_score"]
    theirs = _torchmetrics_clip_score(tiny_clip, images[keep], [PROMPTS[i] for i in keep])
    d = rel_diff(ours.value, theirs)
    print(
        f"[agreement] clip_score vs torchmetrics CLIPScore: evalkit={ours.value:.8g} reference={theirs:.8g} rel={d:.3e}"
    )
    assert d <= 1e-4
    assert ours.ci_low <= ours.value <= ours.ci_high
    # the whole set: both clamp the mean at 0 (torchmetrics clamps the mean, not each sample)
    full = metric.compute(MetricInputs(gen=gen, seed=0, options={"bootstrap": 0}))["clip_score"].value
    # `per` is float32 (float32 embeddings, normalised and dotted in float32); the metric works in float64.
    # Each float32 cosine is off by up to ~(d + 2)·u relative (d = 32, u = 2^-24 ≈ 6e-8), and the mean of
    # these N = 8 terms of both signs amplifies that by Σ|x|/|Σx| (≈ 3.6 here): ≲ 3.6·34·6e-8 ≈ 7e-6.
    # Measured 2e-7 (Intel Xeon), ~0 (AMD EPYC); the BLAS/SIMD order decides which rounding one gets.
    assert full == pytest.approx(max(per.mean(), 0.0), rel=1e-5)
    assert full == pytest.approx(_torchmetrics_clip_score(tiny_clip, images, PROMPTS), rel=1e-4, abs=1e-5)


def _cmmd_reference(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """google-research/cmmd distance.mmd transcribed (numpy for jax.numpy)."""
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    x_sq, y_sq = np.diag(x @ x.T), np.diag(y @ y.T)
    gamma = 1 / (2 * sigma**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return scale * (k_xx + k_yy - 2 * k_xy)


def test_cmmd_matches_reference_code(tiny_clip):
    ex = ClipExtractor(TINY, pretrained=None, weights=tiny_clip)
    gen = ex(torch.from_numpy(smooth_images(12, 32, seed=1)))["image_embeds"]
    ref = ex(torch.from_numpy(smooth_images(16, 32, seed=2, shift=0.3)))["image_embeds"]
    ours = get_metric("cmmd").compute(MetricInputs(gen={"image_embeds": gen}, ref={"image_embeds": ref}))["cmmd"].value
    theirs = _cmmd_reference(ref.astype(np.float64), gen.astype(np.float64))
    assert ours == pytest.approx(theirs, rel=1e-9)
    assert ours > 0


def test_random_clip_is_marked_and_reproducible(tiny_clip):
    a = ClipExtractor(TINY, pretrained=None, seed=4)
    b = ClipExtractor(TINY, pretrained=None, seed=4)
    x = torch.from_numpy(smooth_images(2, 32, seed=0))
    assert a.weights_id == "random:4"
    np.testing.assert_array_equal(a(x)["image_embeds"], b(x)["image_embeds"])
