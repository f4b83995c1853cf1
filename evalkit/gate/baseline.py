"""Baselines: a suite's values, their measured seed noise and the tolerance rule, in one file.

A baseline (``baselines/NAME.json`` + ``NAME.npz``) holds, per cell × metric, the value on the suite's
seed, its noise σ measured over K seed sets, the direction, and a tolerance rule. The sidecar holds the
per-sample features of the first seed set and the reference features, so a check run on the same seed
can be judged *paired*: the same sample indices are resampled in both feature sets.

σ is the std over the K seed sets or, for rows that are means of independent per-sample terms (precision,
density), their sampling σ √(var/n) pooled over the K sets where that is larger (a K-set σ comes out far
too small now and then; a bounded mean is also skewed). This is the one reader and writer of the
``evalkit-baseline/1`` format: ``evalkit check`` and ``evalkit report --baseline`` both load through
:meth:`Baseline.load`.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import evalkit
from evalkit.errors import ConfigError
from evalkit.gate.changes import versions_of
from evalkit.gate.schema import baseline_problems, shown
from evalkit.gate.task_sources import reference_for, sidecar_arrays, sources_record, task_arm
from evalkit.gate.tolerance import Tolerance, effective_k  # noqa: F401 (the rule's names are this module's too)
from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.store import RunData, atomic_write_bytes, atomic_write_json, join_features, sha256_bytes, split_features
from evalkit.study.sources import is_task_run, uses_reference
from evalkit.suite.identity import protocol_hash, protocol_of
from evalkit.suite.tasks import region_keys, row_extractor

FORMAT = "evalkit-baseline/1"
KEY = ["cell_id", "metric", "extractor"]  # one baseline entry per (cell, result row, extractor)
TASK_FIELDS = ("task", "strength", "controlnet_scale")  # a task cell's, in entries (cell.json's)


class CheckConfigError(ConfigError):
    """The run cannot be judged against this baseline (exit 2). ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# -- the file ---------------------------------------------------------------------------------------
@dataclass
class BaselineEntry:
    cell: str
    model: str
    sampler: str
    steps: int
    guidance: float
    metric: str  # the result row name (fd, precision, ...)
    metric_def: str  # the metric definition that produces it (fd, pr, ...)
    extractor: str
    higher_is_better: bool
    value: float  # on the suite's seed: the paired reference point
    mean: float  # over the K seed sets: the unpaired reference point
    sigma: float  # std (ddof=1) over the K seed sets
    values: list[float]
    tolerance: Tolerance = field(default_factory=Tolerance)
    sigma_sampling: float = 0.0  # sqrt(var(per-sample term)/n) pooled over the K sets; 0 where no such form
    # a task cell's task and axis values (as cell.json has them); None, and absent from the file, where unset
    task: str | None = None
    strength: float | None = None
    controlnet_scale: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.cell, self.metric, self.extractor

    @property
    def noise(self) -> float:
        """The σ the tolerance uses: the seed-set std, or the sampling σ where that is larger. σ from K sets
        is itself noisy (too small one time in many); the sampling σ rests on n·K per-sample terms."""
        return max(self.sigma, self.sigma_sampling)

    @property
    def n_sets(self) -> int:
        return len(self.values)

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None or k not in TASK_FIELDS}
        d["direction"] = "higher" if d.pop("higher_is_better") else "lower"
        d["tolerance"] = {
            "rule": "max(k_eff*max(sigma, sigma_sampling)*inflate, rel*|baseline|, abs)",
            **asdict(self.tolerance),
        }
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BaselineEntry:
        d = dict(d)
        tol = {k: float(v) for k, v in d.pop("tolerance", {}).items() if k in ("k", "rel", "abs")}
        d["higher_is_better"] = d.pop("direction") == "higher"
        return cls(**d, tolerance=Tolerance(**tol))


