"""The rest of dgm-eval's metric set (Stein et al. 2023): FLS, energy distance and sliced Wasserstein, on any
extractor's features, float64 numpy.

- ``fls`` (Jiralerspong et al. 2023, as dgm-eval ``metrics/fls.py``): rows ``fls`` and ``fls_overfit``. Sets as
  dgm-eval draws them: n = min(``max_samples``, training split // 2, reference, generated); n held-out (the
  reference), n generated, and 2n training samples split into a training half and a baseline half, drawn from the
  metric's seed. Features standardised over the four sets (dimensions constant over all of them are dropped:
  dgm-eval divides them by a zero standard deviation and returns NaN). A Gaussian KDE on the generated samples gets
  one bandwidth per kernel, fitted by 100 Adam steps (lr 0.5, ×0.1 after 50, log σ² clamped to [−100, 20]) to the
  training half's likelihood — the same optimisation as dgm-eval's torch code, in numpy with an exact gradient; a
  KDE on the baseline half the same. ``fls`` = 100·exp(−2(NLL_gen − NLL_baseline)/d) of the held-out samples: 100
  when the samples generalise like real training images, higher is better. ``fls_overfit`` = % of generated kernels
  that give the training half more likelihood than the held-out set, minus 50: > 0 overfits, lower is better.
  Needs the training split (``MetricDef.needs_train``; without one it raises).
- ``energy`` (Székely & Rizzo 2013): rows ``energy`` = (2E|X−Y| − E|X−X'| − E|Y−Y'|) / (2E|X−Y|), the normalised
  form dgm-eval reports (equal to it for equal set sizes; dgm-eval divides sums, not means), in [0, 1], and
  ``energy_distance`` = 2E|X−Y| − E|X−X'| − E|Y−Y'| (V-statistics, ≥ 0, 0 for identical sets), in feature units.
  Generated vs reference; lower is better.
- ``sliced_wasserstein`` (Bonneel et al. 2015; Deshpande et al. 2018): rows ``sliced_wasserstein`` =
  (mean over ``projections`` random unit directions of W_p^p between the projected sets)^(1/p), p = 2, directions
  drawn from the metric's seed, 1D W_p exact for sets of any sizes (POT's ``sliced_wasserstein_distance``), and
  ``sw_approx``, dgm-eval's closed-form approximation of SW_2 (Nadjahi et al. 2021). Generated vs reference; lower
  is better.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evalkit.metrics._common import flat2d, gen_array, integer_option, needs_samples, option, ref_array
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.distances import CHUNK_ELEMS, distance_chunks, sq_distances
from evalkit.metrics.memorisation import train_array

FLS_MAX_SAMPLES = 10_000  # dgm-eval's --reduced_n
ENERGY_MAX_SAMPLES = 10_000
DEFAULT_PROJECTIONS = 1000
_ADAM = {"lr": 0.5, "steps": 100, "milestone": 50, "gamma": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


# -- FLS ----------------------------------------------------------------------------------------------------------
def fls_sets(
    train: np.ndarray, test: np.ndarray, gen: np.ndarray, *, max_samples: int = FLS_MAX_SAMPLES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(training half, baseline half, held-out, generated), n each, drawn without replacement as dgm-eval does."""
    n = min(max_samples, len(train) // 2, len(test), len(gen))
    if n < 2:
        raise ValueError(f"FLS needs ≥ 2 samples in each set (and ≥ 4 training samples); got n = {n}")
    rng = np.random.default_rng(seed)
    test = test[rng.choice(len(test), n, replace=False)]
    gen = gen[rng.choice(len(gen), n, replace=False)]
    train = train[rng.choice(len(train), 2 * n, replace=False)]
    return train[:n], train[n:], test, gen


def logsumexp(a: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """log Σ exp(a) along ``axis``, shifted by the maximum (scipy's, without importing scipy for it)."""
    top = a.max(axis=axis, keepdims=True)
    out = top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _kde_terms(d2: np.ndarray, log_sigmas: np.ndarray, dim: int) -> np.ndarray:
    """log of each kernel's weighted Gaussian density at each point: −½d²/σ² − (d/2)·log σ² + log(1/M)."""
    return -0.5 * d2 / np.exp(log_sigmas)[None, :] - 0.5 * dim * log_sigmas[None, :] + math.log(1.0 / d2.shape[1])


def kde_nll(d2: np.ndarray, log_sigmas: np.ndarray, dim: int) -> np.ndarray:
    """Per point, the negative log-likelihood under the KDE (``d2``: squared distances points × kernels)."""
    return -logsumexp(_kde_terms(d2, log_sigmas, dim), axis=1)


def _nll_gradient(d2: np.ndarray, log_sigmas: np.ndarray, dim: int) -> np.ndarray:
    """d mean NLL / d log σ²_j = −(1/N) Σ_i p_ij (½ d²_ij / σ²_j − d/2), p the kernels' responsibilities."""
    grad = np.zeros_like(log_sigmas)
    step = max(1, CHUNK_ELEMS // d2.shape[1])
    for start in range(0, d2.shape[0], step):
        rows = d2[start : start + step]
        terms = _kde_terms(rows, log_sigmas, dim)
        resp = np.exp(terms - logsumexp(terms, axis=1, keepdims=True))
        grad -= (resp * (0.5 * rows / np.exp(log_sigmas)[None, :] - 0.5 * dim)).sum(axis=0)
    return grad / d2.shape[0]


def fit_log_sigmas(d2: np.ndarray, dim: int, *, init: float = 0.0) -> np.ndarray:
    """Per-kernel log σ² minimising the mean NLL of the points: dgm-eval's ``optimize_sigmas`` (torch Adam, its
    update written out; MultiStepLR; clamp after each step)."""
    a = _ADAM
    s = np.full(d2.shape[1], float(init))
    m, v = np.zeros_like(s), np.zeros_like(s)
    for t in range(1, a["steps"] + 1):
        g = _nll_gradient(d2, s, dim)
        lr = a["lr"] * (a["gamma"] if t > a["milestone"] else 1.0)
        m = m + (1 - a["beta1"]) * (g - m)
        v = v * a["beta2"] + (1 - a["beta2"]) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - a["beta2"] ** t) + a["eps"]
        s = np.clip(s - lr / (1 - a["beta1"] ** t) * (m / denom), -100.0, 20.0)
    return s


def fls_scores(train: np.ndarray, baseline: np.ndarray, test: np.ndarray, gen: np.ndarray) -> dict[str, Any]:
    """``fls`` and ``fls_overfit`` of the four sets (module docstring), as dgm-eval's ``compute_fls`` and
    ``compute_fls_overfit``."""
    sets = [flat2d(x) for x in (train, baseline, test, gen)]
    both = np.concatenate(sets)
    mean, std = both.mean(axis=0), both.std(axis=0, ddof=1)
    keep = std > 0
    train, baseline, test, gen = ((x[:, keep] - mean[keep]) / std[keep] for x in sets)
    dim = int(keep.sum())
    s_gen = fit_log_sigmas(sq_distances(train, gen), dim)
    s_base = fit_log_sigmas(sq_distances(train, baseline), dim)
    gen_nll = float(kde_nll(sq_distances(test, gen), s_gen, dim).mean())
    base_nll = float(kde_nll(sq_distances(test, baseline), s_base, dim).mean())
    size = min(len(test), len(train))
    ll_train = logsumexp(_kde_terms(sq_distances(train[:size], gen), s_gen, dim), axis=0)
    ll_test = logsumexp(_kde_terms(sq_distances(test[:size], gen), s_gen, dim), axis=0)
    return {
        "fls": 100.0 * math.exp(-2.0 * (gen_nll - base_nll) / dim),
        "fls_overfit": 100.0 * float((ll_train - ll_test > 0).mean()) - 50.0,
        "dims": dim,
        "dropped_dims": int((~keep).sum()),
    }


def compute_fls(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = option(inputs, "read", "features")
    train, test = train_array(inputs, key, "fls"), flat2d(ref_array(inputs, key, "fls"))
    gen = flat2d(gen_array(inputs, key, "fls"))
    sets = fls_sets(train, test, gen, max_samples=int(option(inputs, "max_samples", FLS_MAX_SAMPLES)), seed=inputs.seed)
    out = fls_scores(*sets)
    extra = {"n": len(sets[0]), "dims": out["dims"], "dropped_dims": out["dropped_dims"]}
    return {row: MetricValue(out[row], extra=extra) for row in ("fls", "fls_overfit")}


def check_fls(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    _, problem = integer_option(options, "max_samples", FLS_MAX_SAMPLES, 2, "FLS's sets hold this many at most")
    return [problem] if problem else needs_samples(2, "a KDE fit and its held-out likelihood")(options, ctx)


# -- energy distance ------------------------------------------------------------------------------------------------
def mean_distance(a: np.ndarray, b: np.ndarray | None = None) -> float:
    """Mean L2 distance over all pairs (a_i, b_j); ``b`` None: over all pairs of ``a``, the zero diagonal included."""
    same = b is None
    b = a if same else b
    total = 0.0
    for rows, d in distance_chunks(a, b):
        if same:
            i = np.arange(len(d))
            d[i, i + rows.start] = 0.0
        total += float(d.sum())
    return total / (len(a) * len(b))


def energy(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``energy_distance`` (2E|X−Y| − E|X−X'| − E|Y−Y'|) and ``energy`` (that over 2E|X−Y|)."""
    x, y = flat2d(x), flat2d(y)
    xy = mean_distance(x, y)
    e = 2.0 * xy - mean_distance(x) - mean_distance(y)
    return {"energy": e / (2.0 * xy) if xy > 0 else 0.0, "energy_distance": e}


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[np.sort(rng.choice(len(x), n, replace=False))]


def compute_energy(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = option(inputs, "read", "features")
    cap = int(option(inputs, "max_samples", ENERGY_MAX_SAMPLES))
    rng = np.random.default_rng(inputs.seed)
    ref = _subsample(flat2d(ref_array(inputs, key, "energy")), cap, rng)
    gen = _subsample(flat2d(gen_array(inputs, key, "energy")), cap, rng)
    extra = {"n_ref": len(ref), "n_gen": len(gen)}
    return {row: MetricValue(v, extra=extra) for row, v in energy(ref, gen).items()}


# -- sliced Wasserstein ----------------------------------------------------------------------------------------------
def random_directions(dim: int, n: int, seed: int) -> np.ndarray:
    """(dim, n) directions uniform on the unit sphere: normalised standard normal columns from ``seed``."""
    z = np.random.default_rng(seed).standard_normal((dim, n))
    return z / np.linalg.norm(z, axis=0, keepdims=True)


def _quantile_steps(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The common quantile grid of two uniform empirical measures of n and m atoms, exactly (integers over n·m): the
    steps' widths and, per step, the sorted atom of each measure that the quantile functions take there."""
    ends = np.union1d(np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n)
    width = np.diff(ends, prepend=0) / float(n * m)
    return width, (ends + m - 1) // m - 1, (ends + n - 1) // n - 1


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, directions: np.ndarray, p: float = 2.0) -> float:
    """(mean over ``directions`` (dim, P) of W_p^p(⟨x, θ⟩, ⟨y, θ⟩))^(1/p), 1D W_p exact for any set sizes."""
    x, y = flat2d(x), flat2d(y)
    width, ix, iy = _quantile_steps(len(x), len(y))
    total = 0.0
    step = max(1, CHUNK_ELEMS // (len(x) + len(y) + len(width)))
    for start in range(0, directions.shape[1], step):
        theta = directions[:, start : start + step]
        xs, ys = np.sort(x @ theta, axis=0), np.sort(y @ theta, axis=0)
        total += float((width[:, None] * np.abs(xs[ix] - ys[iy]) ** p).sum())
    return (total / directions.shape[1]) ** (1.0 / p)


def sw_approx(x: np.ndarray, y: np.ndarray) -> float:
    """dgm-eval's ``sw_approx``: SW_2 from the means and centred second moments, without projections."""
    x, y = flat2d(x), flat2d(y)
    d = x.shape[1]
    mx, my = x.mean(axis=0), y.mean(axis=0)
    mean_term = float(np.sum((mx - my) ** 2)) / d
    m2x = float(np.mean(np.sum((x - mx) ** 2, axis=1))) / d
    m2y = float(np.mean(np.sum((y - my) ** 2, axis=1))) / d
    return math.sqrt(mean_term + (math.sqrt(m2x) - math.sqrt(m2y)) ** 2)


def compute_sliced_wasserstein(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = option(inputs, "read", "features")
    ref = flat2d(ref_array(inputs, key, "sliced_wasserstein"))
    gen = flat2d(gen_array(inputs, key, "sliced_wasserstein"))
    n_dir, p = int(option(inputs, "projections", DEFAULT_PROJECTIONS)), float(option(inputs, "p", 2))
    directions = random_directions(ref.shape[1], n_dir, inputs.seed)
    return {
        "sliced_wasserstein": MetricValue(sliced_wasserstein(gen, ref, directions, p), extra={"projections": n_dir}),
        "sw_approx": MetricValue(sw_approx(ref, gen)),
    }


def check_sliced_wasserstein(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    _, problem = integer_option(options, "projections", DEFAULT_PROJECTIONS, 1, "the Monte Carlo directions")
    problems = [problem] if problem else []
    p = options.get("p", 2)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or p < 1:
        problems.append(f"option p: expected a number ≥ 1 (the order of W_p); got {p!r}")
    return problems


_READ = {"read": "which extractor output to read (default features)"}

register_metric(
    MetricDef(
        name="fls",
        needs_reference=True,
        needs_train=True,
        higher_is_better={"fls": True, "fls_overfit": False},
        compute=compute_fls,
        check=check_fls,
        options={**_READ, "max_samples": "samples per set at most, drawn from the seed (default 10000)"},
        description="Feature likelihood score: held-out likelihood of a per-kernel-bandwidth KDE on the samples "
        "against one on training images (100: as good; higher is better); fls_overfit: % of kernels favouring "
        "training over held-out images − 50 (lower is better).",
        reference="dgm-eval dgm_eval/metrics/fls.py (transcribed; torch Adam)",
        paper="Jiralerspong et al. 2023; Stein et al. 2023 (dgm-eval)",
    )
)

register_metric(
    MetricDef(
        name="energy",
        needs_reference=True,
        higher_is_better={"energy": False, "energy_distance": False},
        compute=compute_energy,
        check=needs_samples(1, "a distance between sets"),
        options={**_READ, "max_samples": "each set subsampled (seeded) to at most this many (default 10000)"},
        description="Energy distance (2E|X−Y| − E|X−X'| − E|Y−Y'|) of samples vs reference, and normalised by "
        "2E|X−Y| as dgm-eval reports it (in [0, 1]); lower is better.",
        reference="dgm-eval dgm_eval/metrics/energy.py (transcribed)",
        paper="Székely & Rizzo 2013; Stein et al. 2023 (dgm-eval)",
    )
)

register_metric(
    MetricDef(
        name="sliced_wasserstein",
        needs_reference=True,
        higher_is_better={"sliced_wasserstein": False, "sw_approx": False},
        compute=compute_sliced_wasserstein,
        check=check_sliced_wasserstein,
        options={
            **_READ,
            "projections": "random directions, drawn from the cell seed (default 1000)",
            "p": "order of the Wasserstein distance (default 2)",
        },
        description="Sliced Wasserstein-2 of samples vs reference over random directions (Monte Carlo), and "
        "dgm-eval's closed-form approximation sw_approx; lower is better.",
        reference="POT ot.sliced_wasserstein_distance (transcribed); dgm-eval dgm_eval/metrics/sw.py (sw_approx)",
        paper="Bonneel et al. 2015; Deshpande et al. 2018; Nadjahi et al. 2021 (sw_approx); Stein et al. 2023",
    )
)
