"""Memorisation metrics (evalkit.metrics.memorisation: ``memorisation``, ``authpct``, ``ct``) against dgm-eval
(layer6ai-labs/dgm-eval ``dgm_eval/metrics/authpct.py`` and ``ct.py``, commit d57a6d2, transcribed below with their
scikit-learn/scipy/torch calls — dgm-eval itself is not installed beside evalkit; the only adaptation is a fixed
``random_state`` for scikit-learn's k-means, which dgm-eval leaves unseeded), scikit-learn's nearest neighbours for
``memorisation``, closed forms and properties; then the training split through a suite: validation, identity hashes,
the preflight and a small run of the built-in MNIST model."""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import rel_diff
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

from evalkit.cli import main
from evalkit.metrics import MetricInputs, get_metric
from evalkit.metrics.base import MetricContext
from evalkit.metrics.memorisation import (
    MetricInputError,
    assign,
    authentic,
    c_t,
    c_t_cells,
    kmeans,
    memorisation,
    nearest,
    z_u,
)
from evalkit.metrics.resampling import metric_replicates
from evalkit.run.preflight import preflight
from evalkit.suite import SuiteError, parse_suite


# -- dgm-eval metrics/authpct.py, transcribed ---------------------------------------------------------------------
def _ref_compute_authpct(train_feat, gen_feat):
    with torch.no_grad():
        train_feat = torch.tensor(train_feat, dtype=torch.float32)
        gen_feat = torch.tensor(gen_feat, dtype=torch.float32)
        real_dists = torch.cdist(train_feat, train_feat)
        real_dists.fill_diagonal_(float("inf"))
        gen_dists = torch.cdist(train_feat, gen_feat)
        real_min_dists = real_dists.min(axis=0)
        gen_min_dists = gen_dists.min(dim=0)
        authen = real_min_dists.values[gen_min_dists.indices] < gen_min_dists.values
        return (100 * torch.sum(authen) / len(authen)).item()


# -- dgm-eval metrics/ct.py, transcribed ---------------------------------------------------------------------------
def _ref_preprocess_ct(train_feat, test_feat, gen_feat):
    if train_feat.shape[1] > 64:
        pca_xf = PCA(n_components=64).fit(train_feat)
        train_feat = pca_xf.transform(train_feat)
        test_feat = pca_xf.transform(test_feat)
        gen_feat = pca_xf.transform(gen_feat)
    return train_feat, test_feat, gen_feat


def _ref_Zu(Pn, Qm, T):
    m = Qm.shape[0]
    n = Pn.shape[0]
    T_NN = NearestNeighbors(n_neighbors=1).fit(T)
    LQm, _ = T_NN.kneighbors(X=Qm, n_neighbors=1)
    LPn, _ = T_NN.kneighbors(X=Pn, n_neighbors=1)
    u, _ = mannwhitneyu(LQm, LPn, alternative="less")
    mean = (n * m / 2) - 0.5
    std = np.sqrt(n * m * (n + m + 1) / 12)
    return (u - mean) / std


def _ref_Zu_cells(Pn, Pn_cells, Qm, Qm_cells, T, T_cells):
    k = len(np.unique(Pn_cells))
    Zu_cells = np.zeros(k)
    for i in range(k):
        Pn_cell_i = Pn[Pn_cells == i]
        Qm_cell_i = Qm[Qm_cells == i]
        T_cell_i = T[T_cells == i]
        if len(Pn_cell_i) * len(T_cell_i) == 0:
            raise ValueError(f"Cell {i:n} lacks test samples and/or training samples.")
        if len(Qm_cell_i) > 0:
            Zu_cells[i] = _ref_Zu(Pn_cell_i, Qm_cell_i, T_cell_i)[0]  # theirs assigns the (1,)-array: same value
        else:
            Zu_cells[i] = 0
    return Zu_cells


