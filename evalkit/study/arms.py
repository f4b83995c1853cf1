"""Each cell's bootstrap replicates, the arms of every comparison: computed once per (run, cell, metric spec),
shared by all the pairs the cell is in, and cached on disk so the report after a run does not recompute what
the run's summary computed.

A replicate is the metric on the cell's generated samples resampled by one row of ``bootstrap_indices(N, B,
seed)`` (the same rows for every cell of one N and seed, as ``evalkit check`` draws them: that is what pairs
them). An unpaired pair of one seed (same N and seed, other conditions) would share those rows too, and the
shared multiplicities would correlate its arms; there the second arm (:meth:`Arms.pair`) is resampled with
its own rows, seeded by :func:`resample_seed` (seed, its pairing key): independent resamples, an extra set of
replicates for such cells only. The cache entry (``<cache_dir>/replicates/<digest>.npz`` + ``.sha256``) is keyed
by the sha256 of the cell's features (from its sealed cell.json), the metric spec, a digest of the reference
features, the per-sample conditions, N, B, the resample seed and the evalkit version; an entry that fails its
checksum is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import evalkit
from evalkit.errors import StoreError
from evalkit.metrics.base import MetricDef, MetricInputs, get_metric
from evalkit.metrics.resampling import bootstrap_indices
from evalkit.store import RunData, atomic_write_bytes, load_npz_checked, npz_bytes, sha256_bytes
from evalkit.study.paired import NO_CI_ERRORS, replicates, run_conditions
from evalkit.study.reference import cached_reference_features
from evalkit.study.sources import RunSources, is_task_run, needs_source_features, uses_reference
from evalkit.suite.tasks import reads_crops, row_extractor

FORMAT = "evalkit-replicates/1"
Result = tuple[np.ndarray | None, str]  # (replicates, "") or (None, why there are none)


def resample_seed(seed: int, pair_key: str) -> int:
    """The seed of the second arm's index rows in an unpaired pair of one seed: sha256("<seed>/<pairing key>")."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}/{pair_key}".encode()).digest()[:8], "little")


