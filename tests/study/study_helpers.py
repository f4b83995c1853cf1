"""Synthetic run folders for the study tests (imported by name: a second conftest.py would shadow tests/conftest.py).

Features are Gaussians written through the real RunStore, and every result row is computed by the real metric
code from them, so a comparison's numbers are consistent with what the cells hold. A cell's features are
``base + shift + jitter``: ``base`` depends on (seed, sample index) only, shared by every cell of the run as a
sampler's samples share their initial noise; ``shift`` (per sampler) is the cell's systematic difference and
``jitter`` its own per-sample variation. The reference is N(0, I).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.store import RunStore, tidy_frame
from evalkit.suite import parse_suite

DIM, N_REF = 8, 600
SUITE = {
    "name": "study",
    "models": [{"name": "m", "adapter": "zoo"}],
    "samplers": ["ddim", "euler", "heun"],
    "steps": [4, 8],
    "guidance": [1],
    "samples": 100,
    "seed": 0,
    "conditions": {"classes": 10},
    "reference": {"dataset": "mnist-heldout"},
    "extractor": "mnist-net",
    "metrics": ["fd", "kid", "pr", "throughput"],
}
EX = "mnist-net"


def suite(**changes):
    return parse_suite({**SUITE, **changes})


def reference(m: int = N_REF) -> dict[str, np.ndarray]:
    return {"features": np.random.default_rng(12345).normal(size=(m, DIM))}


def cell_features(s, cell, shift: float, jitter: float) -> dict[str, np.ndarray]:
    base = np.random.default_rng([s.seed, 7]).normal(size=(cell.n, DIM))
    own = np.random.default_rng([s.seed, zlib.crc32(cell.cell_id.encode())]).normal(size=(cell.n, DIM))
    return {"features": base + shift + jitter * own}


def write_run(
    root: Path,
    s=None,
    *,
    shifts: dict[str, float] | None = None,
    jitter: float = 0.3,
    run_id: str | None = None,
    timing_spread: bool = False,
) -> Path:
    """A finished run folder of suite ``s``; ``shifts[sampler]`` (default 0.3) moves that sampler's features.
    Cost: heun costs twice per step; s/image = 0.01 per NFE (with a ±10 % spread when ``timing_spread``)."""
    s = s or suite()
    store, ref, all_rows = RunStore(root), reference(), []
    for cell in s.cells():
        feats = cell_features(s, cell, (shifts or {}).get(cell.sampler.label, 0.3), jitter)
        nfe = cell.steps * (2 if cell.sampler.label == "heun" else 1)
        base = {**cell.describe(), "run_id": run_id or f"study-{s.seed}-{s.samples}", "n": cell.n, "seed": s.seed}
        base |= {"nfe": nfe, "s_per_image": 0.01 * nfe, "model_calls": nfe}
        rows = []
        for spec in s.metrics:
            if spec.name == "throughput":
                continue
            inputs = MetricInputs(gen=feats, ref=ref, seed=s.seed, options=spec.options)
            for row, v in get_metric(spec.name).compute(inputs).items():
                rows.append(
                    {**base, "metric": row, "value": v.value, "std": v.std, "ci_low": v.ci_low, "ci_high": v.ci_high}
                    | {"extractor": EX, "weights_id": "w1", "mode": "native"}
                )
        spread = (0.009 * nfe, 0.011 * nfe) if timing_spread else (None, None)
        rows.append({**base, "metric": "s_per_image", "value": 0.01 * nfe, "ci_low": spread[0], "ci_high": spread[1]})
        rows.append({**base, "metric": "nfe", "value": float(nfe)})
        store.write_cell(
            cell.cell_id,
            {**cell.describe(), "cell_hash": s.cell_hash(cell), "n": cell.n, "seed": s.seed},
            features={f"{EX}/{k}": v for k, v in feats.items()},
            rows=rows,
        )
        all_rows += rows
    store.write_results(tidy_frame(all_rows))
    store.write_conditions(np.arange(s.samples) % 10, None)
    store.write_manifest(
        {
            "run_id": run_id or f"study-{s.seed}-{s.samples}",
            "suite": s.name,
            "config": s.to_config(),
            "config_hash": s.config_hash(),
            "cells": [c.describe() for c in s.cells()],
            "extractors": {EX: {"weights_id": "w1", "mode": "native"}},
            "reference": {"name": "fake-ref", "fingerprint": "abc", "n": N_REF},
            "models": {},
        }
    )
    return root


def write_floors(root: Path, s) -> dict:
    """Store the run's floors as the runner does (:func:`suite_floors`, with run.json's reference info)."""
    from types import SimpleNamespace

    from evalkit.store import read_run
    from evalkit.study.floors import suite_floors

    manifest = read_run(root).manifest
    ids = {name: SimpleNamespace(**e) for name, e in manifest["extractors"].items()}
    doc = suite_floors(s, {EX: reference()}, manifest["reference"], ids, None)
    RunStore(root).write_floors(doc)
    return doc
