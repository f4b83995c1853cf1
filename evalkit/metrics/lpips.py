"""LPIPS metrics from the per-image LPIPS embedding φ of :mod:`evalkit.features.lpips_net`, where
LPIPS(x, y) = ||φ(x) - φ(y)||² (exactly the lpips package's distance; see that module).

- ``lpips_diversity``: mean pairwise LPIPS among the samples of one condition (class label or prompt;
  all samples form one condition if there are none), averaged over conditions with equal weight. At most
  ``max_per_condition`` samples (default 32, the first ones) per condition enter the pairs.
- ``lpips_paired``: LPIPS of generated sample i against reference image i (image-to-image suites), or, in a task
  suite (``MetricInputs.source`` given), against sample i's own source image. Always the whole image, masks or not
  (LPIPS's embedding mixes every pixel; ``extra["region"]`` says ``whole``, and option ``region`` is refused).

CIs: seeded percentile bootstrap — over samples within each condition (stratified, distinct-index
pairs only) for diversity, over pairs for paired.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.metrics._common import MetricInputError, flat2d, gen_array, option, ref_array
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.resampling import DEFAULT_RESAMPLES, bootstrap_mean_ci, percentile_interval

DEFAULT_MAX_PER_CONDITION = 32


def pairwise_sq_dists(phi: np.ndarray) -> np.ndarray:
    """(k, k) squared Euclidean distances in float64."""
    x = flat2d(phi)
    sq = np.einsum("ij,ij->i", x, x)
    d = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0)


def paired_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = flat2d(a), flat2d(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            "paired LPIPS needs generated and reference images of the same size "
            f"(embedding sizes {a.shape[1]} vs {b.shape[1]})"
        )
    return ((a - b) ** 2).sum(axis=1)


def condition_groups(n: int, labels: np.ndarray | None, prompts: list[str] | None) -> list[np.ndarray]:
    if labels is not None:
        keys = [str(v) for v in np.asarray(labels)[:n]]
    elif prompts is not None:
        keys = list(prompts)[:n]
    else:
        return [np.arange(n)]
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return [np.array(v) for _, v in sorted(groups.items())]


def _mean_offdiag(d: np.ndarray, idx: np.ndarray) -> float:
    sub = d[np.ix_(idx, idx)]
    distinct = idx[:, None] != idx[None, :]
    return float(sub[distinct].mean()) if distinct.any() else float("nan")


def compute_lpips_diversity(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = option(inputs, "read", "lpips")
    phi = gen_array(inputs, key, "lpips_diversity")
    cap = int(option(inputs, "max_per_condition", DEFAULT_MAX_PER_CONDITION))
    groups = [g[:cap] for g in condition_groups(len(phi), inputs.labels, inputs.prompts) if len(g) >= 2]
    if not groups:
        raise ValueError("lpips_diversity needs at least one condition with 2 or more samples")
    mats = [pairwise_sq_dists(phi[g]) for g in groups]
    value = float(np.mean([_mean_offdiag(d, np.arange(len(d))) for d in mats]))
    out = MetricValue(value, extra={"conditions": len(groups), "per_condition": [len(g) for g in groups]})
    n_boot = int(option(inputs, "bootstrap", DEFAULT_RESAMPLES))
    if n_boot > 0:
        rng = np.random.default_rng(inputs.seed)
        reps = [np.nanmean([_mean_offdiag(d, rng.integers(0, len(d), len(d))) for d in mats]) for _ in range(n_boot)]
        out.ci_low, out.ci_high = percentile_interval(reps, float(option(inputs, "confidence", 0.95)))
    return {"lpips_diversity": out}


def check_lpips_diversity(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: pairs need a condition holding two or more samples (as :func:`compute_lpips_diversity`
    groups them), and ``max_per_condition`` must let two of them in."""
    problems = _resampling_problems(options)
    cap = options.get("max_per_condition", DEFAULT_MAX_PER_CONDITION)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 2:
        problems.append(f"option max_per_condition: expected an integer ≥ 2 (a pair needs two samples); got {cap!r}")
    if not any(len(g) >= 2 for g in condition_groups(ctx.samples, ctx.labels, ctx.prompts)):
        problems.append(_no_repeats(ctx))
    return problems


def _no_repeats(ctx: MetricContext) -> str:
    head = "needs a condition with 2 or more samples (it averages LPIPS over pairs of samples of one condition)"
    if ctx.prompts is not None:
        k = len(set(ctx.prompts))
        return (
            f"{head}, but each of the {ctx.samples} samples has its own prompt ({k} distinct); set "
            f"conditions.per_prompt ≥ 2 or samples > {k}"
        )
    if ctx.labels is not None:
        k = len(set(np.asarray(ctx.labels).tolist()))
        return f"{head}, but {ctx.samples} samples over {k} classes give each class at most one; set samples > {k}"
    return f"{head}, but a cell has {ctx.samples} sample; set samples ≥ 2"


