"""Regression checks against a baseline: the protocol hash, measured noise, and noise-aware verdicts.

A baseline (``baselines/NAME.json`` + ``NAME.npz``) holds, per cell × metric, the value on the suite's
seed, its noise σ measured over K seed sets, the direction, and a tolerance rule. The sidecar holds the
per-sample features of the first seed set and the reference features, so a check run on the same seed
can be judged *paired*: the same sample indices are resampled in both feature sets.

Verdict rule (one cell × metric; ``worse`` is the delta signed so that positive means worse):

- tolerance ``tol = max(k_eff·σ·inflate, rel·|baseline|, abs)`` where ``k_eff`` is ``k`` (a z-score,
  default 3) turned into a Student-t quantile with K−1 degrees of freedom, because σ from K seed sets is
  itself uncertain; σ is the std over the K seed sets or, for rows that are means of independent
  per-sample terms (precision, density), their sampling σ √(var/n) pooled over the K sets where that is
  larger (a K-set σ comes out far too small now and then; a bounded mean is also skewed);
  paired (same seed and N as the baseline): delta = now − baseline value, inflate = 1;
  unpaired (another seed set): delta = now − mean over the K seed sets, inflate = √(1 + 1/K) (one new
  draw against a K-draw mean: a prediction interval);
- regression: ``worse > tol`` AND, when paired, the paired bootstrap CI of the difference lies
  entirely on the worse side of 0; improvement: the same on the better side; otherwise pass.

So a regression must be larger than what seed noise alone produces (tolerance) *and*, where seeds are
shared, be confidently non-zero given the per-sample variation (CI). Improvements never fail.

Protocol: :func:`protocol_hash` covers what defines the measurement — samplers, steps, guidance,
samples, conditions, reference, metrics/extractors and the model *names* — but not the model's adapter
or options (that is what a check is for) and not the seed, which is recorded beside it: a check on
another seed set must be asked for explicitly (``--seed``) because it loses pairing. Like the runner,
this module reads run folders; it never runs a suite (the CLI does).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import evalkit
from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.metrics.resampling import bootstrap_indices, percentile_interval
from evalkit.store import RunStore, atomic_write_bytes, atomic_write_json, npz_bytes, sha256_bytes

FORMAT = "evalkit-baseline/1"
PASS, IMPROVED, REGRESSION, ERROR = "pass", "improved", "regression", "error"
DEFAULT_RESAMPLES = 200
# Cheaper settings for bootstrap replicates: FD's own CI is not needed; KID's subset average is
# reduced because both arms draw the same reference subsets, so that noise cancels in the difference.
REPLICATE_OPTIONS: dict[str, dict[str, Any]] = {"fd": {"bootstrap": 0}, "kid": {"subsets": 10}}


class CheckConfigError(Exception):
    """The run cannot be judged against this baseline (exit 2). ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# -- protocol ---------------------------------------------------------------------------------------
def protocol_of(config: dict[str, Any]) -> dict[str, Any]:
    """The evaluation protocol in a suite config (``Suite.to_config()`` or a run's ``run.json``).

    Dropped: the model implementation (adapter, options), the seed (recorded separately), and what
    never changes a number (description, batch size, grid size, suite name, source file).
    """
    cfg = copy.deepcopy(config)
    for key in ("description", "batch_size", "grid_samples", "file", "name", "seed"):
        cfg.pop(key, None)
    cfg["models"] = [{"name": m["name"]} for m in cfg.get("models", [])]
    return cfg


def protocol_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(protocol_of(config), sort_keys=True).encode()).hexdigest()[:16]


def protocol_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Top-level protocol fields that differ, as 'field: A != B' lines (for the exit-2 message)."""
    pa, pb = protocol_of(a), protocol_of(b)
    return [f"{k}: baseline {json.dumps(pa.get(k))} != run {json.dumps(pb.get(k))}"
            for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]


# -- run folders ------------------------------------------------------------------------------------
@dataclass
class RunData:
    """What a check reads from a run folder: manifest, quality rows keyed by cell, cell status."""

    root: Path
    manifest: dict[str, Any]
    rows: pd.DataFrame  # quality rows with a "cell" column
    status: dict[str, str]  # cell_id → done / failed / missing
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def n(self) -> int:
        return int(self.config["samples"])

    def features(self, cell_id: str) -> dict[str, np.ndarray]:
        return RunStore(self.root).load_features(cell_id)


def metric_rows(config: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Quality row name → (metric definition name, higher is better) for the suite's metrics."""
    out: dict[str, tuple[str, bool]] = {}
    for spec in config["metrics"]:
        if spec["name"] == "throughput":
            continue
        for row, higher in get_metric(spec["name"]).higher_is_better.items():
            out[row] = (spec["name"], bool(higher))
    return out


