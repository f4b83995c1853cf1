"""Fréchet distance between Gaussian fits of feature sets (FID when the features are Inception's),
and FD∞, its extrapolation to infinitely many samples (Chong & Forsyth, CVPR 2020).

Convention: float64 statistics, ``np.cov`` with ddof=1 (as pytorch-fid, clean-fid,
torch-fidelity and torchmetrics), and ``tr sqrt(Σ1 Σ2)`` from the eigenvalues of Σ1Σ2 cast to complex,
taking the real part of the sum of square roots. This is what torchmetrics does; it agrees with the
``scipy.linalg.sqrtm`` path of pytorch-fid/clean-fid to ~1e-10 relative and is several times faster.

With fewer generated samples than feature dimensions (N ≤ d, e.g. 1000 samples of 2048-d pool3)
Σ1 = AAᵀ has rank < N, and the nonzero eigenvalues of Σ1Σ2 = A(AᵀΣ2) are those of the small symmetric
N×N matrix AᵀΣ2A (AB and BA share nonzero eigenvalues). The same eigenvalue form is then computed from
that matrix: exact, real, and O(N d²) instead of an O(d³) non-symmetric eigendecomposition.

**Many FDs against one reference** (a sampler grid, bootstrap replicates, FD∞ subsets): prepare the
reference once with :func:`prepare_reference`: μ, tr Σ and a square-root factor F with FFᵀ = Σ — the
Cholesky factor L when Σ is positive definite (triangular products cost half), else B = V diag(√λ)
from Σ = VΛVᵀ with eigenvalues below ``d·eps·λ_max`` dropped (r = rank columns). With R = sqrt(Σ_ref)
= V diag(√λ) Vᵀ symmetric PSD, Σ1Σ_ref = Σ1RR has the eigenvalues of the symmetric RΣ1R, and for any
factor FFᵀ = Σ_ref those of FᵀΣ1F (Σ1FFᵀ and FᵀΣ1F share nonzero eigenvalues), so
``tr sqrt(Σ1 Σ_ref) = Σ sqrt(eigvalsh(Fᵀ Σ1 F))``: still the eigenvalue form, now with a symmetric
eigensolver and no per-FD work on Σ_ref. From centred samples X (N×d), FᵀΣ1F = (XF)ᵀ(XF)/(N-1), whose
nonzero eigenvalues are those of the N×N (XF)(XF)ᵀ/(N-1) — the low-rank path above, XΣ2Xᵀ = (XF)(XF)ᵀ.
:func:`frechet_distance_to_reference` picks the cheapest of the three products;
:func:`frechet_distance_resampled` computes XF once and then each replicate or subset from its rows (a
bootstrap resample as its distinct rows weighted by their counts). The ``fd`` and ``fd_inf`` metrics use
this path (a single FD at N ≤ d without bootstrap keeps the direct low-rank path: no O(d³) step at all)
and keep reference fits and prepared references in a small cache keyed by the reference arrays'
contents, so the cells of a grid share one. It agrees with :func:`frechet_distance` and with the ``scipy.linalg.sqrtm``
path to ~1e-8 relative or better (tests/metrics/test_metrics_frechet.py); on a rank-deficient Σ (≤ d samples)
it is the more accurate: dropped null directions contribute exactly 0, not square roots of rounding.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from evalkit.metrics import _common as common
from evalkit.metrics._common import MU_SUFFIX, SIGMA_SUFFIX, flat2d, gaussian_stats, gen_array, needs_samples, option
from evalkit.metrics.base import MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.resampling import bootstrap_indices, percentile_interval
from evalkit.metrics.threads import single_thread_blas_when_oversubscribed

# Bootstrap replicates by default only while the feature dimension keeps each replicate cheap
# (a 2048-d eigendecomposition costs seconds on a CPU); ask with options {"bootstrap": N} otherwise.
AUTO_BOOTSTRAP_MAX_DIM = 512
DEFAULT_BOOTSTRAP = 100


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(Σ1 Σ2)`` via the eigenvalues of Σ1Σ2 (complex sqrt, real part of the sum)."""
    eig = np.linalg.eigvals(np.asarray(sigma1, np.float64) @ np.asarray(sigma2, np.float64))
    return float(np.sqrt(eig.astype(np.complex128)).sum().real)