@dataclass
class Baseline:
    suite: str
    protocol_hash: str
    protocol: dict[str, Any]
    config: dict[str, Any]
    seed: int
    seeds: list[int]
    n: int
    extractors: dict[str, Any]
    reference: dict[str, Any] | None
    models: dict[str, Any]
    entries: list[BaselineEntry]
    config_hash: str = ""
    evalkit_version: str = evalkit.__version__
    versions: dict[str, str] | None = None  # packages, python, device, git commit (gate.changes.versions_of)
    sources: dict[str, Any] | None = None  # a task suite's sources (gate.task_sources); absent from the file if None
    created_at: str = ""
    features_file: str | None = None
    features_sha256: str | None = None
    path: Path | None = None
    _features: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def save(self, path: str | Path, features: dict[str, np.ndarray] | None = None) -> Path:
        """Write ``path`` (JSON) and, given features, the sidecar ``path.with_suffix('.npz')``."""
        path = Path(path)
        if features:
            data = _compressed_npz(features)
            atomic_write_bytes(path.with_suffix(".npz"), data)
            self.features_file, self.features_sha256 = path.with_suffix(".npz").name, sha256_bytes(data)
        doc = {k: v for k, v in asdict(self).items() if k not in ("entries", "path", "_features")}
        doc = {k: v for k, v in doc.items() if v is not None or k != "sources"}
        doc = {"format": FORMAT, **doc, "entries": [e.to_json() for e in self.entries]}
        atomic_write_json(path, doc)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        """Read a baseline file; every way it can be unusable is a :class:`CheckConfigError` (exit 2):
        not a file, not JSON, another format, or any field of the wrong type or range
        (:func:`evalkit.gate.schema.baseline_problems`)."""
        path = Path(path)
        if path.is_dir():
            raise CheckConfigError([f"baseline {path} is a directory (expected the baseline JSON file in it)"])
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckConfigError([f"baseline {path} does not exist (make one with `evalkit baseline`)"]) from None
        except OSError as e:
            raise CheckConfigError([f"baseline {path} cannot be read: {e.strerror or e}"]) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckConfigError([f"baseline {path} is not valid JSON: {e}"]) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckConfigError(
                [
                    f"baseline {path}: expected format {FORMAT!r}, got {doc.get('format')!r}"
                    if isinstance(doc, dict)
                    else f"baseline {path}: not a baseline document"
                ]
            )
        doc.pop("format")
        problems = baseline_problems(doc)
        if problems:
            raise CheckConfigError(shown([f"baseline {path} is malformed: {p}" for p in problems]))
        entries = [BaselineEntry.from_json(e) for e in doc.pop("entries")]
        return cls(**doc, entries=entries, path=path)

    def features(self) -> dict[str, np.ndarray] | None:
        """The sidecar's arrays (checksum verified; a plain npz of numeric arrays, never pickles), or None
        when the baseline has no sidecar. Every way it is unusable is a :class:`CheckConfigError` naming the
        file and what to do (``evalkit check`` asks before running anything)."""
        if self._features is None and self.features_file and self.path is not None:
            p = self.path.parent / self.features_file
            fix = f"restore it beside {self.path} (commit both files) or re-make the baseline with `evalkit baseline`"
            try:
                data = p.read_bytes()
            except FileNotFoundError:
                raise CheckConfigError([f"baseline features {p} are missing (named by {self.path}): {fix}"]) from None
            except OSError as e:
                raise CheckConfigError([f"baseline features {p} cannot be read ({e.strerror or e}): {fix}"]) from None
            if sha256_bytes(data) != self.features_sha256:
                raise CheckConfigError(
                    [f"baseline features {p} do not match their sha256 in {self.path} (changed since written): {fix}"]
                )
            self._features = _plain_npz(p, data, fix)
        return self._features

    def cell_features(self, cell: str) -> dict[str, dict[str, np.ndarray]]:
        """The sidecar's per-sample features of ``cell`` as ``{extractor: {output: array}}`` (empty if none)."""
        return split_features(_under(self.features() or {}, f"cells/{cell}/"))

    def reference_features(self, extractor: str) -> dict[str, np.ndarray] | None:
        """The sidecar's reference features of one extractor, ``{output: array}``, or None."""
        return _under(self.features() or {}, f"reference/{extractor}/") or None

    def source_features(self, extractor: str) -> dict[str, np.ndarray] | None:
        """A task baseline's sources' features on one extractor, ``{output: (S, ...)}`` (a row per source), or None."""
        return _under(self.features() or {}, f"source/{extractor}/") or None


