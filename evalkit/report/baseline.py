"""Deltas against a baseline, judged by the gate's verdict: ``evalkit baseline``'s file, a hand-written
baselines JSON, or another run folder.

One verdict: every delta goes through :func:`evalkit.gate.compare.judge` (tolerance rule + verdict rule), so
the report and ``evalkit check`` cannot disagree on the same run and baseline.

- ``evalkit baseline`` files (``"format": "evalkit-baseline/1"``) are read by the gate's
  :meth:`~evalkit.gate.baseline.Baseline.load` (the one reader of that format). A run folder that the gate
  can judge against it (same protocol, extractor weights, reference; any seed) is judged by
  :func:`evalkit.gate.compare.compare` itself, paired bootstrap CI included — exactly ``evalkit check`` (with
  ``--seed`` where the seed differs). Other rows (a run the gate would refuse, or no run folder given) get
  the entry's own tolerance, paired when the row's seed and N equal the baseline's, without a CI.
- A hand-written JSON or a run folder gives only a value and a noise σ per (cell, metric): judged with
  ``Tolerance()`` defaults, unpaired, as one draw against one draw with σ taken as known: ``n_sets = 1``,
  so ``tol = max(3·σ·√2, 0.02·|baseline|)`` (the t-correction needs K seed sets, which these do not have).
  A run folder's σ is a row's ``std``, else its CI half-width / 1.96; a missing σ leaves the 2 % floor.

A hand-written baselines JSON, as far as the report needs it::

    {"cells": {"<cell key>": {"<metric>": {"value": 12.3, "noise": 0.4, "direction": "lower", ...}}}}

A cell entry may name its model/sampler/steps/guidance itself; otherwise its key is a cell id, matched
with the ``cell_id`` the run's rows carry (never parsed). A metric entry may also be a bare number.

The gate's verdicts in the report's words: regression → ``worse``, improvement → ``better`` (``changed``
where the direction is unknown), pass → ``within noise`` (``unchanged`` when Δ is exactly 0), error → ``error``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.errors import ConfigError, EvalkitError
from evalkit.gate.baseline import Baseline, BaselineEntry, CheckConfigError, Tolerance
from evalkit.gate.compare import (
    DEFAULT_RESAMPLES,
    ERROR,
    PASS,
    REGRESSION,
    Comparison,
    compare,
    compatibility_problems,
    is_paired,
    judge,
)
from evalkit.report.tables import higher_is_better
from evalkit.store import RunData, read_run
from evalkit.study.cells import TASK_KEYS
from evalkit.study.task_cells import task_columns, task_label

# ``task_point``: a task cell's task and axis values as its label ("img2img st0.3"; "" without a task), so that
# cells differing only in task or strength are matched with their own entries
MATCH_KEYS = ["model", "sampler", "steps", "guidance", "task_point", "metric"]
GATE_BASELINE = "evalkit_baseline"  # attrs key of a frame loaded from an evalkit baseline: the Baseline itself
DELTA_COLUMNS = ["delta", "rel", "z", "tolerance", "ci_low", "ci_high", "paired", "verdict"]
MatchKey = tuple[str, str, int, float, str, str]


class BaselineError(ConfigError):
    """A baseline that cannot be read."""


class BaselineNotFoundError(BaselineError, FileNotFoundError):
    """The baseline file or folder does not exist."""


# -- loading ----------------------------------------------------------------------------------------
def load_baseline(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """(rows with MATCH_KEYS + value, noise, direction; a name) from a baselines JSON or a run folder.

    For an evalkit baseline the frame's ``attrs["evalkit_baseline"]`` holds the gate's :class:`Baseline`."""
    p = Path(path)
    if not p.exists():
        raise BaselineNotFoundError(f"baseline {p} does not exist (expected a baselines JSON or a run folder)")
    if p.is_dir():
        run = read_run(p)
        return _from_results(run.results), f"run {run.run_id} ({p})"
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BaselineError(f"baseline {p} is not valid JSON: {e}") from None
    if isinstance(doc, dict) and str(doc.get("format", "")).startswith("evalkit-baseline"):
        try:
            gate = Baseline.load(p)
        except CheckConfigError as e:
            raise BaselineError(str(e)) from None
        return from_gate_baseline(gate), f"{gate.suite or p.stem} baseline ({p})"
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), dict):
        raise BaselineError(f"baseline {p} has no 'cells' mapping (expected {{\"cells\": {{cell: {{metric: ...}}}}}})")
    return _from_json(doc["cells"]), str(doc.get("name") or p.name)


def from_gate_baseline(gate: Baseline) -> pd.DataFrame:
    """The report's rows of a gate baseline: value on its seed, its noise (the σ the gate uses), direction."""
    rows = [
        {
            "model": e.model,
            "sampler": e.sampler,
            "steps": e.steps,
            "guidance": e.guidance,
            "task_point": _entry_point(e),
            "metric": e.metric,
            "value": e.value,
            "noise": e.noise,
            "direction": "higher" if e.higher_is_better else "lower",
            "mean": e.mean,
            "n_sets": e.n_sets,
        }
        for e in gate.entries
    ]
    df = _typed(pd.DataFrame(rows, columns=[*MATCH_KEYS, "value", "noise", "direction", "mean", "n_sets"]))
    df.attrs[GATE_BASELINE] = gate
    return df


