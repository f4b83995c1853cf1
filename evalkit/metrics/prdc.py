"""Precision & recall (Kynkäänniemi et al. 2019) and density & coverage (Naeem et al. 2020).

k-NN manifolds with k = 3: a sample's radius is the distance to its k-th nearest *other* sample in its
own set (the reference ``prdc`` package takes the (k+1)-th smallest distance including the zero to
itself — the same thing). Euclidean distances in float64, computed in row chunks so that memory stays
bounded (O(chunk × N)) for large sets.

- precision: fraction of generated samples inside at least one reference ball;
- recall:    fraction of reference samples inside at least one generated ball;
- density:   (1/k) × mean over generated samples of the number of reference balls containing it;
- coverage:  fraction of reference samples whose nearest generated sample lies inside their ball.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.metrics._common import feature_key, flat2d, gen_array, integer_option, option, ref_array
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.distances import distance_chunks

DEFAULT_K = 3


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    if x.shape[0] <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {x.shape[0]}")
    out = np.empty(x.shape[0], dtype=np.float64)
    for rows, d in distance_chunks(x, x):
        # index k (0-based) of the sorted row is the k-th neighbour after the zero self-distance
        out[rows] = np.partition(d, k, axis=1)[:, k]
    return out


def reference_ball_counts(ref: np.ndarray, gen: np.ndarray, r_ref: np.ndarray) -> np.ndarray:
    """Per generated sample: how many reference balls (radii ``r_ref``) contain it."""
    counts = np.zeros(gen.shape[0], dtype=np.int64)
    for rows, d in distance_chunks(gen, ref):
        counts[rows] = (d < r_ref[None, :]).sum(axis=1)
    return counts


def prdc(ref: np.ndarray, gen: np.ndarray, k: int = DEFAULT_K) -> dict[str, float]:
    ref, gen = flat2d(ref), flat2d(gen)
    r_ref, r_gen = knn_radii(ref, k), knn_radii(gen, k)
    in_ref_balls = reference_ball_counts(ref, gen, r_ref)
    recalled = np.zeros(ref.shape[0], dtype=bool)
    covered = np.zeros(ref.shape[0], dtype=bool)
    for rows, d in distance_chunks(ref, gen):
        recalled[rows] = (d < r_gen[None, :]).any(axis=1)
        covered[rows] = d.min(axis=1) < r_ref[rows]
    return {
        "precision": float((in_ref_balls > 0).mean()),
        "recall": float(recalled.mean()),
        "density": float(in_ref_balls.mean() / k),
        "coverage": float(covered.mean()),
    }


def compute_pr(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = feature_key(inputs)
    k = int(option(inputs, "k", DEFAULT_K))
    vals = prdc(ref_array(inputs, key, "pr"), gen_array(inputs, key, "pr"), k=k)
    return {name: MetricValue(v, extra={"k": k}) for name, v in vals.items()}


def per_sample_pr(inputs: MetricInputs) -> dict[str, np.ndarray]:
    """Precision and density are means over generated samples of these terms; with the reference fixed
    and samples drawn independently, their seed-to-seed variance is var(term)/n. (Recall and coverage
    depend on the generated set as a whole: no such form.)"""
    key = feature_key(inputs)
    k = int(option(inputs, "k", DEFAULT_K))
    ref, gen = flat2d(ref_array(inputs, key, "pr")), flat2d(gen_array(inputs, key, "pr"))
    counts = reference_ball_counts(ref, gen, knn_radii(ref, k))
    return {"precision": (counts > 0).astype(np.float64), "density": counts / k}


def check_pr(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: ``k`` ≥ 1 (k = 0 makes every radius 0 and density 0/0), and more generated samples than
    ``k`` (:func:`knn_radii` needs a k-th nearest *other* sample). The reference's size is not known before it is
    loaded; a reference of ≤ k samples still fails at scoring."""
    k, problem = integer_option(options, "k", DEFAULT_K, 1, "the k-th nearest neighbour sets each radius")
    if k is None:
        return [problem]
    if ctx.samples <= k:
        return [
            f"k={k} needs samples > {k} (each sample's radius is the distance to its k-th nearest other generated "
            f"sample); the suite has samples: {ctx.samples}; set samples ≥ {k + 1} or options.k ≤ {ctx.samples - 1}"
        ]
    return []


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The full distance matrix, assembled from :func:`~evalkit.metrics.distances.distance_chunks` (the same
    formula, so radii compare exactly with :func:`prdc`'s)."""
    return np.concatenate([d for _, d in distance_chunks(a, b)], axis=0)


def pr_replicates(inputs: MetricInputs, idx: np.ndarray) -> dict[str, np.ndarray]:
    """precision/recall/density/coverage of ``gen[i]`` for each row ``i`` of ``idx``, exactly as :func:`prdc`
    computes them on the resampled set, from distances computed once (resampling picks rows and columns)."""
    key = feature_key(inputs)
    k = int(option(inputs, "k", DEFAULT_K))
    ref, gen = flat2d(ref_array(inputs, key, "pr")), flat2d(gen_array(inputs, key, "pr"))
    r_ref = knn_radii(ref, k)
    d_gr, d_gg = _distances(gen, ref), _distances(gen, gen)
    inside = (d_gr < r_ref[None, :]).sum(axis=1)
    out = {name: np.empty(len(idx)) for name in ("precision", "recall", "density", "coverage")}
    for b, ix in enumerate(idx):
        r_gen = np.partition(d_gg[np.ix_(ix, ix)], k, axis=1)[:, k]
        d = d_gr[ix]
        out["precision"][b] = (inside[ix] > 0).mean()
        out["density"][b] = inside[ix].mean() / k
        out["recall"][b] = (d < r_gen[:, None]).any(axis=0).mean()
        out["coverage"][b] = (d.min(axis=0) < r_ref).mean()
    return out


register_metric(
    MetricDef(
        name="pr",
        reference="prdc (clovaai generative-evaluation-prdc)",
        paper="Kynkäänniemi et al. 2019; Naeem et al. 2020",
        needs_reference=True,
        higher_is_better={"precision": True, "recall": True, "density": True, "coverage": True},
        compute=compute_pr,
        check=check_pr,
        options={
            "read": "which extractor output to read (default features, or image_embeds for CLIP extractors)",
            "k": "nearest neighbour k (default 3)",
        },
        description="Precision/recall (Kynkäänniemi 2019) and density/coverage (Naeem 2020), k=3 nearest neighbours.",
        per_sample=per_sample_pr,
        replicates=pr_replicates,
    )
)