def check_lpips_paired(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    return _resampling_problems(options)


def _resampling_problems(options: dict[str, Any]) -> list[str]:
    problems = []
    boot, conf = options.get("bootstrap", DEFAULT_RESAMPLES), options.get("confidence", 0.95)
    if isinstance(boot, bool) or not isinstance(boot, int) or boot < 0:
        problems.append(f"option bootstrap: expected an integer ≥ 0 (0: no CI); got {boot!r}")
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 < conf < 1:
        problems.append(f"option confidence: expected a number between 0 and 1 (e.g. 0.95); got {conf!r}")
    return problems


def partner_array(inputs: MetricInputs, key: str, metric: str) -> tuple[np.ndarray, str]:
    """What generated sample i is compared with, and which it is: in a task suite each sample's own source
    (``MetricInputs.source``, aligned: one per generated sample), else reference image i (``"reference"``)."""
    if inputs.source is None:
        return ref_array(inputs, key, metric), "reference"
    if key not in inputs.source:
        raise MetricInputError(f"metric {metric!r} reads source output {key!r}; got {sorted(inputs.source)}")
    src, n_gen = np.asarray(inputs.source[key]), len(gen_array(inputs, key, metric))
    if len(src) != n_gen:
        raise MetricInputError(
            f"metric {metric!r} pairs each sample with its source image, so it needs one source per sample; got "
            f"{len(src)} source rows for {n_gen} generated samples"
        )
    return src, "source"


def task_extra(inputs: MetricInputs, against: str, region: str) -> dict[str, str]:
    """``against`` and ``region`` in a task suite (source or mask given); {} otherwise, as before tasks existed."""
    if inputs.source is None and inputs.mask is None:
        return {}
    return {"against": against, "region": region}


def refuse_region(inputs: MetricInputs, metric: str) -> None:
    if "region" in inputs.options:
        raise MetricInputError(
            f"metric {metric!r} always scores the whole image, so it takes no option region (psnr and ssim do); "
            f"got region: {inputs.options['region']!r}"
        )


def compute_lpips_paired(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = option(inputs, "read", "lpips")
    refuse_region(inputs, "lpips_paired")
    gen = gen_array(inputs, key, "lpips_paired")
    other, against = partner_array(inputs, key, "lpips_paired")
    n = min(len(gen), len(other))
    d = paired_sq_dists(gen[:n], other[:n])
    out = MetricValue(float(d.mean()), extra={"pairs": int(n), **task_extra(inputs, against, "whole")})
    n_boot = int(option(inputs, "bootstrap", DEFAULT_RESAMPLES))
    if n_boot > 0 and n > 1:
        out.ci_low, out.ci_high = bootstrap_mean_ci(
            d, n_resamples=n_boot, seed=inputs.seed, confidence=float(option(inputs, "confidence", 0.95))
        )
    return {"lpips_paired": out}


register_metric(
    MetricDef(
        name="lpips_diversity",
        reference="lpips (PerceptualSimilarity)",
        paper="Zhang et al. 2018",
        needs_reference=False,
        higher_is_better={"lpips_diversity": True},
        compute=compute_lpips_diversity,
        check=check_lpips_diversity,
        options={
            "read": "which extractor output to read (default lpips)",
            "max_per_condition": "samples used per condition (default 32)",
            "bootstrap": "bootstrap resamples for the CI (0: none; default 1000)",
            "confidence": "CI level (default 0.95)",
        },
        default_extractor="lpips-alex",
        description="Mean pairwise LPIPS among samples of one condition (diversity), averaged over conditions.",
    )
)
register_metric(
    MetricDef(
        name="lpips_paired",
        reference="lpips (PerceptualSimilarity)",
        paper="Zhang et al. 2018",
        needs_reference=True,
        higher_is_better={"lpips_paired": False},
        compute=compute_lpips_paired,
        check=check_lpips_paired,
        reads_source=True,
        options={
            "read": "which extractor output to read (default lpips)",
            "bootstrap": "bootstrap resamples for the CI (0: none; default 1000)",
            "confidence": "CI level (default 0.95)",
        },
        default_extractor="lpips-alex",
        description="LPIPS between generated sample i and reference image i, or its source image in a task suite "
        "(whole image).",
    )
)
