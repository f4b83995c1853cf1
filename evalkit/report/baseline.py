"""Deltas against a baseline: ``evalkit baseline``'s JSON, a hand-written baselines JSON, or another run.

``evalkit baseline`` files (``"format": "evalkit-baseline/1"``) are read from their ``entries``: the
value on the baseline's seed, its noise (the σ its gate uses) and direction. A hand-written baselines
JSON, as far as the report needs it::

    {"cells": {"<cell key>": {"<metric>": {"value": 12.3, "noise": 0.4, "direction": "lower", ...}}}}

A cell entry may name its model/sampler/steps/guidance itself; otherwise the key is read as a cell
id (``model__sampler__s<steps>__g<guidance>``). A metric entry may also be a bare number.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.report.data import open_run
from evalkit.report.tables import higher_is_better
from evalkit.errors import ConfigError

MATCH_KEYS = ["model", "sampler", "steps", "guidance", "metric"]
_CELL_ID = re.compile(r"^(?P<model>.+?)__(?P<sampler>.+)__s(?P<steps>\d+)__g(?P<guidance>[-+0-9.eE]+)$")


class BaselineError(ConfigError):
    """A baseline that cannot be read."""


def load_baseline(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """(rows with MATCH_KEYS + value, noise, direction; a name) from a baselines JSON or a run folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"baseline {p} does not exist (expected a baselines JSON or a run folder)")
    if p.is_dir():
        run = open_run(p)
        return _from_results(run.results), f"run {run.run_id} ({p})"
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BaselineError(f"baseline {p} is not valid JSON: {e}") from None
    if isinstance(doc, dict) and str(doc.get("format", "")).startswith("evalkit-baseline"):
        return _from_entries(doc.get("entries") or [], p), f"{doc.get('suite') or p.stem} baseline ({p})"
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), dict):
        raise BaselineError(f"baseline {p} has no 'cells' mapping (expected {{\"cells\": {{cell: {{metric: ...}}}}}})")
    return _from_json(doc["cells"]), str(doc.get("name") or p.name)


def _from_results(df: pd.DataFrame) -> pd.DataFrame:
    noise = df["std"].where(df["std"].notna(), (df["ci_high"] - df["ci_low"]) / (2 * 1.96))
    out = df[[*MATCH_KEYS, "value"]].assign(noise=noise, direction="")
    return _typed(out)


def _from_entries(entries: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    rows = []
    for i, e in enumerate(entries):
        try:
            rows.append({**{k: e[k] for k in MATCH_KEYS}, "value": float(e["value"]),
                         "noise": max(_num(e.get("sigma")), _num(e.get("sigma_sampling", 0.0))),
                         "direction": str(e.get("direction", ""))})
        except (KeyError, TypeError, ValueError) as err:
            raise BaselineError(f"baseline {path}: entry {i} lacks a usable {err}") from None
    return _typed(pd.DataFrame(rows, columns=[*MATCH_KEYS, "value", "noise", "direction"]))


def _from_json(cells: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for key, entry in cells.items():
        if not isinstance(entry, dict):
            continue
        ident = _cell_identity(key, entry)
        if ident is None:
            continue
        metrics = entry.get("metrics", entry)
        for metric, spec in metrics.items():
            if isinstance(spec, (int, float)) and not isinstance(spec, bool):
                spec = {"value": spec}
            if not isinstance(spec, dict) or not isinstance(spec.get("value"), (int, float)):
                continue
            noise = _num(spec.get("noise", spec.get("std")))
            rows.append({**ident, "metric": metric, "value": float(spec["value"]), "noise": noise,
                         "direction": str(spec.get("direction", ""))})
    return _typed(pd.DataFrame(rows, columns=[*MATCH_KEYS, "value", "noise", "direction"]))


def _cell_identity(key: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    if all(k in entry for k in ("model", "sampler", "steps", "guidance")):
        return {k: entry[k] for k in ("model", "sampler", "steps", "guidance")}
    m = _CELL_ID.match(key)
    return m.groupdict() if m else None


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["model"], df["sampler"], df["metric"] = (df[c].astype(str) for c in ("model", "sampler", "metric"))
    df["steps"] = pd.to_numeric(df["steps"], errors="coerce").astype("Int64")
    df["guidance"] = pd.to_numeric(df["guidance"], errors="coerce").astype(float)
    return df.drop_duplicates(MATCH_KEYS, keep="first")


def deltas(df: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Matched (model, sampler, steps, guidance, metric): baseline, now, delta, relative delta,
    delta in noise units, and whether it moved the better or the worse way."""
    now = df[[*MATCH_KEYS, "run_id", "value"]].rename(columns={"value": "now"})
    base = baseline.rename(columns={"value": "baseline"})
    m = now.merge(base, on=MATCH_KEYS, how="inner")
    if m.empty:
        return m.assign(delta=[], rel=[], z=[], verdict=[])
    m["delta"] = m["now"] - m["baseline"]
    m["rel"] = m["delta"] / m["baseline"].abs().where(m["baseline"] != 0)
    m["z"] = m["delta"] / m["noise"].where(m["noise"] > 0)
    m["verdict"] = [_verdict(r) for _, r in m.iterrows()]
    return m.reset_index(drop=True)


def _verdict(r: pd.Series) -> str:
    """'within noise' inside ±2 noise units; otherwise better/worse by the metric's direction."""
    if r["delta"] == 0:
        return "unchanged"
    if pd.notna(r["z"]) and abs(r["z"]) <= 2:
        return "within noise"
    hib = _direction(r)
    if hib is None:
        return "changed"
    return "better" if (r["delta"] > 0) == hib else "worse"


def _direction(r: pd.Series) -> bool | None:
    d = str(r.get("direction") or "").lower()
    if d.startswith("higher") or d in ("max", "up"):
        return True
    if d.startswith("lower") or d in ("min", "down"):
        return False
    return higher_is_better(str(r["metric"]))