class Arms:
    """The replicates of every (run, cell, metric row) a comparison asks for; see the module docstring."""

    def __init__(
        self,
        runs: list[RunData],
        rows: pd.DataFrame,
        n_resamples: int,
        reference: dict[str, dict[str, np.ndarray]] | None,
        cache_dir: str | Path | None,
    ) -> None:
        self.runs, self.n_resamples, self.reference = runs, n_resamples, reference
        self.specs = {r: sorted(set(g["spec"]) - {-1}) for r, g in rows.groupby("run")}  # specs compared per run
        self.pair_keys = {r: str(g["pair_key"].iloc[0]) for r, g in rows.groupby("run")}  # one per run
        self._cache_dir = cache_dir
        self._cells: dict[tuple[int, str, bool], dict[tuple[int, str], Result]] = {}
        self._refs: dict[int, tuple[dict[str, dict[str, np.ndarray]], str]] = {}
        self._trains: dict[int, dict[str, dict[str, np.ndarray]]] = {}
        self._digests: dict[tuple[int, str], str] = {}
        self._sources: dict[int, RunSources] = {}  # a task run's sources, masks, controls (read once per run)

    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is None:
            from evalkit.references.cache import default_cache_dir  # imports torch: only when needed

            self._cache_dir = default_cache_dir()
        return Path(self._cache_dir)

    def get(self, rec: dict[str, Any], *, own_rows: bool = False) -> Result:
        """The replicates of one quality row (a record of :func:`evalkit.study.compare.quality_rows`), on the
        run's seeded rows, or with ``own_rows`` on the rows of :func:`resample_seed`."""
        if int(rec["spec"]) < 0:
            return None, "no metric spec in run.json for this row"
        key = (int(rec["run"]), str(rec["cell_id"]), own_rows)
        if key not in self._cells:
            self._cells[key] = self._compute(key[0], key[1], int(rec["n"]), own_rows)
        return self._cells[key].get((int(rec["spec"]), str(rec["metric"])), (None, "the metric gave no replicates"))

    def pair(self, a: dict[str, Any], b: dict[str, Any]) -> tuple[Result, Result]:
        """The two arms of a comparison: on the same rows where a and b pair (one pairing key), else on
        independent rows (b on its own rows where both runs would draw the same ones)."""
        same_rows = a["pair_key"] != b["pair_key"] and self._run_seed(int(a["run"])) == self._run_seed(int(b["run"]))
        return self.get(a), self.get(b, own_rows=same_rows)

    def _run_seed(self, i: int) -> int | None:
        try:
            return self.runs[i].seed
        except (KeyError, TypeError, ValueError):
            return None

    def _seed(self, i: int, own_rows: bool) -> int:
        return resample_seed(self.runs[i].seed, self.pair_keys[i]) if own_rows else self.runs[i].seed

    def _train(self, i: int) -> dict[str, dict[str, np.ndarray]]:
        """Run ``i``'s training-split features from the feature cache ({} where it has none or they are gone)."""
        if i not in self._trains:
            self._trains[i] = cached_reference_features(self.runs[i], self.cache_dir, split="train")[0]
        return self._trains[i]

    def _reference(self, i: int) -> tuple[dict[str, dict[str, np.ndarray]], str]:
        if self.reference is not None:
            return self.reference, "no reference features given for this extractor"
        if i not in self._refs:
            self._refs[i] = cached_reference_features(self.runs[i], self.cache_dir)
        return self._refs[i]

    def _compute(self, i: int, cell_id: str, n: int, own_rows: bool) -> dict[tuple[int, str], Result]:
        run = self.runs[i]
        specs = (run.manifest.get("config") or {}).get("metrics") or []
        try:
            feats = run.features(cell_id)
            conditions = run_conditions(run)
        except (StoreError, OSError, KeyError, ValueError) as e:
            return {
                (j, row): (None, f"no stored features: {e}") for j in self.specs.get(i, []) for row in _rows(specs[j])
            }
        out: dict[tuple[int, str], Result] = {}
        for j in self.specs.get(i, []):
            reps, why = self._spec_replicates(i, cell_id, specs[j], feats, conditions, n, self._seed(i, own_rows))
            for row in _rows(specs[j]):
                out[(j, row)] = (reps[row], "") if reps is not None and row in reps else (None, why)
        return out

    def _spec_replicates(
        self,
        i: int,
        cell_id: str,
        spec: dict[str, Any],
        feats: dict[str, dict[str, np.ndarray]],
        conditions: tuple[np.ndarray | None, list[str] | None],
        n: int,
        seed: int,
    ) -> tuple[dict[str, np.ndarray] | None, str]:
        defn, ex, run = get_metric(spec["name"]), str(spec.get("extractor") or ""), self.runs[i]
        crop = reads_crops(spec.get("options"), defn.reads_source)  # masked crops, against the sources' crops
        key = row_extractor(ex, spec.get("options")) if crop else ex
        gen = feats.get(key) or {}
        sizes = {len(a) for a in gen.values()}
        if not gen:
            return None, f"the cell stored no features of extractor {ex!r}"
        if sizes != {n}:
            return None, f"the stored {ex or 'generated'} features hold {sorted(sizes)} samples, the cell has N={n}"
        ref, task = None, is_task_run(run)
        if crop:
            ref = self._sources.setdefault(i, RunSources(run)).features().get(key)
            if ref is None:
                return None, f"the run stored no features of the sources' masked crops (task_inputs.npz source/{key})"
        elif uses_reference(defn, task):  # a source-reading metric of a task run compares with the source instead
            refs, why = self._reference(i)
            if ex not in refs:
                return None, why or f"no reference features for {ex}"
            ref = refs[ex]
        fields, why = (
            self._task_fields(i, defn, ex, n, (run.cells.get(cell_id) or {}).get("task")) if task else ({}, "")
        )
        if why:
            return None, why
        options = dict(spec.get("options") or {})
        path = self._entry(i, cell_id, spec, ref, conditions, n, seed)
        cached = _load(path)
        if cached is not None:
            return cached, ""
        labels, prompts = conditions
        train = self._train(i).get(ex) if defn.reads_train else None
        inputs = MetricInputs(
            gen=gen, ref=ref, train=train, labels=labels, prompts=prompts, seed=run.seed, options=options, **fields
        )
        try:
            reps = replicates(defn, inputs, bootstrap_indices(n, self.n_resamples, seed=seed))
        except NO_CI_ERRORS as e:
            return None, f"{spec['name']} has no bootstrap replicates here ({type(e).__name__}: {e})"
        _store(path, reps)
        return reps, ""

    def _task_fields(self, i: int, defn: MetricDef, ex: str, n: int, task: str | None) -> tuple[dict[str, Any], str]:
        """A task cell's source features, masks and controls for the metric, or why the run folder lacks them."""
        sources = self._sources.setdefault(i, RunSources(self.runs[i]))
        try:
            fields = sources.metric_fields(ex, n, task=task)
        except (StoreError, OSError, KeyError, ValueError) as e:
            return {}, f"the run's task inputs cannot be read: {e}"
        if needs_source_features(defn, True) and fields["source"] is None:
            return {}, (
                f"{defn.name} compares each sample with its source image, and the run stored no source features of "
                f"{ex!r} (task_inputs.npz source/{ex}/...)"
            )
        return fields, ""

    def _entry(
        self,
        i: int,
        cell_id: str,
        spec: dict[str, Any],
        ref: dict[str, np.ndarray] | None,
        conditions: tuple[np.ndarray | None, list[str] | None],
        n: int,
        seed: int,
    ) -> Path | None:
        """The cache file of one cell × metric spec, or None where the cell records no features checksum."""
        run = self.runs[i]
        features_sha = ((run.cells.get(cell_id) or {}).get("files") or {}).get("features.npz")
        if not features_sha:
            return None
        ex = row_extractor(spec.get("extractor"), spec.get("options"))  # a region's reference: the sources' crops
        if ref is not None and (i, ex) not in self._digests:
            self._digests[(i, ex)] = _digest(ref)
        labels, prompts = conditions
        key = {
            "format": FORMAT,
            "evalkit": evalkit.__version__,
            "features": features_sha,
            "spec": spec,
            "reference": self._digests.get((i, ex), "") if ref is not None else "",
            "labels": "" if labels is None else _digest({"labels": np.asarray(labels)}),
            "prompts": prompts,
            "n": n,
            "resamples": self.n_resamples,
            "seed": seed,
        }
        if i in self._sources:  # a task run: the replicates depend on its sources too
            key["sources"] = self._sources[i].fingerprint
        name = sha256_bytes(json.dumps(key, sort_keys=True, default=str).encode())[:32]
        return self.cache_dir / "replicates" / f"{name}.npz"


def _rows(spec: dict[str, Any]) -> list[str]:
    return list(get_metric(spec["name"]).higher_is_better)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for k, a in sorted(arrays.items()):
        a = np.ascontiguousarray(a)
        h.update(f"{k}:{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _load(path: Path | None) -> dict[str, np.ndarray] | None:
    if path is None:
        return None
    try:
        digest = path.with_suffix(".npz.sha256").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return load_npz_checked(path, digest) if len(digest) == 64 else None


def _store(path: Path | None, reps: dict[str, np.ndarray]) -> None:
    """Write an entry (npz, then its sha256 sidecar, which marks it valid); a cache that cannot be written is
    not an error (the replicates are simply recomputed next time)."""
    if path is None:
        return
    data = npz_bytes({k: np.asarray(v, dtype=np.float64) for k, v in reps.items()})
    try:
        atomic_write_bytes(path, data)
        atomic_write_bytes(path.with_suffix(".npz.sha256"), (sha256_bytes(data) + "\n").encode())
    except OSError:
        pass
