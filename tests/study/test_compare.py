"""Comparisons between cells: the paired CI is the direct computation, a real difference is called one, noise
is a tie, N is never crossed, replicates are computed once per cell, and the gate uses the same core."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from study_helpers import DIM, EX, N_REF, reference, suite, write_run

from evalkit.metrics.resampling import percentile_interval
from evalkit.store import RunStore, read_run
from evalkit.study import arms as arms_mod
from evalkit.study.compare import NO_CI, PAIRED, SEPARATE, UNPAIRED, _pairing_key, compare_cells, compare_with_intervals

REF = {EX: reference()}


def fd_direct(x: np.ndarray, ref: np.ndarray) -> float:
    """FD from scratch: scipy's matrix square root, not evalkit's eigenvalue path."""
    from scipy import linalg

    mu1, mu2 = x.mean(0), ref.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(ref, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean))


def index_rows(run, b: int, own: bool = False) -> np.ndarray:
    """The documented resample rows of a run's cells: seeded by the run's seed, or (``own``: the second arm of
    an unpaired pair of one seed) by sha256("<seed>/<pairing key>")[:8]."""
    digest = hashlib.sha256(f"{run.seed}/{_pairing_key(run)}".encode()).digest()
    seed = int.from_bytes(digest[:8], "little") if own else run.seed
    return np.random.default_rng(seed).integers(0, run.n, size=(b, run.n))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return read_run(write_run(tmp_path_factory.mktemp("c") / "run", shifts={"ddim": 0.3, "euler": 0.3, "heun": 1.0}))


def test_paired_ci_is_the_direct_computation_on_the_same_resamples(run):
    b = 40
    pairs = compare_cells(run, "fd", n_resamples=b, pairs=[("m__ddim__s4__g1", "m__heun__s4__g1")], reference=REF)
    assert len(pairs) == 1
    row = pairs.iloc[0]
    a_feats = run.features("m__ddim__s4__g1")[EX]["features"]
    b_feats = run.features("m__heun__s4__g1")[EX]["features"]
    idx = index_rows(run, b)  # the same rows for both arms
    ref = REF[EX]["features"]
    diffs = np.array([fd_direct(a_feats[i], ref) - fd_direct(b_feats[i], ref) for i in idx])
    delta = fd_direct(a_feats, ref) - fd_direct(b_feats, ref)
    assert row["diff"] == pytest.approx(delta, rel=1e-6)
    shifted = diffs - diffs.mean() + delta
    lo, hi = np.quantile(shifted, [0.025, 0.975])
    assert (row.ci_low, row.ci_high) == pytest.approx((min(lo, delta), max(hi, delta)), rel=1e-6)
    assert row.basis == PAIRED and row.verdict == "better"  # ddim (shift 0.3) is far closer to N(0, I) than heun


def test_a_real_difference_is_called_and_noise_is_a_tie(run):
    pairs = compare_cells(run, ["fd", "kid", "precision"], n_resamples=100, reference=REF)
    assert set(pairs.basis) == {PAIRED}
    vs_heun = pairs[(pairs.sampler_a == "ddim") & (pairs.sampler_b == "heun")]
    assert len(vs_heun) == 2 * 2 * 3 and set(vs_heun.verdict) == {"better"}  # 2 × 2 step pairs × 3 metrics
    # every CI contains its own difference, and excludes 0 exactly when the verdict is not a tie
    assert ((pairs.ci_low <= pairs["diff"]) & (pairs["diff"] <= pairs.ci_high)).all()
    assert ((pairs.verdict == "tie") == ((pairs.ci_low <= 0) & (pairs.ci_high >= 0))).all()


def test_cells_from_one_distribution_tie_about_as_often_as_the_level_says(tmp_path):
    """Two samplers with the same shift (only their own jitter differs): over 12 seed sets their FD difference's
    95 % CI should contain 0 nearly every time (a CI too narrow would call noise a difference)."""
    s = suite(samplers=["ddim", "euler"], steps=[4], metrics=["fd", "throughput"], samples=80)
    ties = 0
    for seed in range(12):
        root = write_run(
            tmp_path / f"s{seed}", suite(**{**_plain(s), "seed": seed}), shifts={"ddim": 0.4, "euler": 0.4}
        )
        pairs = compare_cells(root, "fd", n_resamples=100, reference=REF)
        ties += int(pairs.verdict.iloc[0] == "tie")
    assert ties >= 10


def _plain(s) -> dict:
    cfg = s.to_config()
    return {
        "samplers": [x["label"] for x in cfg["samplers"]],
        "steps": cfg["steps"],
        "metrics": [m["name"] for m in cfg["metrics"]],
        "samples": cfg["samples"],
    }


def test_cells_of_different_n_are_never_compared(tmp_path):
    small = write_run(tmp_path / "small", suite(samples=50), run_id="small")
    big = write_run(tmp_path / "big", suite(samples=100), run_id="big")
    pairs = compare_cells([small, big], "fd", n_resamples=20, reference=REF)
    assert not pairs.empty and (pairs.run_a == pairs.run_b).all()  # no pair across the two runs
    assert set(pairs.n) == {50, 100}
    # another seed at the same N is compared, unpaired
    other = write_run(tmp_path / "other", suite(samples=100, seed=5), run_id="other")
    cross = compare_cells([big, other], "fd", n_resamples=20, reference=REF)
    across = cross[cross.run_a != cross.run_b]
    assert len(across) == 6 * 6 and set(across.basis) == {UNPAIRED}


def test_replicates_are_computed_once_per_cell(run, monkeypatch):
    calls = []
    real = arms_mod.replicates

    def counting(defn, inputs, idx):
        calls.append(defn.name)
        return real(defn, inputs, idx)

    monkeypatch.setattr(arms_mod, "replicates", counting)
    pairs = compare_cells(run, n_resamples=10, reference=REF)
    cells = len(run.cells)
    assert len(pairs) == 6 * (cells * (cells - 1) // 2)  # fd, kid and 4 pr rows, every pair
    assert sorted(calls) == sorted(["fd", "kid", "pr"] * cells)  # one call per cell and metric, not per pair


def test_each_cells_own_interval_is_the_percentile_of_its_replicates(run):
    _, intervals = compare_with_intervals(run, "fd", n_resamples=50, reference=REF)
    row = intervals[intervals.cell_id == "m__euler__s8__g1"].iloc[0]
    x = run.features("m__euler__s8__g1")[EX]["features"]
    idx = index_rows(run, 50)
    reps = [fd_direct(x[i], REF[EX]["features"]) for i in idx]
    assert (row.ci_low, row.ci_high) == pytest.approx(percentile_interval(reps, recentre_on=row.value), rel=1e-6)


def test_reference_features_are_found_in_the_feature_cache(tmp_path, monkeypatch):
    """A run made through the real reference cache: the comparison finds the cached reference by what run.json
    recorded (fingerprint, extractor weights and mode), without being handed it."""
    from evalkit.references import ArrayReference, reference_features

    class Identity:  # an "extractor" whose features are the images' first pixels
        name, weights_id, mode, outputs = EX, "w1", "native", ("features",)

        def __call__(self, batch):
            return {"features": batch.reshape(len(batch), -1)[:, :DIM].float().numpy()}

    images = np.random.default_rng(1).integers(0, 256, size=(N_REF, 3, 4, 4), dtype=np.uint8)
    ref = ArrayReference("fake-ref", images, None)
    cached = reference_features(ref, [Identity()], cache_dir=tmp_path / "cache")[EX]
    root = write_run(tmp_path / "run", suite(samplers=["ddim", "heun"], steps=[4]))
    manifest = read_run(root).manifest
    manifest["reference"] = {"name": ref.name, "fingerprint": ref.fingerprint, "n": len(ref)}
    from evalkit.store import RunStore

    RunStore(root).write_manifest(manifest)
    found = compare_cells(root, "fd", n_resamples=20, cache_dir=tmp_path / "cache")
    given = compare_cells(root, "fd", n_resamples=20, reference={EX: cached})
    assert found.basis.iloc[0] == PAIRED
    pd.testing.assert_frame_equal(found, given)
    manifest["extractors"][EX]["weights_id"] = "other-weights"  # not the entry's weights: not used
    RunStore(root).write_manifest(manifest)
    missing = compare_cells(root, "fd", n_resamples=20, cache_dir=tmp_path / "cache")
    assert missing.basis.iloc[0] in (SEPARATE, NO_CI) and "not in the feature cache" in missing.note.iloc[0]


def test_bad_arguments_are_refused(run):
    with pytest.raises(ValueError, match="confidence"):
        compare_cells(run, confidence=1.5)
    with pytest.raises(ValueError, match="pairs"):
        compare_cells(run, "fd", pairs="nearby", reference=REF)


def test_replicates_are_cached_for_the_next_reader(run, tmp_path, monkeypatch):
    """The report after a run reuses what the run's summary computed; a damaged entry is recomputed."""
    first = compare_cells(run, "fd", n_resamples=20, reference=REF, cache_dir=tmp_path)
    entries = sorted((tmp_path / "replicates").glob("*.npz"))
    assert len(entries) == len(run.cells)
    monkeypatch.setattr(arms_mod, "replicates", lambda *a: pytest.fail("recomputed cached replicates"))
    pd.testing.assert_frame_equal(compare_cells(run, "fd", n_resamples=20, reference=REF, cache_dir=tmp_path), first)
    monkeypatch.undo()
    entries[0].write_bytes(entries[0].read_bytes()[:-7])  # truncated: fails its sha256
    pd.testing.assert_frame_equal(compare_cells(run, "fd", n_resamples=20, reference=REF, cache_dir=tmp_path), first)
    compare_cells(run, "fd", n_resamples=20, reference={EX: reference(N_REF - 1)}, cache_dir=tmp_path)
    assert len(list((tmp_path / "replicates").glob("*.npz"))) == 2 * len(run.cells)  # another reference: new keys


