"""The metric contract and its registry.

Metrics are pure functions of features: they never run networks. Each metric declares whether it
needs reference features and which direction is better, and owns its uncertainty: per-sample terms
(``per_sample``) and bootstrap replicates (``replicates``, with a generic fallback in
:func:`evalkit.metrics.resampling.metric_replicates`). One metric may produce several rows (``pr`` gives
precision, recall, density and coverage).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalkit.registry import METRICS


@dataclass
class MetricValue:
    value: float
    std: float | None = None  # spread over subsets/splits where the metric defines one (KID, IS)
    ci_low: float | None = None
    ci_high: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MetricInputs:
    """What a metric may read. ``gen``/``ref`` map extractor output names to (N, ...) arrays."""

    gen: dict[str, np.ndarray]
    ref: dict[str, np.ndarray] | None = None
    labels: np.ndarray | None = None  # class label per generated sample, if class-conditional
    prompts: list[str] | None = None  # prompt per generated sample, if text-conditional
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    # The training split's features (suite ``reference.train``), for metrics asking whether samples copy training data.
    train: dict[str, np.ndarray] | None = None
    # Image-conditioned tasks (suite ``task``), aligned with ``gen`` (sample i's source is source i mod n): ``source``
    # the same extractor's outputs on each sample's source image; ``mask`` uint8 (N, 1, H, W), 1 where the model
    # generated (inpaint); ``control`` uint8 (N, 3, h, w), the control map or low-resolution input, made by detector
    # ``control_spec`` ({"detector": name, **options}, :mod:`evalkit.imageops.detectors`; None: given as files).
    source: dict[str, np.ndarray] | None = None
    mask: np.ndarray | None = None
    control: np.ndarray | None = None
    control_spec: dict[str, Any] | None = None


@dataclass(frozen=True)
class MetricContext:
    """What a suite says about a metric's inputs before anything runs (for :attr:`MetricDef.check`): the
    samples per cell, each sample's class label or prompt as the runner will assign them (None where the
    suite has none), the suite's ``conditions`` spec, and whether a reference set is configured."""

    samples: int
    labels: np.ndarray | None = None
    prompts: list[str] | None = None
    conditions: dict[str, Any] | None = None
    reference: bool = False


@dataclass(frozen=True)
class MetricDef:
    name: str
    needs_reference: bool
    higher_is_better: dict[str, bool]  # per produced row name, e.g. {"precision": True, "recall": True}
    compute: Callable[[MetricInputs], dict[str, MetricValue]]
    default_extractor: str | None = None
    description: str = ""
    # The options a suite may set (``metrics[].options``): name → meaning. Suite validation refuses any other name,
    # with a did-you-mean. None (a plugin that declares none) leaves its options unchecked; {} takes no options.
    options: dict[str, str] | None = None
    # For rows that are means of independent per-generated-sample terms (precision, density): those terms,
    # so that a row's sampling noise follows from one run (var/n) instead of only from K seed sets.
    per_sample: Callable[[MetricInputs], dict[str, np.ndarray]] | None = None
    # A fast exact path for bootstrap replicates: given (B, n) resample indices of the generated samples, each
    # row's value on every resample (row name → (B,) array), equal to ``compute`` on ``gen[idx[b]]``. May return
    # None where no fast path applies; callers use :func:`evalkit.metrics.resampling.metric_replicates`.
    replicates: Callable[[MetricInputs, np.ndarray], dict[str, np.ndarray] | None] | None = None
    # Preconditions checked before a run generates anything (``evalkit run`` and ``--dry-run``): given the suite's
    # options for this metric and a :class:`MetricContext`, every problem as a line saying what to change (empty:
    # none). Without it, a metric that cannot work on the suite's samples fails only after they were generated.
    check: Callable[[dict[str, Any], MetricContext], list[str]] | None = None
    # Optional outputs of the extractor that it computes only when a metric reads them (``aesthetic``: the LAION
    # head on ``clip-vit-l14``'s embeddings); the suite passes them to the extractor as ``heads`` (one forward).
    extractor_outputs: tuple[str, ...] = ()
    # What the numbers are checked against (the reference implementation) and where the metric is defined,
    # for ``evalkit list metrics`` and the README's metrics table.
    reference: str = ""
    paper: str = ""
    # Needs the model's training split (suite ``reference.train``) beside the held-out reference: the preflight
    # refuses a suite that uses it without one. Its features reach every metric as ``MetricInputs.train``.
    needs_train: bool = False
    # Reads the training split where the suite has one, and the reference otherwise (``memorisation``).
    uses_train: bool = False
    # Compares each sample with its source image in a task suite (``MetricInputs.source``/``mask``/``control``):
    # there the source stands in for the reference set, so a suite with ``conditions.images`` needs no reference.
    reads_source: bool = False
    # Reads the task's control map (``control_fidelity``): scored only in the cells whose task has one (upscale,
    # controlnet); an img2img cell of the same suite gives no row for it.
    needs_control: bool = False

    @property
    def reads_train(self) -> bool:
        """Whether ``MetricInputs.train`` changes this metric's value (callers load the split only then)."""
        return self.needs_train or self.uses_train


# "(default X)" or "(...; default X)" in an option's meaning: where MetricDef.options states each default, once.
_DEFAULT = re.compile(r"\s*\(default:?\s+([^()]*)\)|;\s*default:?\s+([^()]*)(?=\))")


def option_help(defn: MetricDef) -> list[tuple[str, str | None, str]]:
    """``(option, default, meaning)`` for each option ``defn`` declares (``evalkit list metrics -v``), the default
    read off the meaning's ``(default X)`` (None where it states none); [] for a metric that declares no options."""
    out = []
    for name, meaning in (defn.options or {}).items():
        m = _DEFAULT.search(meaning)
        default = None if m is None else (m.group(1) or m.group(2)).strip()
        text = meaning if m is None else meaning[: m.start()] + meaning[m.end() :]
        out.append((name, default, text.strip()))
    return out


def register_metric(defn: MetricDef) -> MetricDef:
    return METRICS.register(defn.name, defn)


def available_metrics() -> list[str]:
    return METRICS.names()


def get_metric(name: str) -> MetricDef:
    return METRICS.get(name)