def read_run(root: str | Path) -> RunData:
    """Read a finished (or partly failed) run folder written by the runner."""
    store = RunStore(root)
    manifest = store.read_manifest()
    if manifest is None or "config" not in manifest:
        raise CheckConfigError([f"{root}: not an evalkit run folder (no run.json)"])
    cells = {c["cell_id"]: c for c in manifest.get("cells", [])}
    status, errors = {}, {}
    for cell_id in cells:
        rec = store.read_cell(cell_id) or {}
        status[cell_id] = rec.get("status", "missing") if rec else "missing"
        if status[cell_id] == "failed":
            lines = str(rec.get("error") or "").strip().splitlines()
            errors[cell_id] = lines[-1] if lines else "unknown error"
    df = store.results()
    quality = set(metric_rows(manifest["config"]))
    df = df[df.metric.isin(quality)].copy()
    key = {(c["model"], c["sampler"], int(c["steps"]), float(c["guidance"])): cid for cid, c in cells.items()}
    df["cell"] = [key.get((m, s, int(st), float(g))) for m, s, st, g in zip(df.model, df.sampler, df.steps, df.guidance)]
    return RunData(Path(root), manifest, df[df.cell.notna()].reset_index(drop=True), status, errors)


# -- baselines --------------------------------------------------------------------------------------
def effective_k(k: float, n_sets: int) -> float:
    """``k`` read as a normal z-score, turned into Student's t quantile at the same tail probability
    with ``n_sets - 1`` degrees of freedom: σ measured on few seed sets is itself uncertain (with 5
    sets it is below half the truth about one time in eleven), and a tolerance built on an unlucky
    small σ would raise false alarms. ``k=3`` gives 3.45σ with 20 seed sets, 4.1σ with 10, 6.6σ with 5."""
    if n_sets < 2:
        return k
    from scipy.special import ndtr, stdtrit  # scipy.stats takes seconds to import

    return float(stdtrit(n_sets - 1, ndtr(k)))


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move before it counts: ``max(k_eff·σ·inflate, rel·|baseline|, abs)``.

    ``k_eff`` is :func:`effective_k`; ``inflate`` is 1 on common seeds and √(1 + 1/K) on a fresh seed
    set (one new draw against the mean of K: the width of a prediction interval).
    """

    k: float = 3.0
    rel: float = 0.02
    abs: float = 0.0

    def width(self, sigma: float, baseline: float, *, n_sets: int, paired: bool) -> float:
        inflate = 1.0 if paired else math.sqrt(1 + 1 / max(1, n_sets))
        return max(effective_k(self.k, n_sets) * sigma * inflate, self.rel * abs(baseline), self.abs)


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

    @property
    def key(self) -> tuple[str, str, str]:
        return self.cell, self.metric, self.extractor

    @property
    def noise(self) -> float:
        """The σ the tolerance uses: the seed-set std, or the sampling σ where that is larger. σ from K sets
        is itself noisy (too small one time in many); the sampling σ rests on n·K per-sample terms."""
        return max(self.sigma, self.sigma_sampling)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["direction"] = "higher" if d.pop("higher_is_better") else "lower"
        d["tolerance"] = {"rule": "max(k_eff*max(sigma, sigma_sampling)*inflate, rel*|baseline|, abs)",
                          **asdict(self.tolerance)}
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
        doc = {"format": FORMAT, **doc, "entries": [e.to_json() for e in self.entries]}
        atomic_write_json(path, doc)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckConfigError([f"baseline {path} does not exist (make one with `evalkit baseline`)"]) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckConfigError([f"baseline {path} is not valid JSON: {e}"]) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckConfigError([f"baseline {path}: expected format {FORMAT!r}, got {doc.get('format')!r}"
                                    if isinstance(doc, dict) else f"baseline {path}: not a baseline document"])
        doc.pop("format")
        try:
            entries = [BaselineEntry.from_json(e) for e in doc.pop("entries")]
            return cls(**doc, entries=entries, path=path)
        except (TypeError, KeyError, ValueError) as e:
            raise CheckConfigError([f"baseline {path} is malformed: {type(e).__name__}: {e}"]) from None

    def features(self) -> dict[str, np.ndarray] | None:
        """The sidecar's arrays (checksum verified), or None when the baseline has no sidecar."""
        if self._features is None and self.features_file and self.path is not None:
            p = self.path.parent / self.features_file
            if not p.is_file():
                raise CheckConfigError([f"baseline features {p} are missing (named by {self.path})"])
            data = p.read_bytes()
            if sha256_bytes(data) != self.features_sha256:
                raise CheckConfigError([f"baseline features {p} do not match their sha256 in {self.path}"])
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                self._features = {k: z[k] for k in z.files}
        return self._features


