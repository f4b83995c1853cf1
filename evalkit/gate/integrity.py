"""Is the run folder what its run.json says? Checked before a run is judged; every 'no' is exit 2.

A check must judge the cells of the config in run.json and nothing else. Two ways a folder can say
otherwise, both named by :func:`integrity_problems`:

- *stale cells*: finished cells made by another config (an interrupted run of another suite, or of the
  same suite with other ``samples``, into the same folder): the reader marks those whose samples, seed or
  grid point differ (:attr:`RunData.stale`); here each cell's ``cell_hash`` is also recomputed from
  run.json's config, which catches another model implementation or options under the same name;
- an *export that disagrees*: results.parquet / results.csv changed since written, made by another
  config or other cells, or holding other values than the cells (:attr:`RunData.export_problems`). The
  verdict never reads the export, but a folder whose export says something else is not judged either.

The baseline's feature sidecar is checked here too (:func:`sidecar_problems`), before a suite is run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.gate.baseline import Baseline, CheckConfigError
from evalkit.metrics.base import get_metric
from evalkit.store import RunData
from evalkit.study.sources import uses_reference
from evalkit.suite import MetricSpec, ModelSpec, SamplerSpec, Suite

_SPECS = {"models": ModelSpec, "samplers": SamplerSpec, "metrics": MetricSpec}
SHOWN = 5  # cells named in one message


def suite_of_config(config: dict[str, Any]) -> Suite:
    """The :class:`Suite` whose ``to_config()`` is ``config`` (run.json's), to recompute its cell hashes."""
    known = {f.name for f in dataclasses.fields(Suite)}
    fields = {k: v for k, v in config.items() if k in known}
    for key, spec in _SPECS.items():
        fields[key] = [spec(**item) for item in config[key]]
    return Suite(**fields)


def expected_cell_hashes(config: dict[str, Any]) -> dict[str, str]:
    """cell_id → the cell hash a cell of this config carries in its cell.json."""
    suite = suite_of_config(config)
    return {c.cell_id: suite.cell_hash(c) for c in suite.cells()}


def stale_cells(run: RunData) -> dict[str, str]:
    """Cells in ``run`` that another config made: cell_id → why (the reader's findings and the cell hashes)."""
    out = dict(run.stale)
    try:
        expected = expected_cell_hashes(run.config)
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise CheckConfigError(
            [f"{run.root}/run.json: its config is not a suite config ({type(e).__name__}: {e})"]
        ) from None
    for cid, rec in run.cells.items():
        got = rec.get("cell_hash")
        if cid not in out and got is not None and cid in expected and got != expected[cid]:
            out[cid] = f"cell hash {got}, run.json's config gives {expected[cid]}"
    return out


def integrity_problems(run: RunData) -> list[str]:
    """Every reason the folder is not what run.json says (empty: it is)."""
    problems = []
    stale = stale_cells(run)
    if stale:
        named = [f"{c} ({why})" for c, why in sorted(stale.items())]
        problems.append(
            f"run folder {run.root} holds finished cells made by another config than its run.json "
            "(another suite, or other samples, run into the same folder and interrupted?): "
            + "; ".join(named[:SHOWN])
            + (f"; and {len(named) - SHOWN} more" if len(named) > SHOWN else "")
            + ". Run the suite of run.json into this folder again to recompute them, or use a new folder"
        )
    problems += [
        p + " (results come from the cells; run the suite into this folder again to rewrite the export, or delete it)"
        for p in run.export_problems
    ]
    return problems


def check_lengths(cell: str, features: dict[str, dict[str, np.ndarray]], n: int, where: str) -> None:
    """Per-sample features must have one row per sample: ``n``, as the run or the baseline says."""
    bad = sorted(f"{ex}/{out}: {len(a)}" for ex, outs in features.items() for out, a in outs.items() if len(a) != n)
    if bad:
        raise CheckConfigError(
            [f"{where}: features of cell {cell} do not have one row per sample (N={n}): " + ", ".join(bad[:SHOWN])]
        )


def sidecar_problems(baseline: Baseline) -> list[str]:
    """What is wrong with the baseline's feature sidecar, found without a run (empty: nothing, or no sidecar).

    Missing, unreadable, changed since written or not a plain npz (:meth:`Baseline.features`); and, inside it,
    a checked cell without its per-sample features, with another row count than the baseline's N, or no
    reference features for a metric that needs them — each of which would otherwise cost the paired CI
    only after the suite had run."""
    try:
        if baseline.features() is None:
            return []
    except CheckConfigError as e:
        return e.problems
    where, problems = f"baseline features {baseline.path.parent / baseline.features_file}", []
    fix = "re-make the baseline with `evalkit baseline`"
    for cell, ex in dict.fromkeys((e.cell, e.extractor) for e in baseline.entries):
        feats = baseline.cell_features(cell).get(ex)
        if not feats:
            problems.append(f"{where}: no features of cell {cell} ({ex}) for its entries: {fix}")
            continue
        try:
            check_lengths(cell, {ex: feats}, baseline.n, where)
        except CheckConfigError as e:
            problems += [f"{p}: {fix}" for p in e.problems]
    task = bool(baseline.config.get("task"))  # a task suite's source-compared metrics read no reference
    for ex in sorted({e.extractor for e in baseline.entries if _needs_reference(e.metric_def, task)}):
        if baseline.reference_features(ex) is None:
            problems.append(f"{where}: no reference features of {ex} (its metrics compare with them): {fix}")
    return problems


def _needs_reference(metric_def: str, task: bool = False) -> bool:
    try:
        return uses_reference(get_metric(metric_def), task)
    except EvalkitError:  # a plugin metric not installed here: the run names it when it matters
        return False
