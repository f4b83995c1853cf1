"""Do generated samples copy the training data? Nearest-neighbour tests in an extractor's feature space (L2 distance
on the flattened features, float64), each reading the training split (``MetricInputs.train``, suite
``reference.train``) beside the held-out reference (``MetricInputs.ref``).

- ``memorisation``: the share of generated samples whose nearest training sample is closer than a threshold
  calibrated on real data: the ``quantile`` (default 1%) of the held-out reference images' distances to their
  nearest training image — the distance-to-closest-record test against a holdout set of the synthetic-data privacy
  literature (e.g. Platzer & Reutterer 2021). Carlini et al. 2023 (a relative ℓ2 cut-off) and Somepalli et al. 2023
  (an SSCD similarity cut-off of 0.5) flag near-copies with fixed thresholds instead; calibrating on held-out
  images gives the share a known value for a model that does not copy (≈ ``quantile``, in ``extra["null_share"]``)
  on any extractor. Without a training split the reference stands in for it (threshold: the quantile of each
  reference image's distance to its nearest *other* reference image). ``extra["closest_pairs"]`` holds the closest
  (generated index, training index, distance) pairs. Lower is better.
- ``authpct`` (Alaa et al. 2022, as dgm-eval ``metrics/authpct.py``): the percentage of generated samples whose
  nearest training sample has another training sample closer to it than the generated one is. Higher is better.
- ``ct`` (C_T, Meehan et al. 2020, as dgm-eval ``metrics/ct.py``): features with more than 64 dimensions are
  projected on the training set's first 64 principal components; k-means (3 cells) on the training set; per cell a
  Mann-Whitney U test, Z-scored, of generated vs held-out samples' distances to their nearest training sample; the
  cells holding more than 20 generated samples averaged, weighted by their share of held-out samples. ≪ 0: the
  samples sit closer to the training set than fresh real data does (copying); ≫ 0: farther (underfitting); higher is
  less copying. dgm-eval's k-means is scikit-learn's (unseeded); evalkit's own (k-means++, 10 starts) draws from the
  metric's seed.

``authpct`` and ``ct`` need the training split (``MetricDef.needs_train``: a suite without ``reference.train`` is
refused before anything runs; called without one they raise). ``memorisation`` falls back to the reference, and says
so in ``extra["train"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.metrics._common import MetricInputError, flat2d, gen_array, integer_option, option, ref_array
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.distances import distance_chunks, sq_distances
from evalkit.metrics.resampling import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_mean_ci

DEFAULT_QUANTILE = 0.01
DEFAULT_PAIRS = 16
CT_CELLS, CT_MIN_CELL, CT_PCA, CT_STARTS = 3, 20, 64, 10
_TRAIN = "training split"
_REF_AS_TRAIN = "reference (no training split given)"


# -- distances ----------------------------------------------------------------------------------------------------
def nearest(a: np.ndarray, b: np.ndarray, *, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a``: (L2 distance to its nearest row of ``b``, that row's index), in row chunks.
    ``exclude_self``: ``a`` is ``b`` and a row is not its own neighbour. The neighbour is found on Gram-form
    distances; the distance returned is recomputed as ‖a − b[j]‖, exact for copies (0)."""
    a, b = flat2d(a), flat2d(b)
    if b.shape[0] < 1 + exclude_self:
        raise ValueError(f"nearest neighbours need {1 + exclude_self} or more samples to search, got {b.shape[0]}")
    idx = np.empty(a.shape[0], dtype=np.int64)
    for rows, d2 in distance_chunks(a, b, squared=True):
        if exclude_self:
            d2[np.arange(rows.stop - rows.start), np.arange(rows.start, rows.stop)] = np.inf
        idx[rows] = d2.argmin(axis=1)
    return np.linalg.norm(a - b[idx], axis=1), idx


# -- what a metric reads -------------------------------------------------------------------------------------------
def train_array(inputs: MetricInputs, key: str, metric: str) -> np.ndarray:
    """The training split's ``key`` features; a :class:`MetricInputError` (a ValueError: real-vs-real floors and
    bootstrap replicates, which have no training split, skip the metric with this reason) where there are none."""
    if inputs.train is None:
        raise MetricInputError(
            f"metric {metric!r} compares the samples with the model's training split, and none was given "
            "(suite: reference.train)"
        )
    if key not in inputs.train:
        raise MetricInputError(f"metric {metric!r} reads training-split output {key!r}; got {sorted(inputs.train)}")
    return flat2d(inputs.train[key])


def train_or_reference(inputs: MetricInputs, key: str, metric: str) -> tuple[np.ndarray, str]:
    """The training split's ``key`` features, else the reference's (and which it is, for ``extra["train"]``)."""
    if inputs.train is not None:
        return train_array(inputs, key, metric), _TRAIN
    return flat2d(ref_array(inputs, key, metric)), _REF_AS_TRAIN