def _plain_npz(path: Path, data: bytes, fix: str) -> dict[str, np.ndarray]:
    """The arrays of an npz holding only numeric/bool arrays; anything else (a pickle, object arrays, a bare
    .npy, not a zip at all) is a :class:`CheckConfigError`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        raise CheckConfigError([f"baseline features {path} are not a plain npz of arrays ({e}): {fix}"]) from None
    odd = sorted(k for k, a in arrays.items() if a.dtype.kind not in "biuf")
    if odd:
        raise CheckConfigError([f"baseline features {path}: arrays that are not numbers: {', '.join(odd[:5])}; {fix}"])
    return arrays


def _under(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _compressed_npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# -- what a run measured ----------------------------------------------------------------------------
def metric_rows(config: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Quality row name → (metric definition name, higher is better) for the suite's metrics."""
    out: dict[str, tuple[str, bool]] = {}
    for spec in config["metrics"]:
        if spec["name"] == "throughput":
            continue
        for row, higher in get_metric(spec["name"]).higher_is_better.items():
            out[row] = (spec["name"], bool(higher))
    return out


def metric_specs(config: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    """(metric definition, the extractor its rows carry: ``<extractor>@<region>`` for a mask's region) → the metric's
    options, as the suite ran it."""
    return {
        (s["name"], row_extractor(s.get("extractor"), s.get("options")) or None): s.get("options") or {}
        for s in config["metrics"]
    }


def quality_values(run: RunData) -> pd.Series:
    """The run's quality values (throughput rows dropped), indexed by (cell_id, metric, extractor)."""
    df = run.results
    df = df[df.metric.isin(set(metric_rows(run.config))) & (df.cell_id != "")]
    return df.set_index(KEY)["value"]


# -- building one -----------------------------------------------------------------------------------
def sampling_sigmas(
    runs: list[RunData],
    cell: str,
    metric_def: str,
    extractor: str,
    options: dict[str, Any],
    reference: dict[str, np.ndarray] | None,
) -> dict[str, float]:
    """Per row that is a mean of independent per-generated-sample terms (the metric's ``per_sample``): its σ
    sqrt(var(term)/n), the variance pooled over the K runs. Empty where the metric has no such form or it needs
    reference features that are not at hand (a reference-free score, e.g. ``aesthetic``, needs none), or, in a
    task suite, compares each sample with its source and the runs stored no features of the sources."""
    defn = get_metric(metric_def)
    per_sample = defn.per_sample
    if per_sample is None or (reference is None and uses_reference(defn, is_task_run(runs[0]))):
        return {}
    base, key, _ = region_keys(extractor, options, defn.reads_source)
    mean_variances: dict[str, list[float]] = {}  # var(term)/n per run
    for r in runs:
        gen = r.features(cell).get(key, {})
        task = task_arm(r, defn, base, r.n, cell=cell)
        if task is None:
            return {}
        ref = reference_for(defn, r, None if reference is None else dict(reference))
        for row, terms in per_sample(MetricInputs(gen=gen, ref=ref, options=options, **task)).items():
            v = float(np.var(terms, ddof=1)) / len(terms) if len(terms) > 1 else math.nan
            mean_variances.setdefault(row, []).append(v)
    return {row: math.sqrt(float(np.mean(v))) for row, v in mean_variances.items() if np.isfinite(v).all()}


def build_baseline(
    runs: list[RunData],
    *,
    tolerance: Tolerance = Tolerance(),
    reference_features: dict[str, dict[str, np.ndarray]] | None = None,
) -> tuple[Baseline, dict[str, np.ndarray]]:
    """A baseline from K runs of one protocol on seed sets ``runs[0].seed + 0..K-1``.

    Values come from ``runs[0]`` (the suite's seed, so a check on that seed pairs sample by sample);
    σ is the std over all K, plus :func:`sampling_sigmas` where the metric has per-sample terms. Returns the
    baseline and its sidecar arrays (features of ``runs[0]``, and the reference features).
    """
    first = runs[0]
    problems = [
        f"run {r.root}: protocol differs from {first.root}"
        for r in runs[1:]
        if protocol_hash(r.config) != protocol_hash(first.config)
    ]
    problems += [
        f"run {r.root}: cell {c} is {r.status(c)}" for r in runs for c in _listed_cells(r) if r.status(c) != "done"
    ]
    sources = sources_record(first)  # a task suite's: every seed set on the same source images
    problems += [
        f"run {r.root}: task sources differ from {first.root}'s" for r in runs[1:] if sources_record(r) != sources
    ]
    if problems:
        raise CheckConfigError(problems)
    entries = _entries(runs, tolerance, reference_features or {})
    sidecar = {
        f"cells/{cell}/{key}": arr
        for cell in _listed_cells(first)
        for key, arr in join_features(first.features(cell)).items()
    }
    ref_arrays = join_features(reference_features or {})
    sidecar.update({f"reference/{key}": np.asarray(arr) for key, arr in ref_arrays.items()})
    sidecar.update(sidecar_arrays(first))  # a task suite's sources' features, where the run stored them
    m = first.manifest
    baseline = Baseline(
        suite=m.get("suite", ""),
        protocol_hash=protocol_hash(first.config),
        protocol=protocol_of(first.config),
        config=first.config,
        seed=first.seed,
        seeds=[r.seed for r in runs],
        n=first.n,
        extractors=m.get("extractors", {}),
        reference=m.get("reference"),
        models=m.get("models", {}),
        entries=entries,
        config_hash=m.get("config_hash", ""),
        versions=versions_of(m) or None,
        sources=sources,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return baseline, sidecar


def _listed_cells(run: RunData) -> list[str]:
    return [c["cell_id"] for c in run.manifest.get("cells", [])]


def _entries(
    runs: list[RunData], tolerance: Tolerance, reference_features: dict[str, dict[str, np.ndarray]]
) -> list[BaselineEntry]:
    """One entry per quality value of ``runs[0]``, with its values over all runs and its noise."""
    first = runs[0]
    rows, specs = metric_rows(first.config), metric_specs(first.config)
    cells = {c["cell_id"]: c for c in first.manifest["cells"]}
    by_run = [quality_values(r) for r in runs]
    entries = []
    sampling: dict[tuple[str, str, str], dict[str, float]] = {}  # (cell, metric def, extractor) → row → σ
    for (cell, metric, extractor), value in by_run[0].items():
        values = [float(s.get((cell, metric, extractor), math.nan)) for s in by_run]
        if not all(map(math.isfinite, values)):
            raise CheckConfigError([f"{cell}/{metric}: not a finite value in every seed set: {values}"])
        group = (cell, rows[metric][0], str(extractor))
        if group not in sampling:  # one per-sample pass serves every row of the metric (precision and density)
            sampling[group] = sampling_sigmas(
                runs, cell, group[1], group[2], specs.get((group[1], extractor), {}), reference_features.get(group[2])
            )
        c = cells[cell]
        entries.append(
            BaselineEntry(
                cell=cell,
                model=c["model"],
                sampler=c["sampler"],
                steps=int(c["steps"]),
                guidance=float(c["guidance"]),
                metric=metric,
                metric_def=rows[metric][0],
                extractor=str(extractor),
                higher_is_better=rows[metric][1],
                value=float(value),
                mean=float(np.mean(values)),
                sigma=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                values=values,
                tolerance=tolerance,
                sigma_sampling=sampling[group].get(metric, 0.0),
                **{k: c[k] for k in TASK_FIELDS if c.get(k) is not None},
            )
        )
    return entries