def _ref_C_T(Pn, Pn_cells, Qm, Qm_cells, T, T_cells, tau):
    m = Qm.shape[0]
    n = Pn.shape[0]
    k = np.max(np.unique(T_cells)) + 1
    labels, cts = np.unique(Qm_cells, return_counts=True)
    Qm_cts = np.zeros(k)
    Qm_cts[labels.astype(int)] = cts
    Qm_of_pi = Qm_cts / m
    Pi_tau = Qm_of_pi > tau
    labels, cts = np.unique(Pn_cells, return_counts=True)
    Pn_cts = np.zeros(k)
    Pn_cts[labels.astype(int)] = cts
    Pn_of_pi = Pn_cts / n
    Zu_scores = _ref_Zu_cells(Pn, Pn_cells, Qm, Qm_cells, T, T_cells)
    return Pn_of_pi[Pi_tau].dot(Zu_scores[Pi_tau]) / np.sum(Pn_of_pi[Pi_tau])


def _ref_compute_CTscore(train_feat, test_feat, gen_feat):
    train_feat, test_feat, gen_feat = _ref_preprocess_ct(train_feat, test_feat, gen_feat)
    km_clf = KMeans(n_clusters=3, n_init=10, random_state=0).fit(train_feat)  # random_state: ours, for a fixed test
    T_labels = km_clf.predict(train_feat)
    Pn_labels = km_clf.predict(test_feat)
    Qm_labels = km_clf.predict(gen_feat)
    return _ref_C_T(test_feat, Pn_labels, gen_feat, Qm_labels, train_feat, T_labels, tau=20 / len(gen_feat))


# -- data -------------------------------------------------------------------------------------------------------------
def _feats(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) * np.linspace(0.5, 2.0, d) + shift