def _compressed_npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def sampling_sigmas(runs: list[RunData], cell: str, metric_def: str, extractor: str, options: dict[str, Any],
                    reference: dict[str, np.ndarray] | None) -> dict[str, float]:
    """Per row that is a mean of independent per-generated-sample terms (the metric's ``per_sample``): its σ
    sqrt(var(term)/n), the variance pooled over the K runs. Empty where the metric has no such form or the
    reference features are not at hand."""
    per_sample = get_metric(metric_def).per_sample
    if per_sample is None or reference is None:
        return {}
    mean_variances: dict[str, list[float]] = {}  # var(term)/n per run
    for r in runs:
        gen = _split(r.features(cell), f"{extractor}/")
        for row, terms in per_sample(MetricInputs(gen=gen, ref=dict(reference), options=options)).items():
            v = float(np.var(terms, ddof=1)) / len(terms) if len(terms) > 1 else math.nan
            mean_variances.setdefault(row, []).append(v)
    return {row: math.sqrt(float(np.mean(v))) for row, v in mean_variances.items() if np.isfinite(v).all()}


def build_baseline(runs: list[RunData], *, tolerance: Tolerance = Tolerance(),
                   reference_features: dict[str, dict[str, np.ndarray]] | None = None,
                   ) -> tuple[Baseline, dict[str, np.ndarray]]:
    """A baseline from K runs of one protocol on seed sets ``runs[0].seed + 0..K-1``.

    Values come from ``runs[0]`` (the suite's seed, so a check on that seed pairs sample by sample);
    σ is the std over all K, plus :func:`sampling_sigmas` where the metric has per-sample terms. Returns the
    baseline and its sidecar arrays (features of ``runs[0]``).
    """
    first = runs[0]
    problems = [f"run {r.root}: protocol differs from {first.root}" for r in runs[1:]
                if protocol_hash(r.config) != protocol_hash(first.config)]
    problems += [f"run {r.root}: cell {c} is {s}" for r in runs for c, s in r.status.items() if s != "done"]
    if problems:
        raise CheckConfigError(problems)
    rows = metric_rows(first.config)
    specs = {(m["name"], m.get("extractor")): m.get("options") or {} for m in first.config["metrics"]}
    cells = {c["cell_id"]: c for c in first.manifest["cells"]}
    by_run = [r.rows.set_index(["cell", "metric", "extractor"])["value"] for r in runs]
    entries = []
    sampling: dict[tuple[str, str, str], dict[str, float]] = {}  # (cell, metric def, extractor) → row → σ
    for (cell, metric, extractor), value in by_run[0].items():
        values = [float(s.get((cell, metric, extractor), math.nan)) for s in by_run]
        if not all(map(math.isfinite, values)):
            raise CheckConfigError([f"{cell}/{metric}: not a finite value in every seed set: {values}"])
        c = cells[cell]
        group = (cell, rows[metric][0], str(extractor))
        if group not in sampling:  # one per-sample pass serves every row of the metric (precision and density)
            sampling[group] = sampling_sigmas(runs, cell, group[1], group[2], specs.get((group[1], extractor), {}),
                                              (reference_features or {}).get(group[2]))
        entries.append(BaselineEntry(
            cell=cell, model=c["model"], sampler=c["sampler"], steps=int(c["steps"]), guidance=float(c["guidance"]),
            metric=metric, metric_def=rows[metric][0], extractor=str(extractor), higher_is_better=rows[metric][1],
            value=float(value), mean=float(np.mean(values)),
            sigma=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, values=values, tolerance=tolerance,
            sigma_sampling=sampling[group].get(metric, 0.0)))
    sidecar: dict[str, np.ndarray] = {}
    for cell in cells:
        for key, arr in first.features(cell).items():
            sidecar[f"cells/{cell}/{key}"] = arr
    for ex, outputs in (reference_features or {}).items():
        for out, arr in outputs.items():
            sidecar[f"reference/{ex}/{out}"] = np.asarray(arr)
    m = first.manifest
    baseline = Baseline(
        suite=m.get("suite", ""), protocol_hash=protocol_hash(first.config), protocol=protocol_of(first.config),
        config=first.config, seed=first.seed, seeds=[r.seed for r in runs], n=first.n,
        extractors=m.get("extractors", {}), reference=m.get("reference"), models=m.get("models", {}),
        entries=entries, config_hash=m.get("config_hash", ""),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return baseline, sidecar


# -- compatibility ----------------------------------------------------------------------------------
def compatibility_problems(baseline: Baseline, run: RunData, *, allow_other_seed: bool = False) -> list[str]:
    """Every reason the run cannot be judged against the baseline (empty list: it can)."""
    problems = []
    if protocol_hash(run.config) != baseline.protocol_hash:
        problems.append(f"protocol hash {protocol_hash(run.config)} != baseline {baseline.protocol_hash} "
                        "(the suite changed; re-make the baseline with `evalkit baseline`)")
        problems += ["  " + d for d in protocol_differences(baseline.config, run.config)]
    if run.seed != baseline.seed and not allow_other_seed:
        problems.append(f"seed {run.seed} != baseline seed {baseline.seed} (pass --seed to check on a fresh "
                        "seed set on purpose: the verdict is then unpaired)")
    for ex, info in baseline.extractors.items():
        got = run.manifest.get("extractors", {}).get(ex)
        if got is not None and got.get("weights_id") != info.get("weights_id"):
            problems.append(f"extractor {ex}: weights {got.get('weights_id')} != baseline {info.get('weights_id')}")
        elif got is not None and got.get("mode") != info.get("mode"):
            problems.append(f"extractor {ex}: mode {got.get('mode')} != baseline {info.get('mode')}")
    ref_now, ref_base = run.manifest.get("reference") or {}, baseline.reference or {}
    if ref_now.get("fingerprint") and ref_base.get("fingerprint") and ref_now["fingerprint"] != ref_base["fingerprint"]:
        problems.append(f"reference {ref_now.get('name')}: data fingerprint differs from the baseline's")
    missing = sorted({e.cell for e in baseline.entries if run.status.get(e.cell, "missing") == "missing"})
    if missing:
        problems.append("cells missing from the run: " + ", ".join(missing))
    have = set(zip(run.rows.cell, run.rows.metric, run.rows.extractor))
    lost = [f"{c}/{m}" for c, m, x in (e.key for e in baseline.entries)
            if run.status.get(c) == "done" and (c, m, x) not in have]
    if lost:
        problems.append("metrics missing from the run: " + ", ".join(lost))
    return problems


# -- paired bootstrap -------------------------------------------------------------------------------
def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, the formula :mod:`evalkit.metrics.prdc` uses (so radii compare exactly)."""
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(d2, 0.0))


def _prdc_replicates(ref: np.ndarray, gen: np.ndarray, idx: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """precision/recall/density/coverage of ``gen[i]`` for each row ``i`` of ``idx``, exactly as
    :func:`evalkit.metrics.prdc.prdc` would compute them, from distances computed once."""
    from evalkit.metrics.prdc import knn_radii

    ref, gen = ref.reshape(len(ref), -1).astype(np.float64), gen.reshape(len(gen), -1).astype(np.float64)
    r_ref = knn_radii(ref, k)
    d_gr, d_gg = _distances(gen, ref), _distances(gen, gen)
    inside = (d_gr < r_ref[None, :]).sum(axis=1)
    out = {name: np.empty(len(idx)) for name in ("precision", "recall", "density", "coverage")}
    for b, ix in enumerate(idx):
        r_gen = np.partition(d_gg[np.ix_(ix, ix)], k, axis=1)[:, k]
        d = d_gr[ix]
        out["precision"][b] = (inside[ix] > 0).mean()
        out["density"][b] = inside[ix].mean() / k
        out["recall"][b] = (d < r_gen[:, None]).any(axis=0).mean()
        out["coverage"][b] = (d.min(axis=0) < r_ref).mean()
    return out


def _kid_replicates(ref: np.ndarray, gen: np.ndarray, idx: np.ndarray, *, subsets: int, subset_size: int,
                    seed: int) -> dict[str, np.ndarray] | None:
    """KID of ``gen[i]`` per row ``i`` of ``idx``, equal to :func:`evalkit.metrics.kid.compute_kid`'s value,
    from kernels computed once. Only when every subset holds the whole generated set (N ≤ subset size
    and ≤ reference size, the usual CI setting); otherwise None (the generic path recomputes)."""
    from evalkit.metrics.kid import polynomial_kernel

    ref, gen = ref.reshape(len(ref), -1).astype(np.float64), gen.reshape(len(gen), -1).astype(np.float64)
    n = len(gen)
    if n != min(subset_size, n, len(ref)):
        return None
    rng = np.random.RandomState(seed)  # the draws compute_kid makes: gen subset (a permutation), ref subset
    k_yy, k_gr, k_gg = polynomial_kernel(ref, ref), polynomial_kernel(gen, ref), polynomial_kernel(gen, gen)
    cross, within_ref = np.zeros(n), 0.0
    for _ in range(subsets):
        rng.choice(n, n, replace=False)
        y = rng.choice(len(ref), n, replace=False)
        sub = k_yy[np.ix_(y, y)]
        within_ref += (sub.sum() - np.trace(sub)) / (n * (n - 1)) / subsets
        cross += k_gr[:, y].sum(axis=1) / subsets
    diag = np.diag(k_gg)
    out = np.array([(k_gg[np.ix_(ix, ix)].sum() - diag[ix].sum()) / (n * (n - 1)) + within_ref
                    - 2.0 * cross[ix].sum() / (n * n) for ix in idx])
    return {"kid": out}


def metric_replicates(metric_def: str, gen: dict[str, np.ndarray], ref: dict[str, np.ndarray] | None,
                      idx: np.ndarray, *, labels: np.ndarray | None, seed: int,
                      options: dict[str, Any]) -> dict[str, np.ndarray]:
    """The metric recomputed on ``gen`` resampled by each row of ``idx`` → row name → (B,) values."""
    if metric_def == "pr" and ref is not None:
        key = options.get("read", "features")
        return _prdc_replicates(ref[key], gen[key], idx, int(options.get("k", 3)))
    if metric_def == "kid" and ref is not None:
        from evalkit.metrics.kid import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS

        key = options.get("read", "features")
        fast = _kid_replicates(ref[key], gen[key], idx, subsets=int(options.get("subsets", DEFAULT_SUBSETS)),
                               subset_size=int(options.get("subset_size", DEFAULT_SUBSET_SIZE)),
                               seed=int(options.get("kid_seed", seed)))
        if fast is not None:
            return fast
    defn = get_metric(metric_def)
    opts = {**options, **REPLICATE_OPTIONS.get(metric_def, {})}
    if metric_def == "fd" and ref is not None:  # fit the reference once, not per replicate
        from evalkit.metrics.frechet import gaussian_stats

        key = options.get("read", "features")
        mu, sigma = gaussian_stats(ref[key])
        ref = {f"{key}.mu": mu, f"{key}.sigma": sigma}
    out: dict[str, list[float]] = {}
    for ix in idx:
        inputs = MetricInputs(gen={k: v[ix] for k, v in gen.items()}, ref=ref,
                              labels=None if labels is None else labels[ix], seed=seed, options=opts)
        for row, val in defn.compute(inputs).items():
            out.setdefault(row, []).append(val.value)
    return {row: np.asarray(v) for row, v in out.items()}


def _single_thread_blas() -> contextlib.AbstractContextManager:
    """Replicates multiply tiny matrices (N×64); a multi-threaded BLAS spends more on waking threads
    than on the work, 20× slower on a busy 2-core machine. threadpoolctl is optional."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _split(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def paired_intervals(baseline: Baseline, run: RunData, deltas: dict[tuple[str, str, str], float], *,
                     n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95) -> dict[tuple[str, str, str], tuple[float, float]]:
    """Paired bootstrap CI of (now − baseline) per entry: the same resampled indices in both arms.

    Only valid when run and baseline share seed, N and conditions; the caller checks that.
    """
    side = baseline.features()
    if side is None:
        return {}
    from evalkit.suite.conditions import expand_conditions

    conditions = run.config.get("conditions") or {}
    labels = expand_conditions(conditions, run.n).labels if "classes" in conditions else None
    idx = bootstrap_indices(run.n, n_resamples, seed=baseline.seed)
    specs = {(s["name"], s.get("extractor")): s.get("options") or {} for s in run.config["metrics"]}
    out = {}
    for cell in sorted({e.cell for e in baseline.entries}):
        if run.status.get(cell) != "done" or not any(k.startswith(f"cells/{cell}/") for k in side):
            continue
        new_all, old_all = run.features(cell), _split(side, f"cells/{cell}/")
        for (mdef, ex), opts in specs.items():
            todo = [e for e in baseline.entries if e.cell == cell and e.metric_def == mdef and e.extractor == ex]
            if not todo:
                continue
            ref = _split(side, f"reference/{ex}/") or None
            new, old = _split(new_all, f"{ex}/"), _split(old_all, f"{ex}/")
            kw = dict(labels=labels, seed=run.seed, options=opts)
            try:
                with _single_thread_blas():
                    reps_new = metric_replicates(mdef, new, ref, idx, **kw)
                    reps_old = metric_replicates(mdef, old, ref, idx, **kw)
            except (ValueError, KeyError, np.linalg.LinAlgError):
                continue  # no CI for this metric (e.g. too few distinct samples); the tolerance still judges

            for e in todo:
                diff = reps_new[e.metric] - reps_old[e.metric]
                out[e.key] = percentile_interval(diff, confidence, recentre_on=deltas[e.key])
    return out


