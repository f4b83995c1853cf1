"""Identity hashes: of a suite's config, of one cell's inputs, and of the evaluation protocol.

- ``config_hash``: everything that changes the quality numbers (not the description, batch size, timing or file);
- ``cell_hash``: what one finished cell depends on; a stored cell is reused only if it matches;
- ``protocol_hash``: what defines a measurement for the gate — samplers, steps, guidance, samples,
  conditions, reference, metrics/extractors (custom extractor weights by sha256, not path) and the model
  *names* — but not the model's adapter or options (that is what a check is for) and not the seed, which is
  recorded beside it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from typing import Any


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(config: dict[str, Any]) -> str:
    cfg = dict(config)
    for k in ("description", "batch_size", "timing"):
        cfg.pop(k, None)
    return _digest(cfg)


def cell_hash(suite: Any, cell: Any) -> str:
    """``suite``: a :class:`~evalkit.suite.spec.Suite`; ``cell``: one of its cells."""
    spec = asdict(cell)
    weights = getattr(suite, "extractor_weights", None)  # custom extractor weights: cells of other weights differ
    spec["sampler"].pop("steps", None)  # a sampler's own step list: the cell's ``steps`` is what it ran
    if cell.guidance_method.is_default:  # plain CFG, as every cell was before methods: its hash stays
        spec.pop("guidance_method")
    if cell.task is None:  # a text/class-to-image cell, as every cell was before tasks: its hash stays
        spec.pop("task")
    return _digest(
        {
            "cell": spec,
            "conditions": suite.conditions,
            "reference": suite.reference,
            "metrics": [asdict(m) for m in suite.metrics],
            "grid_samples": suite.grid_samples,
            **({"extractor_weights": _weights_digests(weights)} if weights else {}),
        }
    )


def _weights_digests(weights: dict[str, Any]) -> dict[str, Any]:
    """Custom extractor weights by content (extractor name → sha256): the same file elsewhere is the same network."""
    return {name: spec.get("sha256") for name, spec in weights.items()}


def protocol_of(config: dict[str, Any]) -> dict[str, Any]:
    """The evaluation protocol in a suite config (``Suite.to_config()`` or a run's ``run.json``).

    Dropped: the model implementation (adapter, options), the seed (recorded separately), and what
    never changes a number (description, batch size, grid size, suite name, source file).
    """
    cfg = copy.deepcopy(config)
    for key in ("description", "batch_size", "grid_samples", "file", "name", "seed", "timing"):
        cfg.pop(key, None)
    cfg["models"] = [{"name": m["name"]} for m in cfg.get("models", [])]
    if cfg.get("extractor_weights"):
        cfg["extractor_weights"] = _weights_digests(cfg["extractor_weights"])
    return cfg


def protocol_hash(config: dict[str, Any]) -> str:
    return _digest(protocol_of(config))


def protocol_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Top-level protocol fields that differ, as 'field: A != B' lines (for the exit-2 message)."""
    pa, pb = protocol_of(a), protocol_of(b)
    return [
        f"{k}: baseline {json.dumps(pa.get(k))} != run {json.dumps(pb.get(k))}"
        for k in sorted(set(pa) | set(pb))
        if pa.get(k) != pb.get(k)
    ]
