"""CLIP score, torchmetrics ``CLIPScore`` definition: 100 × cosine(image embedding, text embedding),
averaged over samples and then clamped at 0 — torchmetrics applies ``max(·, 0)`` to the *mean*
(``torch.max(score.sum(0) / n_samples, 0)``), not per sample, and so does evalkit.

Reads the generated ``image_embeds`` and ``text_embeds`` (the runner encodes each sample's prompt).
The CI is a seeded percentile bootstrap over samples of the same clamped mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.metrics._common import flat2d, gen_array, option
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.resampling import DEFAULT_RESAMPLES, bootstrap_mean_ci


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = flat2d(x)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clip_scores(image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
    """Per-sample 100 × cosine similarity (float64), before any clamping."""
    a, b = unit_rows(image_embeds), unit_rows(text_embeds)
    if a.shape != b.shape:
        raise ValueError(f"image and text embeddings differ in shape: {a.shape} vs {b.shape}")
    return 100.0 * np.einsum("ij,ij->i", a, b)


def compute_clip_score(inputs: MetricInputs) -> dict[str, MetricValue]:
    per_sample = clip_scores(
        gen_array(inputs, "image_embeds", "clip_score"), gen_array(inputs, "text_embeds", "clip_score")
    )
    value = max(float(per_sample.mean()), 0.0)
    out = MetricValue(value, extra={"n": int(per_sample.size)})
    n_boot = int(option(inputs, "bootstrap", DEFAULT_RESAMPLES))
    if n_boot > 0:
        out.ci_low, out.ci_high = bootstrap_mean_ci(
            per_sample,
            n_resamples=n_boot,
            seed=inputs.seed,
            confidence=float(option(inputs, "confidence", 0.95)),
            transform=lambda m: max(m, 0.0),
        )
    return {"clip_score": out}


def check_clip_score(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: the samples have prompts (the runner encodes ``text_embeds`` only from a suite's prompts)."""
    if ctx.prompts is not None:
        return []
    has = "class labels, not prompts" if ctx.labels is not None else "no conditions"
    return [
        "needs a prompt per sample (it scores each image against its prompt's text embedding); "
        f"the suite has {has}; set conditions.prompts (a list or a prompt file)"
    ]


register_metric(
    MetricDef(
        name="clip_score",
        reference="torchmetrics CLIPScore",
        paper="Hessel et al. 2021",
        needs_reference=False,
        higher_is_better={"clip_score": True},
        compute=compute_clip_score,
        check=check_clip_score,
        options={
            "bootstrap": "bootstrap resamples for the CI (0: none; default 1000)",
            "confidence": "CI level (default 0.95)",
        },
        default_extractor="clip",
        description="CLIP score as torchmetrics CLIPScore: mean of 100·cos(image, text), clamped at 0; bootstrap CI.",
    )
)