# -- verdicts ---------------------------------------------------------------------------------------
@dataclass
class Comparison:
    entry: BaselineEntry
    now: float
    reference: float  # what ``now`` is compared with: the baseline value (paired) or mean (unpaired)
    delta: float
    tolerance: float
    ci: tuple[float, float] | None
    verdict: str
    note: str = ""
    k: float = 3.0  # the tolerance's k (z-score) used for this verdict


@dataclass
class CheckReport:
    baseline: Baseline
    run_root: Path
    paired: bool
    comparisons: list[Comparison]
    run_seed: int
    confidence: float = 0.95

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict in (REGRESSION, ERROR)]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def verdict(entry: BaselineEntry, delta: float, tol: float, ci: tuple[float, float] | None) -> str:
    """The rule in the module docstring: beyond tolerance, and (if paired) CI clear of zero."""
    sign = 1.0 if entry.higher_is_better else -1.0  # positive ``better`` = improvement
    better = sign * delta
    if not math.isfinite(delta):
        return ERROR
    ci_better = None if ci is None else sorted((sign * ci[0], sign * ci[1]))
    if -better > tol and (ci_better is None or ci_better[1] < 0):
        return REGRESSION
    if better > tol and (ci_better is None or ci_better[0] > 0):
        return IMPROVED
    return PASS


