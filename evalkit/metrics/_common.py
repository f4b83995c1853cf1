"""Small helpers shared by the metric modules (reading inputs, clear errors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from evalkit.errors import ConfigError
from evalkit.metrics.base import MetricContext, MetricInputs

# A reference given only as Gaussian statistics (``{"stats": "file.npz"}``) carries
# ``"<output>.mu"`` and ``"<output>.sigma"`` (and ``"<output>.n"``) instead of per-sample arrays.
MU_SUFFIX = ".mu"
SIGMA_SUFFIX = ".sigma"
N_SUFFIX = ".n"


class MetricInputError(ConfigError):
    """The features handed to a metric do not fit it (missing output, stats-only reference, ...)."""


def gen_array(inputs: MetricInputs, key: str, metric: str) -> np.ndarray:
    if key not in inputs.gen:
        raise MetricInputError(f"metric {metric!r} reads generated output {key!r}; got {sorted(inputs.gen)}")
    return np.asarray(inputs.gen[key])


def ref_array(inputs: MetricInputs, key: str, metric: str) -> np.ndarray:
    if inputs.ref is None:
        raise MetricInputError(f"metric {metric!r} needs reference features, none were given")
    if key not in inputs.ref:
        if key + MU_SUFFIX in inputs.ref:
            raise MetricInputError(
                f"metric {metric!r} needs per-sample reference features {key!r}, but the reference holds "
                "only mean/covariance statistics (a stats .npz serves FD only); use an image reference"
            )
        raise MetricInputError(f"metric {metric!r} reads reference output {key!r}; got {sorted(inputs.ref)}")
    return np.asarray(inputs.ref[key])


def option(inputs: MetricInputs, name: str, default):
    return inputs.options.get(name, default)


def feature_key(inputs: MetricInputs, default: str = "features") -> str:
    """The extractor output a feature metric (fd, kid, pr, vendi, ...) reads: the ``read`` option if given, else
    ``default`` where the generated features hold it, else ``image_embeds`` (a CLIP extractor's output, so that
    ``{name: fd, extractor: clip-vit-l14}`` is FD_CLIP without options), else ``default`` (which the error names)."""
    key = inputs.options.get("read")
    if key is not None:
        return str(key)
    if default not in inputs.gen and "image_embeds" in inputs.gen:
        return "image_embeds"
    return default


def flat2d(x: np.ndarray) -> np.ndarray:
    """(N, ...) → (N, D) float64."""
    x = np.asarray(x)
    return x.reshape(x.shape[0], -1).astype(np.float64, copy=False)


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (ddof=1) in float64."""
    x = flat2d(x)
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


# -- preflight checks (MetricDef.check): what a suite's options and samples must be, before anything runs ----------
def integer_option(options: dict[str, Any], name: str, default: int, minimum: int, why: str) -> tuple[int | None, str]:
    """``options[name]`` (else ``default``) if it is an integer ≥ ``minimum``: (value, ""); otherwise (None, the
    problem as a line naming the option, what it must be and why, and the value given)."""
    x = options.get(name, default)
    if isinstance(x, bool) or not isinstance(x, int) or x < minimum:
        return None, f"option {name}: expected an integer ≥ {minimum} ({why}); got {x!r}"
    return x, ""


def too_few_samples(ctx: MetricContext, minimum: int, why: str) -> list[str]:
    """[] if a cell's samples reach ``minimum``, else the problem: what is needed, why, the suite's value."""
    if ctx.samples >= minimum:
        return []
    return [f"needs samples ≥ {minimum} ({why}); the suite has samples: {ctx.samples}; set samples ≥ {minimum}"]


def needs_samples(minimum: int, why: str) -> Callable[[dict[str, Any], MetricContext], list[str]]:
    """A :attr:`MetricDef.check` for a metric whose only precondition is ``minimum`` samples per cell."""
    return lambda options, ctx: too_few_samples(ctx, minimum, why)
