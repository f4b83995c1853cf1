"""Class accuracy of class-conditional samples: does a classifier see the digit that was asked for?

Reads a classifier's ``logits`` (e.g. mnist-net's) and the requested label of each sample. Value =
top-1 agreement; the 95% interval is Wilson's score interval for a binomial proportion, which stays
inside [0, 1] and behaves near 100% where the normal approximation does not.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evalkit.metrics._common import MetricInputError, flat2d, gen_array
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n``."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def compute_class_acc(inputs: MetricInputs) -> dict[str, MetricValue]:
    if inputs.labels is None:
        raise MetricInputError("metric 'class_acc' needs class-conditional samples (conditions: {classes: ...})")
    logits = flat2d(gen_array(inputs, "logits", "class_acc"))
    labels = np.asarray(inputs.labels)
    if len(labels) != len(logits):
        raise MetricInputError(f"metric 'class_acc': {len(logits)} logits for {len(labels)} labels")
    hits = int((logits.argmax(axis=1) == labels).sum())
    lo, hi = wilson_interval(hits, len(labels))
    return {"class_acc": MetricValue(hits / len(labels), ci_low=lo, ci_high=hi, extra={"hits": hits})}


def check_class_acc(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: the samples have class labels (:func:`compute_class_acc` compares the classifier with them)."""
    if ctx.labels is not None:
        return []
    has = "prompts, not classes" if ctx.prompts is not None else "no conditions"
    return [
        "needs class-conditional samples (it compares each sample's requested class with the classifier's); "
        f"the suite has {has}; set conditions.classes (e.g. conditions: {{classes: 10}})"
    ]


register_metric(
    MetricDef(
        name="class_acc",
        reference="scipy.stats binomtest (Wilson interval)",
        paper="Wilson 1927 (interval)",
        needs_reference=False,
        higher_is_better={"class_acc": True},
        compute=compute_class_acc,
        check=check_class_acc,
        options={},
        description="fraction of class-conditional samples a classifier assigns to the requested class (Wilson 95% CI)",
    )
)