def _ci(inputs: MetricInputs, per_sample: np.ndarray) -> tuple[float | None, float | None]:
    n_boot = int(option(inputs, "bootstrap", DEFAULT_RESAMPLES))
    if n_boot <= 0:
        return None, None
    confidence = float(option(inputs, "confidence", DEFAULT_CONFIDENCE))
    return bootstrap_mean_ci(per_sample, n_resamples=n_boot, seed=inputs.seed, confidence=confidence)


def _mean_replicates(per_sample):
    """A ``replicates`` hook for a row that is the mean of per-sample terms: each resample's mean, exactly."""

    def replicates(inputs: MetricInputs, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {row: terms[idx].mean(axis=1) for row, terms in per_sample(inputs).items()}

    return replicates


# -- memorisation -------------------------------------------------------------------------------------------------
def memorisation(
    gen: np.ndarray, train: np.ndarray, held_out: np.ndarray | None = None, *, quantile: float = DEFAULT_QUANTILE
) -> dict[str, Any]:
    """Per generated sample: its nearest training sample (``nn``, ``distance``) and whether it is at most the
    threshold (``flags``): the ``quantile`` of ``held_out``'s distances to ``train`` (None: of ``train``'s distances
    to its nearest other sample). ``null_share``: the share of those calibration distances within the threshold."""
    distance, nn = nearest(gen, train)
    calib = nearest(held_out, train)[0] if held_out is not None else nearest(train, train, exclude_self=True)[0]
    threshold = float(np.quantile(calib, quantile))
    return {
        "distance": distance,
        "nn": nn,
        "flags": (distance <= threshold).astype(np.float64),
        "threshold": threshold,
        "null_share": float((calib <= threshold).mean()),
        "calibrated_on": "held-out to training" if held_out is not None else "reference to reference (leave-one-out)",
    }


def _memorisation_parts(inputs: MetricInputs) -> tuple[dict[str, Any], str]:
    key = option(inputs, "read", "features")
    gen = gen_array(inputs, key, "memorisation")
    train, source = train_or_reference(inputs, key, "memorisation")
    held_out = flat2d(ref_array(inputs, key, "memorisation")) if source == _TRAIN and inputs.ref is not None else None
    return memorisation(gen, train, held_out, quantile=float(option(inputs, "quantile", DEFAULT_QUANTILE))), source


def compute_memorisation(inputs: MetricInputs) -> dict[str, MetricValue]:
    parts, source = _memorisation_parts(inputs)
    flags, distance = parts["flags"], parts["distance"]
    order = np.argsort(distance, kind="stable")[: int(option(inputs, "pairs", DEFAULT_PAIRS))]
    extra = {k: parts[k] for k in ("threshold", "null_share", "calibrated_on")}
    extra |= {
        "train": source,
        "quantile": float(option(inputs, "quantile", DEFAULT_QUANTILE)),
        "n": int(flags.size),
        "median_distance": float(np.median(distance)),
        "closest_pairs": [{"gen": int(i), "train": int(parts["nn"][i]), "distance": float(distance[i])} for i in order],
    }
    lo, hi = _ci(inputs, flags)
    return {"memorisation": MetricValue(float(flags.mean()), ci_low=lo, ci_high=hi, extra=extra)}


def per_sample_memorisation(inputs: MetricInputs) -> dict[str, np.ndarray]:
    """With the training split and threshold fixed, the share is a mean of independent per-sample flags."""
    return {"memorisation": _memorisation_parts(inputs)[0]["flags"]}


def check_memorisation(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    q = options.get("quantile", DEFAULT_QUANTILE)
    problems = []
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q < 1.0:
        problems.append(f"option quantile: expected a number between 0 and 1 (exclusive); got {q!r}")
    _, problem = integer_option(options, "pairs", DEFAULT_PAIRS, 0, "the closest pairs kept for the report")
    return problems + ([problem] if problem else [])


# -- authpct ------------------------------------------------------------------------------------------------------
def authentic(train: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """Per generated sample: 1.0 where its nearest training sample has a training neighbour closer than it is."""
    distance, nn = nearest(gen, train)
    own, _ = nearest(train, train, exclude_self=True)
    return (own[nn] < distance).astype(np.float64)


def _authpct_parts(inputs: MetricInputs) -> np.ndarray:
    key = option(inputs, "read", "features")
    return 100.0 * authentic(train_array(inputs, key, "authpct"), gen_array(inputs, key, "authpct"))


def compute_authpct(inputs: MetricInputs) -> dict[str, MetricValue]:
    terms = _authpct_parts(inputs)
    lo, hi = _ci(inputs, terms)
    return {"authpct": MetricValue(float(terms.mean()), ci_low=lo, ci_high=hi, extra={"n": int(terms.size)})}


def per_sample_authpct(inputs: MetricInputs) -> dict[str, np.ndarray]:
    return {"authpct": _authpct_parts(inputs)}


# -- C_T ----------------------------------------------------------------------------------------------------------
def pca_project(train: np.ndarray, *others: np.ndarray, components: int = CT_PCA) -> list[np.ndarray]:
    """All sets on ``train``'s first ``components`` principal axes (centred on its mean), as scikit-learn's
    ``PCA(components).fit(train).transform`` up to each axis' sign; unchanged where they have ≤ ``components``
    dimensions or ``components`` is 0."""
    if components <= 0 or train.shape[1] <= components:
        return [train, *others]
    mean = train.mean(axis=0)
    axes = np.linalg.svd(train - mean, full_matrices=False)[2][:components].T
    return [(x - mean) @ axes for x in (train, *others)]


def assign(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    """(each row's nearest centre, the summed squared distances: the inertia)."""
    d2 = sq_distances(x, centres)
    labels = d2.argmin(axis=1)
    return labels, float(d2[np.arange(len(x)), labels].sum())


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (2 + ⌊ln k⌋ candidates per centre, the best kept), as scikit-learn's."""
    trials = 2 + int(np.log(k))
    centres = [x[rng.integers(len(x))]]
    closest = sq_distances(x, centres[0][None, :])[:, 0]
    for _ in range(1, k):
        picks = np.searchsorted(np.cumsum(closest), rng.random(trials) * closest.sum())
        picks = np.clip(picks, 0, len(x) - 1)
        options = np.minimum(closest[None, :], sq_distances(x[picks], x))
        best = int(options.sum(axis=1).argmin())
        closest = options[best]
        centres.append(x[picks[best]])
    return np.array(centres)


def kmeans(x: np.ndarray, k: int, *, starts: int = CT_STARTS, seed: int = 0, max_iter: int = 300) -> np.ndarray:
    """Lloyd's k-means from ``starts`` k-means++ seedings drawn from ``seed``: the centres of least inertia. Stops when
    the centres move (summed squared shift) less than 1e-4 × the mean feature variance, as scikit-learn."""
    if len(x) < k:
        raise ValueError(f"k-means with {k} cells needs at least {k} training samples, got {len(x)}")
    rng = np.random.default_rng(seed)
    tol = 1e-4 * float(np.var(x, axis=0).mean())
    best, best_inertia = None, np.inf
    for _ in range(starts):
        centres = _kmeans_pp(x, k, rng)
        for _ in range(max_iter):
            labels, _ = assign(x, centres)
            counts = np.bincount(labels, minlength=k)
            sums = np.zeros_like(centres)
            np.add.at(sums, labels, x)
            moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
            shift = float(((moved - centres) ** 2).sum())
            centres = moved
            if shift <= tol:
                break
        inertia = assign(x, centres)[1]
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


def z_u(gen_dist: np.ndarray, test_dist: np.ndarray) -> float:
    """Mann-Whitney U of generated vs held-out distances (U of the generated ones, average ranks for ties), Z-scored
    under H0 with dgm-eval's constants: mean nm/2 − 0.5, sd √(nm(n+m+1)/12)."""
    from scipy.stats import rankdata  # here: `evalkit list metrics` imports every metric module, not scipy

    m, n = len(gen_dist), len(test_dist)
    ranks = rankdata(np.concatenate([gen_dist, test_dist]))
    u = ranks[:m].sum() - m * (m + 1) / 2.0
    return float((u - (n * m / 2.0 - 0.5)) / np.sqrt(n * m * (n + m + 1) / 12.0))


def c_t_cells(train: np.ndarray, test: np.ndarray, gen: np.ndarray, labels: tuple, *, min_cell: int = CT_MIN_CELL):
    """C_T given each set's cell labels (training, held-out, generated): (C_T, per-cell Z_U, cells used)."""
    t_lab, p_lab, q_lab = labels
    k = int(t_lab.max()) + 1
    zu = np.zeros(k)
    for i in range(k):
        t, p, q = train[t_lab == i], test[p_lab == i], gen[q_lab == i]
        if len(t) == 0 or len(p) == 0:
            raise ValueError(f"C_T cell {i} holds no training or no held-out samples; use fewer cells")
        if len(q):
            zu[i] = z_u(nearest(q, t)[0], nearest(p, t)[0])
    used = np.bincount(q_lab, minlength=k) > min_cell
    if not used.any():
        raise ValueError(f"no C_T cell holds more than {min_cell} generated samples; C_T needs more samples")
    weight = np.bincount(p_lab, minlength=k) / len(test)
    return float(weight[used] @ zu[used] / weight[used].sum()), zu, used


def c_t(train: np.ndarray, test: np.ndarray, gen: np.ndarray, *, seed: int = 0, **opts: int) -> dict[str, Any]:
    """C_T of ``gen`` against ``train`` with ``test`` held out (module docstring): value and per-cell detail."""
    train, test, gen = pca_project(train, test, gen, components=opts.get("pca", CT_PCA))
    centres = kmeans(train, opts.get("cells", CT_CELLS), starts=opts.get("starts", CT_STARTS), seed=seed)
    labels = tuple(assign(x, centres)[0] for x in (train, test, gen))
    value, zu, used = c_t_cells(train, test, gen, labels, min_cell=opts.get("min_cell", CT_MIN_CELL))
    return {"value": value, "zu": [float(z) for z in zu], "used": [bool(u) for u in used]}


def compute_ct(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = option(inputs, "read", "features")
    train, test = train_array(inputs, key, "ct"), flat2d(ref_array(inputs, key, "ct"))
    opts = {name: int(option(inputs, name, default)) for name, default in _CT_DEFAULTS.items()}
    out = c_t(train, test, flat2d(gen_array(inputs, key, "ct")), seed=inputs.seed, **opts)
    return {"ct": MetricValue(out.pop("value"), extra=out)}


_CT_DEFAULTS = {"cells": CT_CELLS, "min_cell": CT_MIN_CELL, "pca": CT_PCA, "starts": CT_STARTS}


def check_ct(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: the options are integers, and some cell can hold more than ``min_cell`` generated samples."""
    minimum = {"cells": 1, "min_cell": 0, "pca": 0, "starts": 1}
    problems, values = [], {}
    for name, default in _CT_DEFAULTS.items():
        values[name], problem = integer_option(options, name, default, minimum[name], f"C_T's {name}")
        problems += [problem] if problem else []
    if not problems and ctx.samples <= values["min_cell"]:
        problems.append(
            f"needs samples > {values['min_cell']} (only cells holding more than min_cell generated samples count); "
            f"the suite has samples: {ctx.samples}"
        )
    return problems


_BOOT = {
    "bootstrap": "bootstrap resamples for the CI (0: none; default 1000)",
    "confidence": "CI level (default 0.95)",
}
_READ = {"read": "which extractor output to read (default features)"}

register_metric(
    MetricDef(
        name="memorisation",
        needs_reference=True,
        uses_train=True,
        higher_is_better={"memorisation": False},
        compute=compute_memorisation,
        per_sample=per_sample_memorisation,
        replicates=_mean_replicates(per_sample_memorisation),
        check=check_memorisation,
        options={
            **_READ,
            "quantile": "the threshold: this quantile of held-out images' distances to the training split "
            "(default 0.01)",
            "pairs": "closest (generated, training) pairs kept in the result's extra (default 16)",
            **_BOOT,
        },
        description="Share of generated samples whose nearest training sample (L2 on the features; the reference "
        "without reference.train) is closer than the 1% quantile of held-out images' distances to it; lower is "
        "better, ≈ quantile for a model that does not copy; bootstrap CI; closest pairs in extra.",
        reference="own (distance-to-closest-record against a holdout); nearest neighbours checked by scikit-learn",
        paper="Carlini et al. 2023; Somepalli et al. 2023 (copy detection by nearest training neighbour)",
    )
)

register_metric(
    MetricDef(
        name="authpct",
        needs_reference=False,
        needs_train=True,
        higher_is_better={"authpct": True},
        compute=compute_authpct,
        per_sample=per_sample_authpct,
        replicates=_mean_replicates(per_sample_authpct),
        options={**_READ, **_BOOT},
        description="AuthPct: % of generated samples farther from their nearest training sample than that sample's "
        "own nearest training neighbour (authentic, not copied); higher is better; bootstrap CI.",
        reference="dgm-eval dgm_eval/metrics/authpct.py (transcribed)",
        paper="Alaa et al. 2022; Stein et al. 2023 (dgm-eval)",
    )
)

register_metric(
    MetricDef(
        name="ct",
        needs_reference=True,
        needs_train=True,
        higher_is_better={"ct": True},
        compute=compute_ct,
        check=check_ct,
        options={
            **_READ,
            "cells": "k-means cells on the training split (default 3)",
            "min_cell": "a cell counts when it holds more than this many generated samples (default 20)",
            "pca": "principal components kept when the features have more dimensions (0: none; default 64)",
            "starts": "k-means++ starts, the least inertia kept (default 10)",
        },
        description="C_T data-copying test: Z-scored Mann-Whitney U of generated vs held-out distances to the "
        "training split, per k-means cell; ≪0 copying, ≫0 underfitting; higher is less copying.",
        reference="dgm-eval dgm_eval/metrics/ct.py (transcribed; scikit-learn KMeans/PCA, scipy mannwhitneyu)",
        paper="Meehan et al. 2020; Stein et al. 2023 (dgm-eval)",
    )
)
