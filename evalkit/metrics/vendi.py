"""Vendi score (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning"):
exp of the Shannon entropy of the eigenvalues of K/n, K the samples' similarity matrix — the effective number of
distinct samples (1 when all are alike, n when all are orthogonal). Reference-free; higher is more diverse.

As the authors' package for embeddings (``vendi_score.vendi.score_dual``): rows L2-normalised, cosine kernel
K = X Xᵀ; the nonzero eigenvalues of K/n are those of Xᵀ X / n, so the smaller of the two matrices is decomposed.
Order q = 1 (Shannon, the package's default; ``q`` sets Hill numbers of other orders), float64.

- ``vendi``: over all generated samples of the cell.
- ``vendi_within``: the mean, over conditions (class label or prompt) with at least two samples, of the Vendi
  score of that condition's samples — the diversity a model keeps for one prompt. Only where the suite has
  conditions.

A bootstrap resample repeats samples; its Vendi score is then the package's weighted score (``p`` = the
multiplicities / n), a smooth function of a mean of outer products, so the study layer's percentile bootstrap
applies as for any other row.
"""

from __future__ import annotations

import math

import numpy as np

from evalkit.metrics._common import feature_key, flat2d, gen_array, needs_samples, option
from evalkit.metrics.base import MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.lpips import condition_groups


def entropy_q(p: np.ndarray, q: float) -> float:
    """Rényi entropy of order q of the distribution p (Shannon at q = 1, min-entropy at q = inf)."""
    p = p[p > 0]
    if q == 1:
        return float(-(p * np.log(p)).sum())
    if math.isinf(q):
        return float(-np.log(p.max()))
    return float(np.log((p**q).sum()) / (1 - q))


def vendi(x: np.ndarray, q: float = 1.0) -> float:
    """The Vendi score of embeddings ``x`` (n, ...) under the cosine kernel."""
    x = flat2d(x).astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n, d = x.shape
    gram = x.T @ x if d <= n else x @ x.T  # same nonzero eigenvalues
    w = np.linalg.eigvalsh(gram / n)
    return math.exp(entropy_q(np.clip(w, 0.0, None), q))


def compute_vendi(inputs: MetricInputs) -> dict[str, MetricValue]:
    x = gen_array(inputs, feature_key(inputs), "vendi")
    q = float(option(inputs, "q", 1.0))
    out = {"vendi": MetricValue(vendi(x, q))}
    if inputs.labels is not None or inputs.prompts is not None:
        groups = [g for g in condition_groups(len(x), inputs.labels, inputs.prompts) if len(g) >= 2]
        if groups:
            scores = [vendi(x[g], q) for g in groups]
            out["vendi_within"] = MetricValue(float(np.mean(scores)), extra={"conditions": len(groups)})
    return out


register_metric(
    MetricDef(
        name="vendi",
        reference="vendi-score score_dual (transcribed)",
        paper="Friedman & Dieng 2023",
        needs_reference=False,
        higher_is_better={"vendi": True, "vendi_within": True},
        compute=compute_vendi,
        options={
            "read": "which extractor output to read (default features, or image_embeds for CLIP extractors)",
            "q": "order of the entropy: 1 Shannon, inf the largest eigenvalue, other q Hill numbers (default 1)",
        },
        description="Vendi score (Friedman & Dieng 2023): exp entropy of the cosine-kernel eigenvalues, the "
        "effective number of distinct samples; overall and within each class/prompt (vendi-score's score_dual).",
        check=needs_samples(2, "a diversity needs two samples"),
    )
)