def _from_results(df: pd.DataFrame) -> pd.DataFrame:
    noise = df["std"].where(df["std"].notna(), (df["ci_high"] - df["ci_low"]) / (2 * 1.96))
    out = with_task_points(df)[[*MATCH_KEYS, "value"]].assign(noise=noise, direction="")
    return _typed(out)


def _from_json(cells: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for key, entry in cells.items():
        if not isinstance(entry, dict):
            continue
        ident = _cell_identity(key, entry)
        metrics = entry.get("metrics", entry)
        for metric, spec in metrics.items():
            if isinstance(spec, (int, float)) and not isinstance(spec, bool):
                spec = {"value": spec}
            if not isinstance(spec, dict) or not isinstance(spec.get("value"), (int, float)):
                continue
            noise = _num(spec.get("noise", spec.get("std")))
            rows.append(
                {
                    **ident,
                    "metric": metric,
                    "value": float(spec["value"]),
                    "noise": noise,
                    "direction": str(spec.get("direction", "")),
                }
            )
    return _typed(pd.DataFrame(rows, columns=[*MATCH_KEYS, "cell_id", "value", "noise", "direction"]))


def _cell_identity(key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The cell an entry names: its own model/sampler/steps/guidance, else its key as a cell id (looked up in
    the run's rows by :func:`_resolve_cell_ids`, never parsed)."""
    if all(k in entry for k in ("model", "sampler", "steps", "guidance")):
        return {**{k: entry[k] for k in ("model", "sampler", "steps", "guidance")}, "task_point": task_label(entry)}
    return {"cell_id": key}


def _resolve_cell_ids(base: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Baseline rows named only by a cell id get that cell's model/sampler/steps/guidance from the run's rows."""
    if "cell_id" not in base or base["cell_id"].isna().all() or "cell_id" not in df:
        return base
    keys = ["model", "sampler", "steps", "guidance", "task_point"]
    cells = with_task_points(df)[["cell_id", *keys]].drop_duplicates("cell_id").set_index("cell_id")
    named = base["cell_id"].notna() & (base["model"].isna() | base["model"].isin(["", "nan", "None"]))
    looked_up = cells.reindex(base.loc[named, "cell_id"].to_numpy()).reset_index(drop=True)
    resolved = pd.concat([base[named].drop(columns=keys).reset_index(drop=True), looked_up], axis=1)
    return _typed(pd.concat([base[~named], resolved[resolved["model"].notna()]], ignore_index=True))


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
    df["task_point"] = df["task_point"].fillna("").astype(str)
    return df.drop_duplicates([*MATCH_KEYS, "cell_id"] if "cell_id" in df else MATCH_KEYS, keep="first")


# -- judging ----------------------------------------------------------------------------------------
def deltas(
    df: pd.DataFrame,
    baseline: pd.DataFrame | Baseline,
    runs: Iterable[RunData | str | os.PathLike] | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> pd.DataFrame:
    """Matched (model, sampler, steps, guidance, metric): baseline, now, delta, relative delta, delta in noise
    units, the gate's tolerance and paired CI, and the verdict in the report's words (module docstring).

    ``runs``: the run folders behind ``df``; an evalkit baseline judges those it can through the gate's
    :func:`~evalkit.gate.compare.compare` (paired CI included), the rest by the entry's tolerance alone.
    """
    gate = baseline if isinstance(baseline, Baseline) else baseline.attrs.get(GATE_BASELINE)
    df = with_task_points(df)
    base = from_gate_baseline(gate) if isinstance(baseline, Baseline) else _resolve_cell_ids(baseline.copy(), df)
    now = df[[*MATCH_KEYS, "run_id", "seed", "n", "value"]].rename(columns={"value": "now"})
    m = now.merge(base.rename(columns={"value": "baseline"}), on=MATCH_KEYS, how="inner")
    if m.empty:
        return m.assign(**{c: [] for c in DELTA_COLUMNS})
    checked = _checked(gate, runs, set(m["run_id"]), n_resamples) if gate is not None else {}
    entries = _entries(gate) if gate is not None else {}
    judged = [_judge_row(r, gate, entries, checked) for r in m.to_dict("records")]
    m["baseline"] = [c.reference for c, _ in judged]
    m["delta"] = [c.delta for c, _ in judged]
    m["rel"] = m["delta"] / m["baseline"].abs().where(m["baseline"] != 0)
    m["z"] = m["delta"] / m["noise"].where(m["noise"] > 0)
    m["tolerance"] = [c.tolerance for c, _ in judged]
    m["ci_low"] = [c.ci[0] if c.ci else math.nan for c, _ in judged]
    m["ci_high"] = [c.ci[1] if c.ci else math.nan for c, _ in judged]
    m["paired"] = [paired for _, paired in judged]
    m["verdict"] = [_word(c, _direction(r) is not None) for (c, _), r in zip(judged, m.to_dict("records"))]
    return m.reset_index(drop=True)


def _match_key(model: Any, sampler: Any, steps: Any, guidance: Any, point: Any, metric: Any) -> MatchKey:
    return str(model), str(sampler), int(steps), float(guidance), str(point), str(metric)


def _entry_point(e: BaselineEntry) -> str:
    return task_label({k: getattr(e, k, None) for k in TASK_KEYS})


def with_task_points(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the ``task_point`` column (the task label of each row's cell; "" where it has none)."""
    if "task_point" in df:
        return df
    if not task_columns(df.columns):
        return df.assign(task_point="")
    return df.assign(task_point=[task_label(r) for r in df[task_columns(df.columns)].to_dict("records")])


def _entries(gate: Baseline) -> dict[MatchKey, BaselineEntry]:
    """The gate's entry per report key (the first, as the report's frame keeps the first)."""
    out: dict[MatchKey, BaselineEntry] = {}
    for e in gate.entries:
        out.setdefault(_match_key(e.model, e.sampler, e.steps, e.guidance, _entry_point(e), e.metric), e)
    return out


def _checked(
    gate: Baseline, runs: Iterable[RunData | str | os.PathLike] | None, run_ids: set[str], n_resamples: int
) -> dict[tuple[str, MatchKey], tuple[Comparison, bool]]:
    """``evalkit check``'s comparisons for every given run the gate can judge: (run_id, key) → (comparison,
    paired). A run it would refuse, or cannot read features of, is left to the tolerance alone."""
    out: dict[tuple[str, MatchKey], tuple[Comparison, bool]] = {}
    for r in runs or []:
        run = r if isinstance(r, RunData) else read_run(r)
        if run.run_id not in run_ids or "config" not in run.manifest:
            continue
        try:
            if compatibility_problems(gate, run, allow_other_seed=True):
                continue
            report = compare(gate, run, allow_other_seed=True, n_resamples=n_resamples)
        except EvalkitError:
            continue
        for c in report.comparisons:
            e = c.entry
            out.setdefault(
                (run.run_id, _match_key(e.model, e.sampler, e.steps, e.guidance, _entry_point(e), e.metric)),
                (c, report.paired),
            )
    return out


def _judge_row(
    r: dict[str, Any],
    gate: Baseline | None,
    entries: dict[MatchKey, BaselineEntry],
    checked: dict[tuple[str, MatchKey], tuple[Comparison, bool]],
) -> tuple[Comparison, bool]:
    """(the gate's comparison, paired) for one matched row."""
    key = _match_key(*(r[k] for k in MATCH_KEYS))
    if (r["run_id"], key) in checked:
        return checked[(r["run_id"], key)]
    if gate is not None and key in entries:
        seed, n = _num(r.get("seed")), _num(r.get("n"))
        paired = math.isfinite(seed) and math.isfinite(n) and is_paired(gate, int(seed), int(n))
        return judge(entries[key], float(r["now"]), paired=paired), paired
    return judge(_loose_entry(r), float(r["now"]), paired=False), False


def _loose_entry(r: dict[str, Any]) -> BaselineEntry:
    """A baseline entry for a value with only a noise σ: one draw, σ taken as known, Tolerance() defaults."""
    value, noise = float(r["baseline"]), _num(r.get("noise"))
    return BaselineEntry(
        cell="",
        model=str(r["model"]),
        sampler=str(r["sampler"]),
        steps=int(r["steps"]),
        guidance=float(r["guidance"]),
        metric=str(r["metric"]),
        metric_def=str(r["metric"]),
        extractor="",
        higher_is_better=bool(_direction(r)),
        value=value,
        mean=value,
        sigma=noise if math.isfinite(noise) else 0.0,
        values=[value],
        tolerance=Tolerance(),
    )


def _word(c: Comparison, direction_known: bool) -> str:
    """The gate's verdict in the report's words."""
    if c.verdict == ERROR:
        return "error"
    if c.verdict == PASS:
        return "unchanged" if c.delta == 0 else "within noise"
    if not direction_known:
        return "changed"
    return "worse" if c.verdict == REGRESSION else "better"


def _direction(r: dict[str, Any] | pd.Series) -> bool | None:
    d = str(r.get("direction") or "").lower()
    if d.startswith("higher") or d in ("max", "up"):
        return True
    if d.startswith("lower") or d in ("min", "down"):
        return False
    return higher_is_better(str(r["metric"]))
