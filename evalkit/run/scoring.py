"""Scoring a cell's features: each metric of the suite on its own, so one failing metric costs only its rows.

A metric that raises (a bug, too few distinct samples, a degenerate covariance) gives one row per row name it
declares (``MetricDef.higher_is_better``) with ``value`` NaN and ``error`` holding a one-line message; the
cell's other metrics keep their values, the cell counts as done (its samples and features are stored), and
the run exits 1 naming the failed metrics. Readers see a failed metric as a NaN value with an ``error``: the
gate's verdict on a non-finite value is an error.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from evalkit.features.base import Extractor
from evalkit.metrics.base import MetricDef, MetricInputs, get_metric
from evalkit.store import split_features
from evalkit.suite import THROUGHPUT, MetricSpec
from evalkit.suite.tasks import reads_crops, row_extractor

MASKED = "@masked"  # outputs (and sources) read on masked crops (:mod:`evalkit.run.task_inputs`), and their rows

ERROR_CHARS = 300  # a message longer than this is cut: it lives in every failed row


def score(
    metrics: list[MetricSpec],
    features: dict[str, np.ndarray],
    reference: dict[str, dict[str, np.ndarray]],
    extractors: dict[str, Extractor],
    *,
    train: dict[str, dict[str, np.ndarray]] | None = None,
    labels: np.ndarray | None,
    prompts: list[str] | None,
    seed: int,
    extras: dict[str, dict[str, Any]] | None = None,
    task: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Each metric of the suite on the cell's features → partial rows (metric, value, CI, extractor identity,
    error: "" or why the metric failed). ``reference`` and ``train`` (the suite's training split, None where it has
    none) are ``{extractor: {output: array}}``; each metric gets its extractor's as ``MetricInputs.ref``/``train``.
    ``extras``, when given, receives each row's ``MetricValue.extra`` that is plain JSON (``{extractor/row: extra}``:
    e.g. ``memorisation``'s closest pairs, for a report), the rest being left out. ``task`` (a task cell):
    ``{"source": {extractor: {output: array}}, "mask", "control", "control_spec"}`` aligned with the samples; each
    metric gets its extractor's source outputs and the rest (:attr:`MetricInputs.source` etc.). A metric with a
    ``region`` names its rows' extractor ``<extractor>@<region>``; a mask's region (masked, unmasked) is scored only
    in the cells that have masks."""
    by_extractor = split_features(features)
    rows: list[dict[str, Any]] = []
    for spec in metrics:
        if spec.name == THROUGHPUT:
            continue
        region, mdef = spec.options.get("region"), get_metric(spec.name)
        masked = task is not None and task.get("mask") is not None
        if region in ("masked", "unmasked") and not masked:
            continue  # a region of the mask: scored only in the cells that have masks (inpainting)
        if mdef.needs_control and task is not None and task.get("control") is None:
            continue  # e.g. control_fidelity in an img2img cell of a suite whose upscale cells have controls
        ex = extractors[spec.extractor]
        crop = reads_crops(spec.options, mdef.reads_source)  # masked crops, compared with the sources' crops
        name = row_extractor(spec.extractor, spec.options)  # <extractor>@<region>: one name per spec, every cell
        identity = {"extractor": name, "weights_id": ex.weights_id, "mode": ex.mode}
        inputs = MetricInputs(
            gen=by_extractor.get(name if crop else spec.extractor, {}),
            ref=task["source_sets"].get(name) if crop and task else reference.get(spec.extractor),
            train=None if train is None else train.get(spec.extractor),
            labels=labels,
            prompts=prompts,
            seed=seed,
            options=spec.options,
            **({} if task is None else _task_fields(task, spec.extractor)),
        )
        try:
            rows += _rows(mdef, inputs, identity, extras)
        except Exception as e:  # this metric only: the others, and the cell's features, are kept
            rows += failed_rows(mdef, e, identity)
    return rows


def add_text_embeddings(
    features: dict[str, np.ndarray], extractors: dict[str, Extractor], prompts: list[str] | None
) -> None:
    """Per-sample text embeddings (``<extractor>/text_embeds``) from extractors that encode text, once per prompt."""
    if prompts is None:
        return
    for name, ex in extractors.items():
        encode = getattr(ex, "encode_text", None)
        if encode is not None:
            unique = sorted(set(prompts))
            table = dict(zip(unique, np.asarray(encode(unique))))
            features[f"{name}/text_embeds"] = np.stack([table[p] for p in prompts])


def _task_fields(task: dict[str, Any], extractor: str) -> dict[str, Any]:
    return {
        "source": task["source"].get(extractor),
        "mask": task.get("mask"),
        "control": task.get("control"),
        "control_spec": task.get("control_spec"),
    }


def _rows(
    mdef: MetricDef, inputs: MetricInputs, identity: dict[str, str], extras: dict[str, Any] | None
) -> list[dict[str, Any]]:
    values = mdef.compute(inputs)
    if extras is not None:
        extras.update({f"{identity['extractor']}/{m}": v.extra for m, v in values.items() if _plain(v.extra)})
    return [
        {
            "metric": metric,
            "value": float(val.value),
            "std": _num(val.std),
            "ci_low": _num(val.ci_low),
            "ci_high": _num(val.ci_high),
            **identity,
            "error": "",
        }
        for metric, val in values.items()
    ]


def _plain(extra: dict[str, Any]) -> bool:
    """A non-empty extra that JSON keeps as it is (no numpy values, no NaN)."""
    try:
        return bool(extra) and json.loads(json.dumps(extra, allow_nan=False)) == extra
    except (TypeError, ValueError):
        return False


def failed_rows(mdef: MetricDef, error: BaseException, identity: dict[str, str]) -> list[dict[str, Any]]:
    """The rows a metric would have given, each with value NaN and the error as one line."""
    message = error_line(error)
    nan = math.nan
    names = list(mdef.higher_is_better) or [mdef.name]
    return [
        {"metric": m, "value": nan, "std": nan, "ci_low": nan, "ci_high": nan, **identity, "error": message}
        for m in names
    ]


def error_line(error: BaseException) -> str:
    """``Type: message`` on one line, at most :data:`ERROR_CHARS` characters."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)