def test_unpaired_arms_are_resampled_with_independent_rows(tmp_path):
    """Two runs of one seed and N but other conditions do not pair: each arm is resampled with its own rows
    (else the shared multiplicities would correlate the arms), and the CI is the direct computation on them."""
    s = suite(samplers=["ddim"], steps=[4], metrics=["fd", "throughput"])
    one = write_run(tmp_path / "one", s, run_id="one", shifts={"ddim": 0.3})
    two = write_run(tmp_path / "two", s, run_id="two", shifts={"ddim": 0.8})
    RunStore(two).write_conditions(np.arange(s.samples) % 7, None)  # other labels: sample i is another draw
    runs, b = [read_run(one), read_run(two)], 40
    pairs = compare_cells(runs, "fd", n_resamples=b, reference=REF)
    assert len(pairs) == 1 and pairs.basis.iloc[0] == UNPAIRED
    idx_one, idx_two = index_rows(runs[0], b), index_rows(runs[1], b, own=True)
    assert np.array_equal(idx_one, index_rows(runs[1], b)) and not np.array_equal(idx_one, idx_two)
    ref = REF[EX]["features"]
    x1, x2 = (r.features("m__ddim__s4__g1")[EX]["features"] for r in runs)
    diffs = np.array([fd_direct(x1[i], ref) - fd_direct(x2[j], ref) for i, j in zip(idx_one, idx_two)])
    delta = fd_direct(x1, ref) - fd_direct(x2, ref)
    lo, hi = np.quantile(diffs - diffs.mean() + delta, [0.025, 0.975])
    row = pairs.iloc[0]
    assert (row.ci_low, row.ci_high) == pytest.approx((min(lo, delta), max(hi, delta)), rel=1e-6)