def compare(baseline: Baseline, run: RunData, *, k: float | None = None, allow_other_seed: bool = False,
            n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95) -> CheckReport:
    """Judge ``run`` against ``baseline``; raises :class:`CheckConfigError` if they do not fit."""
    problems = compatibility_problems(baseline, run, allow_other_seed=allow_other_seed)
    if problems:
        raise CheckConfigError(problems)
    paired = run.seed == baseline.seed and run.n == baseline.n  # same samples, same conditions
    now = run.rows.set_index(["cell", "metric", "extractor"])["value"]
    rows, deltas, ks = [], {}, {}
    for e in baseline.entries:
        if run.status.get(e.cell) != "done":
            rows.append((e, math.nan, math.nan, math.nan, f"cell failed: {run.errors.get(e.cell, '')}"))
            continue
        ref = e.value if paired else e.mean
        value = float(now[e.key])
        deltas[e.key] = value - ref
        rule = e.tolerance if k is None else dataclasses.replace(e.tolerance, k=k)
        tol = rule.width(e.noise, ref, n_sets=len(e.values), paired=paired)
        rows.append((e, value, ref, tol, ""))
        ks[e.key] = rule.k
    cis = paired_intervals(baseline, run, deltas, n_resamples=n_resamples, confidence=confidence) if paired else {}
    comparisons = []
    for e, value, ref, tol, note in rows:
        ci = cis.get(e.key)
        v = ERROR if note else verdict(e, deltas[e.key], tol, ci)
        comparisons.append(Comparison(e, value, ref, value - ref if not note else math.nan, tol, ci, v, note,
                                      ks.get(e.key, e.tolerance.k if k is None else k)))
    return CheckReport(baseline, run.root, paired, comparisons, run.seed, confidence)