def _blobs(n: int, d: int, seed: int) -> np.ndarray:
    """Three well-separated clusters (k-means has one answer) with a spread-out spectrum inside each."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, d))
    centres[np.arange(3), np.arange(3)] = 30.0
    return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, d)) * np.linspace(0.3, 2.0, d)


def _inputs(gen, ref, train=None, seed=0, **options) -> MetricInputs:
    t = None if train is None else {"features": train}
    return MetricInputs(gen={"features": gen}, ref={"features": ref}, train=t, seed=seed, options=options)


# -- nearest neighbours and memorisation ----------------------------------------------------------------------------
def test_nearest_equals_scikit_learn():
    a, b = _feats(70, 9, 1), _feats(120, 9, 2)
    d, i = nearest(a, b)
    ref_d, ref_i = NearestNeighbors(n_neighbors=1).fit(b).kneighbors(a)
    np.testing.assert_array_equal(i, ref_i[:, 0])
    np.testing.assert_allclose(d, ref_d[:, 0], rtol=1e-12)
    d_self, i_self = nearest(b, b, exclude_self=True)
    ref_d, ref_i = NearestNeighbors(n_neighbors=2).fit(b).kneighbors(b)  # the first is the point itself
    np.testing.assert_array_equal(i_self, ref_i[:, 1])
    np.testing.assert_allclose(d_self, ref_d[:, 1], rtol=1e-12)
    assert nearest(b[:5], b)[0].tolist() == [0.0] * 5  # copies: exactly 0, not the Gram form's rounding


def test_memorisation_equals_a_scikit_learn_computation():
    train, held_out = _feats(400, 8, 1), _feats(150, 8, 2)
    gen = np.concatenate([_feats(90, 8, 3), train[:10] + 1e-3])  # ten near-copies
    q = 0.05
    ours = memorisation(gen, train, held_out, quantile=q)
    nn = NearestNeighbors(n_neighbors=1).fit(train)
    threshold = np.quantile(nn.kneighbors(held_out)[0][:, 0], q)
    share = float((nn.kneighbors(gen)[0][:, 0] <= threshold).mean())
    value = float(ours["flags"].mean())
    print(f"[agreement] memorisation: evalkit={value} reference={share} rel={rel_diff(value, share):.1e}")
    assert value == share and ours["threshold"] == pytest.approx(threshold, rel=1e-12)
    assert ours["flags"][-10:].all()


def test_memorisation_metric_rows_pairs_and_fallback():
    train, ref = _feats(300, 6, 1), _feats(120, 6, 2)
    gen = np.concatenate([_feats(45, 6, 3), train[[7, 3, 11]]])  # three exact copies
    out = get_metric("memorisation").compute(_inputs(gen, ref, train, pairs=4, bootstrap=200))["memorisation"]
    assert out.extra["train"] == "training split" and out.extra["calibrated_on"] == "held-out to training"
    assert [(p["gen"], p["train"], p["distance"]) for p in out.extra["closest_pairs"][:3]] == [
        (45, 7, 0),
        (46, 3, 0),
        (47, 11, 0),
    ]
    assert len(out.extra["closest_pairs"]) == 4 and out.extra["closest_pairs"][3]["distance"] > 0
    assert out.ci_low <= out.value <= out.ci_high and out.value >= 3 / 48
    alone = get_metric("memorisation").compute(_inputs(gen, ref))["memorisation"]  # no training split: the reference
    assert alone.extra["train"] == "reference (no training split given)"
    assert alone.extra["calibrated_on"].startswith("reference to reference")


def test_memorisation_of_fresh_samples_is_near_its_quantile_and_copies_are_all_flagged():
    train, ref = _feats(2000, 5, 1), _feats(1000, 5, 2)
    fresh = get_metric("memorisation").compute(_inputs(_feats(1000, 5, 3), ref, train, quantile=0.05, bootstrap=0))
    assert fresh["memorisation"].extra["null_share"] == pytest.approx(0.05, abs=0.002)
    assert 0.03 <= fresh["memorisation"].value <= 0.07  # binomial(1000, 0.05): ±3σ is ±0.021
    copies = get_metric("memorisation").compute(_inputs(train[:300], ref, train, bootstrap=0))
    assert copies["memorisation"].value == 1.0


def test_share_replicates_equal_the_metric_on_each_resample():
    train, ref, gen = _feats(200, 4, 1), _feats(100, 4, 2), _feats(60, 4, 3)
    idx = np.random.default_rng(0).integers(0, 60, size=(5, 60))
    for name in ("memorisation", "authpct"):
        inputs = _inputs(gen, ref, train, bootstrap=0)
        fast = metric_replicates(get_metric(name), inputs, idx)[name]
        slow = [get_metric(name).compute(_inputs(gen[ix], ref, train, bootstrap=0))[name].value for ix in idx]
        np.testing.assert_allclose(fast, slow, rtol=1e-12)


# -- authpct ------------------------------------------------------------------------------------------------------
def test_authpct_equals_dgm_eval():
    train, gen = _feats(500, 10, 1), _feats(200, 10, 2, 0.2)
    # no comparison within float32 rounding of a tie, so their float32 and our float64 must decide alike
    d, nn = nearest(gen, train)
    own, _ = nearest(train, train, exclude_self=True)
    assert np.min(np.abs(own[nn] - d) / d) > 1e-4
    ours = get_metric("authpct").compute(_inputs(gen, gen, train, bootstrap=0))["authpct"].value
    theirs = _ref_compute_authpct(train, gen)
    print(f"[agreement] authpct: evalkit={ours} reference={theirs} rel={rel_diff(ours, theirs):.1e}")
    assert rel_diff(ours, theirs) <= 1e-6


def test_authpct_of_copies_is_zero_and_needs_a_training_split():
    train = _feats(300, 6, 1)
    assert authentic(train, train[:100]).sum() == 0  # a copy sits at distance 0: never authentic
    assert 0 < authentic(train, _feats(100, 6, 2)).mean() < 1
    with pytest.raises(MetricInputError, match=r"training split.*reference\.train"):
        get_metric("authpct").compute(_inputs(train[:10], train))


# -- C_T ----------------------------------------------------------------------------------------------------------
def test_z_u_equals_scipy_mann_whitney_as_dgm_eval_scores_it():
    rng = np.random.default_rng(0)
    a, b = np.round(rng.gamma(2.0, size=37), 1), np.round(rng.gamma(2.2, size=55), 1)  # with ties
    u = mannwhitneyu(a[:, None], b[:, None], alternative="less")[0][0]
    theirs = (u - (37 * 55 / 2 - 0.5)) / np.sqrt(37 * 55 * (37 + 55 + 1) / 12)
    print(f"[agreement] ct z_u: evalkit={z_u(a, b):.12g} reference={theirs:.12g}")
    assert z_u(a, b) == pytest.approx(theirs, rel=1e-12)


def test_c_t_equals_dgm_eval_on_the_same_cells():
    train, test, gen = _feats(600, 6, 1), _feats(300, 6, 2), _feats(250, 6, 3, 0.1)
    km = KMeans(n_clusters=3, n_init=10, random_state=0).fit(train)
    labels = tuple(km.predict(x) for x in (train, test, gen))
    ours = c_t_cells(train, test, gen, labels)[0]
    theirs = _ref_C_T(test, labels[1], gen, labels[2], train, labels[0], tau=20 / len(gen))
    print(f"[agreement] ct (same cells): evalkit={ours:.12g} reference={theirs:.12g} rel={rel_diff(ours, theirs):.1e}")
    assert rel_diff(ours, theirs) <= 1e-9


def test_c_t_equals_dgm_eval_end_to_end_with_pca():
    train, test, gen = _blobs(1500, 100, 1), _blobs(400, 100, 2), _blobs(300, 100, 3) * 0.98  # 100 > 64: PCA
    ours = get_metric("ct").compute(_inputs(gen, test, train, seed=7))["ct"].value
    theirs = _ref_compute_CTscore(train, test, gen)
    print(f"[agreement] ct: evalkit={ours:.12g} reference={theirs:.12g} rel={rel_diff(ours, theirs):.1e}")
    assert rel_diff(ours, theirs) <= 1e-6


def test_kmeans_finds_scikit_learns_partition():
    x = _blobs(900, 5, 4)
    centres = kmeans(x, 3, seed=1)
    ours, inertia = assign(x, centres)
    km = KMeans(n_clusters=3, n_init=10, random_state=0).fit(x)
    assert adjusted_rand_score(ours, km.labels_) == 1.0
    assert inertia == pytest.approx(km.inertia_, rel=1e-9)
    assert np.array_equal(kmeans(x, 3, seed=1), centres)  # the seed fixes it


def test_c_t_sign_tells_copying_from_underfitting():
    train, test = _feats(900, 6, 1), _feats(400, 6, 2)
    fresh = c_t(train, test, _feats(300, 6, 3))["value"]
    copying = c_t(train, test, train[:300] + 0.01)["value"]
    underfit = c_t(train, test, _feats(300, 6, 4) * 1.6)["value"]
    print(f"C_T: copying {copying:.3g}, fresh samples {fresh:.3g}, underfitting {underfit:.3g}")
    assert copying < -5 and underfit > 5 and abs(fresh) < 3, (copying, fresh, underfit)
    with pytest.raises(ValueError, match="more than 20 generated samples"):
        c_t(train, test, _feats(15, 6, 3))
    with pytest.raises(MetricInputError, match="reference.train"):
        get_metric("ct").compute(_inputs(_feats(40, 6, 3), test))
    assert (
        get_metric("ct").check({}, MetricContext(samples=20)) != []
        and get_metric("ct").check({"min_cell": 5}, MetricContext(samples=20)) == []
    )


# -- the training split through a suite --------------------------------------------------------------------------
BASE = {
    "name": "memo",
    "models": [{"name": "mnist", "adapter": "zoo"}],
    "samplers": ["ddim"],
    "steps": [2],
    "samples": 24,
    "batch_size": 24,
    "conditions": {"classes": 10},
    "reference": {"dataset": "mnist-heldout", "samples": 100},
    "extractor": "mnist-net",
    "metrics": ["memorisation", "authpct", {"name": "ct", "options": {"min_cell": 3}}, "fls", "energy"],
    "grid_samples": 4,
    "timing": {"repeats": 1},
}


def _suite(**reference):
    raw = copy.deepcopy(BASE)
    raw["reference"].update(reference)
    return parse_suite(raw, file="memo.yaml")


def test_reference_train_is_validated():
    assert _suite(train="mnist-train").reference["train"] == "mnist-train"
    assert _suite(train={"dataset": "mnist-train", "samples": 50}).reference["train"]["samples"] == 50
    for train, field, words in [
        ({"stats": "x.npz"}, "reference.train.stats", "sample by sample"),
        ({"dataset": "mnist-train", "path": "x"}, "reference.train", "exactly one of 'dataset', 'path'"),
        ({"dataset": "mnist-train", "sample": 5}, "reference.train.sample", "unknown key"),
        ({"dataset": "mnist-train", "samples": 0}, "reference.train.samples", "≥ 1"),
        (3, "reference.train", "a dataset name or a path"),
    ]:
        with pytest.raises(SuiteError) as e:
            _suite(train=train)
        assert e.value.field == field and words in e.value.message, (e.value.field, e.value.message)


def test_the_training_split_is_part_of_a_cells_identity_and_absent_otherwise():
    plain, train, other = _suite(), _suite(train="mnist-train"), _suite(train={"dataset": "mnist-train", "samples": 9})
    assert "train" not in plain.reference and "train" not in plain.to_config()["reference"]  # hashes as before
    cells = [s.cell_hash(s.cells()[0]) for s in (plain, train, other)]
    assert len(set(cells)) == 3 and len({s.config_hash() for s in (plain, train, other)}) == 3


def test_metrics_needing_a_training_split_are_refused_before_anything_runs(tmp_path, capsys):
    problems = preflight(_suite())
    assert [p for p in problems if p.startswith("reference.train:")] == [
        "reference.train: metrics[1] authpct, metrics[2] ct, metrics[3] fls compare(s) the samples with the model's "
        "training split; set reference.train (a built-in dataset such as mnist-train, or the training images: a "
        "folder, zip, tar or .npz), e.g. reference: {dataset: mnist-heldout, train: mnist-train}"
    ]
    assert preflight(_suite(train="mnist-train")) == []
    missing = preflight(_suite(train={"path": str(tmp_path / "nowhere")}))
    assert missing == [
        f"reference.train.path: no reference images at {tmp_path / 'nowhere'} (expected a folder of images or a .zip)"
    ]
    suite = tmp_path / "s.yaml"
    suite.write_text(json.dumps(BASE))
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 2
    assert "reference.train: metrics[1] authpct" in capsys.readouterr().err
    assert not (tmp_path / "run" / "cells").exists()  # nothing generated


@pytest.mark.slow
def test_a_small_run_scores_against_the_training_split(tmp_path):
    raw = copy.deepcopy(BASE)
    raw["reference"]["train"] = {"dataset": "mnist-train", "samples": 200}
    raw["metrics"] += ["sliced_wasserstein"]
    suite = tmp_path / "s.yaml"
    suite.write_text(json.dumps(raw))
    out = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    df = pd.read_parquet(out / "results.parquet").set_index("metric")
    rows = ["memorisation", "authpct", "ct", "fls", "fls_overfit", "energy", "energy_distance"]
    rows += ["sliced_wasserstein", "sw_approx"]
    assert (df.loc[rows, "error"] == "").all() and np.isfinite(df.loc[rows, "value"]).all(), df.loc[rows]
    assert 0 <= df.loc["memorisation", "value"] <= 1 and 0 <= df.loc["authpct", "value"] <= 100
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["reference"]["n"] == 100 and manifest["reference"]["train"]["n"] == 200
    assert manifest["reference"]["train"]["name"] == "mnist-train[:200]"
    cell = json.loads(next((out / "cells").glob("*/cell.json")).read_text())
    memo = cell["metric_extras"]["mnist-net/memorisation"]  # for a report panel of the closest pairs
    assert memo["train"] == "training split" and len(memo["closest_pairs"]) == 16
    distances = [p["distance"] for p in memo["closest_pairs"]]
    assert distances == sorted(distances) and all(
        0 <= p["gen"] < 24 and 0 <= p["train"] < 200 for p in memo["closest_pairs"]
    )
    print(df.loc[rows, ["value", "ci_low", "ci_high"]].to_string(), file=sys.stderr)
    # the report's panel: the closest pairs with both images (the generated one where the cell kept it)
    from evalkit.report.closest_pairs import closest_pair_sections
    from evalkit.store import read_run

    (section,) = closest_pair_sections(read_run(out))
    assert section.against == "training split" and section.share == pytest.approx(df.loc["memorisation", "value"])
    assert [(p.gen, p.train) for p in section.pairs] == [(q["gen"], q["train"]) for q in memo["closest_pairs"][:8]]
    assert all(p.train_image is not None for p in section.pairs)
    assert all((p.gen_image is not None) == (p.gen < raw["grid_samples"]) for p in section.pairs)
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert '<section id="memorisation"' in html and html.count('alt="training split image') == 8