def trace_sqrt_product_lowrank(centred: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(Σ1 Σ2)`` for Σ1 = XᵀX/(N-1) given the centred samples X (N, d): eigenvalues of the
    N×N matrix XΣ2Xᵀ/(N-1), which are the nonzero eigenvalues of Σ1Σ2."""
    x = np.asarray(centred, np.float64)
    m = (x @ np.asarray(sigma2, np.float64) @ x.T) / (x.shape[0] - 1)
    eig = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance_from_samples(x: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FD of samples ``x`` against N(μ2, Σ2); uses the N×N eigenproblem when N ≤ d (see module docstring)."""
    x = flat2d(x)
    mu1, sigma1 = gaussian_stats(x)
    if x.shape[0] > x.shape[1]:
        return frechet_distance(mu1, sigma1, mu2, sigma2)
    diff = mu1 - np.asarray(mu2, np.float64)
    tr = trace_sqrt_product_lowrank(x - mu1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(np.asarray(sigma2, np.float64)) - 2.0 * tr)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|μ1-μ2|² + tr Σ1 + tr Σ2 - 2 tr sqrt(Σ1Σ2)`` in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


# -- many FDs against one reference ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PreparedReference:
    """N(μ, Σ) prepared once for many FDs against it (see the module docstring).

    ``factor`` is B (d, r) with BBᵀ = Σ: the eigenvectors of Σ with eigenvalue above ``d·eps·λ_max``,
    scaled by √λ (``sqrt_eigenvalues``); r is Σ's numerical rank (< d when the reference has ≤ d samples).
    ``cholesky`` is the lower-triangular L = chol(Σ) (another factor, LLᵀ = Σ) when Σ is numerically
    positive definite, else None: products with a triangular factor cost half those with B.
    """

    mu: np.ndarray
    trace: float
    factor: np.ndarray
    sqrt_eigenvalues: np.ndarray
    cholesky: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @property
    def rank(self) -> int:
        return int(self.factor.shape[1])

    @property
    def sigma(self) -> np.ndarray:
        """Σ rebuilt from the factor (BBᵀ; equal to the input up to the dropped null space)."""
        return self.factor @ self.factor.T

    def sqrt_sigma(self) -> np.ndarray:
        """R = sqrt(Σ), symmetric PSD: B (B/√λ)ᵀ = V diag(√λ) Vᵀ."""
        return self.factor @ (self.factor / self.sqrt_eigenvalues).T

    def congruence_lower(self, sigma1: np.ndarray) -> np.ndarray:
        """FᵀΣ1F for the reference's factor F (L if available, else B), valid in its **lower triangle**
        (what the symmetric eigensolver reads): its eigenvalues are the nonzero eigenvalues of Σ1Σ
        (symmetric ``sigma1`` assumed)."""
        sigma1 = np.asarray(sigma1, np.float64)
        if self.cholesky is not None:
            from scipy.linalg.lapack import dsygst

            # LAPACK's Lᵀ A L for symmetric A (itype 2): half the work of two triangular products. Σ1 is
            # symmetric, so its C-ordered buffer is already the Fortran-ordered matrix (no copy).
            out, info = dsygst(sigma1.T, self.cholesky, itype=2, lower=1)
            if info != 0:
                raise np.linalg.LinAlgError(f"dsygst failed (info={info})")
            return out
        b = self.factor
        return b.T @ (sigma1 @ b)

    def project(self, xc: np.ndarray) -> np.ndarray:
        """Z = X F (N, r) for centred samples X (N, d): ZZᵀ = XΣXᵀ and ZᵀZ = Fᵀ(XᵀX)F."""
        if self.cholesky is not None:
            from scipy.linalg.blas import dtrmm

            xt = np.asarray(xc, np.float64).T  # C-ordered X → Fortran-ordered Xᵀ without a copy
            return dtrmm(1.0, self.cholesky, xt, lower=1, trans_a=1).T  # (Lᵀ Xᵀ)ᵀ = X L
        return np.asarray(xc, np.float64) @ self.factor


def prepare_reference(mu: np.ndarray, sigma: np.ndarray) -> PreparedReference:
    """Prepare N(μ, Σ) for :func:`frechet_distance_prepared` / :func:`frechet_distance_to_reference` /
    :func:`frechet_distance_resampled`: one symmetric eigendecomposition (and a Cholesky factorisation)
    of Σ, O(d³), done once."""
    mu = np.atleast_1d(np.asarray(mu, np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, np.float64))
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(f"feature dimensions differ: mean {mu.shape} vs covariance {sigma.shape}")
    sym = (sigma + sigma.T) / 2.0
    w, v = np.linalg.eigh(sym)
    keep = w > max(float(w[-1]), 0.0) * d * np.finfo(np.float64).eps
    s = np.sqrt(w[keep])
    factor = np.ascontiguousarray(v[:, keep] * s)
    chol = None
    if keep.all() and w[0] > float(w[-1]) * 1e-12:  # well inside the PD cone: Cholesky is safe and accurate
        try:
            chol = np.asfortranarray(np.linalg.cholesky(sym))
        except np.linalg.LinAlgError:
            chol = None
    return PreparedReference(mu=mu, trace=float(np.trace(sigma)), factor=factor, sqrt_eigenvalues=s, cholesky=chol)


def _as_prepared(mu2: np.ndarray | PreparedReference, sigma2: np.ndarray | None) -> PreparedReference:
    if isinstance(mu2, PreparedReference):
        return mu2
    if sigma2 is None:
        raise ValueError("give the reference as (mu, sigma) or as a PreparedReference")
    return prepare_reference(mu2, sigma2)


_SINGLE_THREAD_EIG_MIN = 256  # below this size the eigensolver is cheap whatever the threads


def _sum_sqrt_eigvalsh(m: np.ndarray) -> float:
    """Σ sqrt(λ) over the eigenvalues of the symmetric PSD ``m``, read from its lower triangle
    (rounding negatives clipped to 0)."""
    if m.size == 0:
        return 0.0
    if m.shape[0] >= _SINGLE_THREAD_EIG_MIN:
        with single_thread_blas_when_oversubscribed():
            eig = np.linalg.eigvalsh(m, UPLO="L")
    else:
        eig = np.linalg.eigvalsh(m, UPLO="L")
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def trace_sqrt_product_prepared(sigma1: np.ndarray, ref: PreparedReference) -> float:
    """``tr sqrt(Σ1 Σ_ref)`` = Σ sqrt(eigvalsh(Fᵀ Σ1 F)) for a factor FFᵀ = Σ_ref (module docstring)."""
    return _sum_sqrt_eigvalsh(ref.congruence_lower(sigma1))


def frechet_distance_prepared(mu1: np.ndarray, sigma1: np.ndarray, ref: PreparedReference) -> float:
    """:func:`frechet_distance` of N(μ1, Σ1) against a prepared reference (symmetric eigenvalue form)."""
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    if mu1.shape != ref.mu.shape or sigma1.shape != (ref.dim, ref.dim):
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {ref.mu.shape}")
    diff = mu1 - ref.mu
    return float(diff @ diff + np.trace(sigma1) + ref.trace - 2.0 * trace_sqrt_product_prepared(sigma1, ref))


def frechet_distance_to_reference(x: np.ndarray, ref: PreparedReference) -> float:
    """FD of samples ``x`` (N, d) against a prepared reference, from the cheapest of the N×N
    (XB)(XB)ᵀ, the r×r (XB)ᵀ(XB) or Bᵀ(XᵀX)B (the same nonzero eigenvalues; module docstring)."""
    x = flat2d(x)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {n}")
    if d != ref.dim:
        raise ValueError(f"feature dimensions differ: {d} vs {ref.dim}")
    mu1 = x.mean(axis=0)
    r = ref.rank
    # multiply-adds of each route (a Gram product XᵀX costs half a general one, a triangular one too)
    f = d * r / 2 if ref.cholesky is not None else d * r  # X F per row of X
    gram_small = n * f + n * n * r / 2  # Z = XF, then Z Zᵀ (n×n)
    gram_z = n * f + n * r * r / 2  # Z = XF, then Zᵀ Z (r×r)
    via_cov = n * d * d / 2 + 2 * d * f  # Σ1 = XᵀX, then Fᵀ Σ1 F (r×r)
    if via_cov < min(gram_small, gram_z):
        # Σ1 = (XᵀX − n μμᵀ)/(n−1) from the uncentred Gram product: no centred N×d copy (memory and a
        # pass over it); in float64 the cancellation costs ~eps·|μ|²/var, far below the 1e-6 convention.
        sigma1 = x.T @ x  # x is float64 (flat2d)
        sigma1 -= n * np.outer(mu1, mu1)
        sigma1 /= n - 1
        tr1 = float(np.trace(sigma1))
        tr = _sum_sqrt_eigvalsh(ref.congruence_lower(sigma1))
    else:
        xc = x - mu1
        tr1 = float(np.vdot(xc, xc)) / (n - 1)
        z = ref.project(xc)
        tr = _sum_sqrt_eigvalsh((z @ z.T if n <= r else z.T @ z) / (n - 1))
    diff = mu1 - ref.mu
    return float(diff @ diff + tr1 + ref.trace - 2.0 * tr)


def frechet_distance_resampled(x: np.ndarray, ref: PreparedReference, indices: Iterable[np.ndarray]) -> np.ndarray:
    """FD of ``x[idx]`` against a prepared reference for every index array (bootstrap resamples with
    repeats, or subsets): equal to ``frechet_distance_from_samples(x[idx], μ, Σ)`` each, but Z = X₀B is
    computed once (X₀ = x centred on its own mean) and each replicate works on Z's rows only: a row
    drawn c times enters the centred Gram matrix once, scaled by √c (same eigenvalues, smaller matrix)."""
    x = flat2d(x)
    n, d = x.shape
    if d != ref.dim:
        raise ValueError(f"feature dimensions differ: {d} vs {ref.dim}")
    m0 = x.mean(axis=0)
    x0 = x - m0
    z = np.ascontiguousarray(ref.project(x0))
    sq = np.einsum("ij,ij->i", x0, x0)
    d0 = m0 - ref.mu
    r = ref.rank
    out = []
    for idx in indices:
        idx = np.asarray(idx, dtype=np.int64)
        k = idx.shape[0]
        if k < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {k}")
        counts = np.bincount(idx, minlength=n)
        rows = np.flatnonzero(counts)
        c = counts[rows].astype(np.float64)
        shift = (c @ x0[rows]) / k  # resample mean − full-sample mean
        zbar = (c @ z[rows]) / k
        tr1 = (float(c @ sq[rows]) - k * float(shift @ shift)) / (k - 1)
        y = (z[rows] - zbar) * np.sqrt(c)[:, None]
        tr = _sum_sqrt_eigvalsh((y @ y.T if rows.size <= r else y.T @ y) / (k - 1))
        diff = d0 + shift
        out.append(float(diff @ diff + tr1 + ref.trace - 2.0 * tr))
    return np.asarray(out, dtype=np.float64)


class _CachedReference:
    """A reference's Gaussian fit and, once asked for, its prepared form."""

    __slots__ = ("mu", "prepared", "sigma")

    def __init__(self, mu: np.ndarray, sigma: np.ndarray) -> None:
        self.mu, self.sigma = mu, sigma
        self.prepared: PreparedReference | None = None


_REF_CACHE: OrderedDict[str, _CachedReference] = OrderedDict()
_REF_CACHE_SIZE = 2  # a d=2048 entry holds ~100 MB (Σ, B, L); a run rarely has more than two FD references


def clear_reference_cache() -> None:
    """Forget the cached reference fits and prepared references (benchmarks time cold starts with it)."""
    _REF_CACHE.clear()


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _cached_reference(ref: dict[str, np.ndarray], key: str) -> _CachedReference:
    if key + MU_SUFFIX in ref and key + SIGMA_SUFFIX in ref:
        source = (np.asarray(ref[key + MU_SUFFIX]), np.asarray(ref[key + SIGMA_SUFFIX]))
    elif key in ref:
        source = (np.asarray(ref[key]),)
    else:
        raise ValueError(
            f"reference has neither {key!r} nor {key + MU_SUFFIX!r}/{key + SIGMA_SUFFIX!r}; got {sorted(ref)}"
        )
    digest = _digest(*source)
    hit = _REF_CACHE.get(digest)
    if hit is None:
        hit = _CachedReference(*reference_stats(ref, key))
        _REF_CACHE[digest] = hit
        while len(_REF_CACHE) > _REF_CACHE_SIZE:
            _REF_CACHE.popitem(last=False)
    else:
        _REF_CACHE.move_to_end(digest)
    return hit


def reference_stats(ref: dict[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of the reference: precomputed ``key.mu``/``key.sigma`` if present, else fitted."""
    if key + MU_SUFFIX in ref and key + SIGMA_SUFFIX in ref:
        return np.asarray(ref[key + MU_SUFFIX], np.float64), np.asarray(ref[key + SIGMA_SUFFIX], np.float64)
    if key not in ref:
        raise ValueError(
            f"reference has neither {key!r} nor {key + MU_SUFFIX!r}/{key + SIGMA_SUFFIX!r}; got {sorted(ref)}"
        )
    return gaussian_stats(ref[key])


def _ref(inputs: MetricInputs, key: str, metric: str) -> _CachedReference:
    if inputs.ref is None:
        raise ValueError(f"metric {metric!r} needs reference features, none were given")
    return _cached_reference(inputs.ref, key)


def _fd_value(gen: np.ndarray, entry: _CachedReference, n_boot: int) -> float:
    """One FD. N ≤ d with no bootstrap: the direct low-rank path (O(N d²), no O(d³) step at all); otherwise
    the symmetric form against the prepared reference (prepared once, cached). The choice depends on the
    inputs only, never on the cache, so a value does not change with what ran before it."""
    if n_boot == 0 and gen.shape[0] <= gen.shape[1]:
        return frechet_distance_from_samples(gen, entry.mu, entry.sigma)
    if entry.prepared is None:
        entry.prepared = prepare_reference(entry.mu, entry.sigma)
    return frechet_distance_to_reference(gen, entry.prepared)


def compute_fd(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = common.feature_key(inputs)
    gen = flat2d(gen_array(inputs, key, "fd"))
    entry = _ref(inputs, key, "fd")
    n_boot = int(option(inputs, "bootstrap", DEFAULT_BOOTSTRAP if gen.shape[1] <= AUTO_BOOTSTRAP_MAX_DIM else 0))
    value = _fd_value(gen, entry, n_boot)
    out = MetricValue(value, extra={"n_gen": int(gen.shape[0]), "dim": int(gen.shape[1])})
    if n_boot > 0:
        # Resample the generated set only: the reference is fixed in a study, its sampling error shared.
        # Replicates are recentred on the estimate (see evalkit.metrics.resampling.percentile_interval).
        idx = bootstrap_indices(gen.shape[0], n_boot, int(option(inputs, "bootstrap_seed", inputs.seed)))
        reps = frechet_distance_resampled(gen, entry.prepared, idx)
        out.ci_low, out.ci_high = percentile_interval(
            reps, float(option(inputs, "confidence", 0.95)), recentre_on=value
        )
        out.extra["bootstrap"] = n_boot
    return {"fd": out}


register_metric(
    MetricDef(
        name="fd",
        reference="clean-fid, torch-fidelity, pytorch-fid, torchmetrics FID; dgm-eval for FD_DINOv2",
        paper="Heusel et al. 2017; Stein et al. 2023 (FD_DINOv2)",
        needs_reference=True,
        higher_is_better={"fd": False},
        compute=compute_fd,
        check=needs_samples(2, "FD fits a covariance to the generated features"),
        options={
            "read": "which extractor output to read (default features, or image_embeds for CLIP extractors)",
            "bootstrap": "bootstrap resamples for the CI (0: none)",
            "bootstrap_seed": "seed of the resamples (default: the cell seed)",
            "confidence": "CI level (default 0.95)",
        },
        description="Fréchet distance of Gaussian fits (FID on Inception pool3); float64 eigenvalue form; "
        "bootstrap CI over generated samples.",
    )
)
