"""FLS, energy distance and sliced Wasserstein (evalkit.metrics.dgm_set) against dgm-eval (layer6ai-labs/dgm-eval
``dgm_eval/metrics/fls.py``, ``energy.py``, ``sw.py``, commit d57a6d2) and POT (``ot/sliced.py``,
``ot/lp/solver_1d.py``): their functions transcribed below — neither package is installed beside evalkit —
adapted only to run here (CPU instead of ``.cuda()``; numpy instead of JAX for energy: dgm-eval's own numpy
``energy_distance_naive``), plus closed forms and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import rel_diff

from evalkit.metrics import MetricInputs, get_metric
from evalkit.metrics.dgm_set import (
    energy,
    fit_log_sigmas,
    fls_scores,
    fls_sets,
    random_directions,
    sliced_wasserstein,
    sw_approx,
)
from evalkit.metrics.distances import sq_distances
from evalkit.metrics.memorisation import MetricInputError


# -- dgm-eval metrics/fls.py, transcribed (CPU; ``dtype`` float32 as theirs, or float64 for a deterministic check) ----
def _ref_preprocess_fls(train_feat, baseline_feat, test_feat, gen_feat, dtype):
    train_feat = torch.tensor(train_feat, dtype=dtype)
    baseline_feat = torch.tensor(baseline_feat, dtype=dtype)
    test_feat = torch.tensor(test_feat, dtype=dtype)
    gen_feat = torch.tensor(gen_feat, dtype=dtype)
    all_features = torch.cat((train_feat, baseline_feat, test_feat, gen_feat), dim=0)
    mean = all_features.mean(dim=0)
    std = all_features.std(dim=0)

    def normalize(feat):
        return (feat - mean) / std

    return normalize(train_feat), normalize(baseline_feat), normalize(test_feat), normalize(gen_feat)


def _ref_compute_dists(x_data, x_kernel):
    return ((torch.cdist(x_data, x_kernel)) ** 2).detach()


def _ref_get_pairwise_likelihood(x_data, x_kernel, log_sigmas):
    dists = _ref_compute_dists(x_data, x_kernel)
    exponent_term = (-0.5 * dists) / torch.exp(log_sigmas)
    exponent_term -= (x_kernel.shape[1] / 2) * log_sigmas
    exponent_term += torch.log(torch.tensor(1 / dists.shape[1]))
    return exponent_term


def _ref_nll(dists, log_sigmas, dim, lambd=0, detailed=False):
    exponent_term = (-0.5 * dists) / torch.exp(log_sigmas)
    exponent_term -= (dim / 2) * log_sigmas
    exponent_term += torch.log(torch.tensor(1 / dists.shape[1]))
    inner_term = torch.logsumexp(exponent_term, dim=1)
    total_nll = torch.mean(-inner_term)
    reg_term = lambd / 2 * torch.norm(torch.exp(-log_sigmas)) ** 2
    final_nll = total_nll + reg_term
    if detailed:
        return final_nll, -inner_term
    return final_nll


def _ref_optimize_sigmas(x_data, x_kernel, init_val=1):
    log_sigmas = torch.ones(x_kernel.shape[0], requires_grad=True, dtype=x_kernel.dtype)  # device="cuda" in theirs
    log_sigmas.data = init_val * log_sigmas
    optim = torch.optim.Adam([log_sigmas], lr=0.5)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optim, milestones=[50], gamma=0.1)
    dim = x_data.shape[1]
    dists = _ref_compute_dists(x_data, x_kernel)
    for _ in range(100):
        loss = _ref_nll(dists, log_sigmas, dim)
        optim.zero_grad()
        loss.backward()
        optim.step()
        scheduler.step()
        with torch.no_grad():
            log_sigmas.data = log_sigmas.clamp(-100, 20).data
    return log_sigmas


def _ref_evaluate_set(evaluated_set, x_kernel, log_sigmas):
    dists = _ref_compute_dists(evaluated_set, x_kernel)
    nlls = _ref_nll(dists, log_sigmas, x_kernel.shape[1], detailed=True)
    return nlls[0].detach().numpy(), nlls[1]


def _ref_compute_fls(train_feat, baseline_feat, test_feat, gen_feat, dtype=torch.float32):
    train_feat, baseline_feat, test_feat, gen_feat = _ref_preprocess_fls(
        train_feat, baseline_feat, test_feat, gen_feat, dtype
    )
    gen_log_sigmas = _ref_optimize_sigmas(train_feat, gen_feat, init_val=0)
    gen_nll = _ref_evaluate_set(test_feat, gen_feat, gen_log_sigmas)[0].item()
    base_log_sigmas = _ref_optimize_sigmas(train_feat, baseline_feat, init_val=0)
    baseline_nll = _ref_evaluate_set(test_feat, baseline_feat, base_log_sigmas)[0].item()
    diff = 2 * (gen_nll - baseline_nll) / train_feat.shape[1]
    return math.e ** (-diff) * 100


def _ref_compute_fls_overfit(train_feat, baseline_feat, test_feat, gen_feat, dtype=torch.float32):
    train_feat, baseline_feat, test_feat, gen_feat = _ref_preprocess_fls(
        train_feat, baseline_feat, test_feat, gen_feat, dtype
    )
    gen_log_sigmas = _ref_optimize_sigmas(train_feat, gen_feat, init_val=0)
    size = min(test_feat.shape[0], train_feat.shape[0])
    train_lls = _ref_get_pairwise_likelihood(train_feat[:size], gen_feat, gen_log_sigmas)
    test_lls = _ref_get_pairwise_likelihood(test_feat[:size], gen_feat, gen_log_sigmas)
    ll_diff = train_lls.logsumexp(axis=0) - test_lls.logsumexp(axis=0)
    score = ((ll_diff > 0).sum().item() / ll_diff.shape[0]) * 100
    return score - 50


# -- dgm-eval metrics/energy.py (numpy path) and metrics/sw.py, transcribed -------------------------------------------
def _ref_batch_pairwise_distance(x, y, batch_size):
    n_x = x.shape[0]
    sum_dist = 0.0
    for i in range(0, n_x, batch_size):
        x_batch = x[i : i + batch_size]
        distances = np.linalg.norm(x_batch[:, np.newaxis, :] - y, axis=-1)
        sum_dist += np.sum(distances)
    return sum_dist


def _ref_energy_distance_naive(x, y, batch_size=1):
    d_xy = _ref_batch_pairwise_distance(x, y, batch_size)
    d_xx = _ref_batch_pairwise_distance(x, x, batch_size)
    d_yy = _ref_batch_pairwise_distance(y, y, batch_size)
    return (2 * d_xy - d_xx - d_yy) / (2 * d_xy)


def _ref_sw_approx(X, Y):
    d = X.shape[1]
    mean_X = X.mean(axis=0)
    mean_Y = Y.mean(axis=0)
    mean_term = np.linalg.norm(mean_X - mean_Y) ** 2 / d
    m2_Xc = (np.linalg.norm(X - mean_X, axis=1) ** 2).mean() / d
    m2_Yc = (np.linalg.norm(Y - mean_Y, axis=1) ** 2).mean() / d
    return (mean_term + (m2_Xc ** (1 / 2) - m2_Yc ** (1 / 2)) ** 2) ** (1 / 2)


# -- POT ot/lp/solver_1d.py (quantile_function, wasserstein_1d) and ot/sliced.py, numpy backend, transcribed ----------
def _pot_quantile_function(qs, cws, xs):
    n = xs.shape[0]
    cws, qs = cws.T, qs.T
    idx = np.array([np.searchsorted(c, q) for c, q in zip(cws, qs)]).T  # POT's numpy backend: row by row
    return np.take_along_axis(xs, np.clip(idx, 0, n - 1), axis=0)


def _pot_wasserstein_1d(u_values, v_values, p=1):
    n, m = u_values.shape[0], v_values.shape[0]
    u_weights = np.full(u_values.shape, 1.0 / n)
    v_weights = np.full(v_values.shape, 1.0 / m)
    u_sorter = np.argsort(u_values, 0)
    u_values = np.take_along_axis(u_values, u_sorter, 0)
    v_sorter = np.argsort(v_values, 0)
    v_values = np.take_along_axis(v_values, v_sorter, 0)
    u_weights = np.take_along_axis(u_weights, u_sorter, 0)
    v_weights = np.take_along_axis(v_weights, v_sorter, 0)
    u_cumweights = np.cumsum(u_weights, 0)
    v_cumweights = np.cumsum(v_weights, 0)
    qs = np.sort(np.concatenate((u_cumweights, v_cumweights), 0), 0)
    u_quantiles = _pot_quantile_function(qs, u_cumweights, u_values)
    v_quantiles = _pot_quantile_function(qs, v_cumweights, v_values)
    qs = np.pad(qs, pad_width=[(1, 0)] + (qs.ndim - 1) * [(0, 0)])
    delta = qs[1:, ...] - qs[:-1, ...]
    diff_quantiles = np.abs(u_quantiles - v_quantiles)
    if p == 1:
        return np.sum(delta * diff_quantiles, axis=0)
    return np.sum(delta * np.power(diff_quantiles, p), axis=0)


def _pot_sliced_wasserstein_distance(X_s, X_t, projections, p=2):
    n_projections = projections.shape[1]
    projected_emd = _pot_wasserstein_1d(X_s @ projections, X_t @ projections, p=p)
    return (np.sum(projected_emd) / n_projections) ** (1.0 / p)


# -- data -------------------------------------------------------------------------------------------------------------
def _feats(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d) + shift


def _inputs(gen, ref, train=None, seed=0, **options) -> MetricInputs:
    t = None if train is None else {"features": train}
    return MetricInputs(gen={"features": gen}, ref={"features": ref}, train=t, seed=seed, options=options)


# -- FLS --------------------------------------------------------------------------------------------------------------
def _fls_four(n=60, d=12, gen_shift=0.3):
    return _feats(n, d, 1), _feats(n, d, 2), _feats(n, d, 3), _feats(n, d, 4, gen_shift)


def test_fls_equals_dgm_eval_in_float64():
    sets = _fls_four()
    ours = fls_scores(*sets)
    theirs = _ref_compute_fls(*sets, dtype=torch.float64)
    theirs_over = _ref_compute_fls_overfit(*sets, dtype=torch.float64)
    print(
        f"[agreement] fls: evalkit={ours['fls']:.12g} reference={theirs:.12g} rel={rel_diff(ours['fls'], theirs):.2e}"
    )
    print(f"[agreement] fls_overfit: evalkit={ours['fls_overfit']} reference={theirs_over}")
    assert rel_diff(ours["fls"], theirs) <= 1e-6
    assert ours["fls_overfit"] == theirs_over  # a count of kernels: equal


def test_fls_is_close_to_dgm_eval_float32_as_they_run_it():
    sets = _fls_four()
    ours, theirs = fls_scores(*sets)["fls"], _ref_compute_fls(*sets)
    print(
        f"[agreement] fls (their float32): evalkit={ours:.8g} reference={theirs:.8g} rel={rel_diff(ours, theirs):.2e}"
    )
    assert rel_diff(ours, theirs) <= 1e-4


def test_fitted_bandwidths_equal_torch_adam():
    train, gen = _feats(50, 8, 5), _feats(40, 8, 6, 0.5)
    ours = fit_log_sigmas(sq_distances(train, gen), 8)
    theirs = _ref_optimize_sigmas(torch.tensor(train), torch.tensor(gen), init_val=0).detach().numpy()
    print(f"[agreement] fls log-sigmas: max |evalkit - reference| = {np.abs(ours - theirs).max():.2e}")
    np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-9)


def test_fls_drops_constant_dimensions_where_dgm_eval_gives_nan():
    sets = [np.concatenate([x, np.ones((len(x), 1))], axis=1) for x in _fls_four(d=6)]
    assert math.isnan(_ref_compute_fls(*sets, dtype=torch.float64))
    ours = fls_scores(*sets)
    assert ours["dropped_dims"] == 1 and ours["dims"] == 6
    assert rel_diff(ours["fls"], _ref_compute_fls(*[x[:, :6] for x in sets], dtype=torch.float64)) <= 1e-6


def test_fls_sets_follow_dgm_eval_sizes():
    train, test, gen = _feats(100, 3, 0), _feats(30, 3, 1), _feats(45, 3, 2)
    a, b, c, d = fls_sets(train, test, gen, seed=3)
    assert [len(x) for x in (a, b, c, d)] == [30, 30, 30, 30]  # n = min(10000, 100 // 2, 30, 45)
    rows = {tuple(r) for r in np.concatenate([a, b])}
    assert len(rows) == 60 and rows <= {tuple(r) for r in train}  # disjoint halves of the training split
    assert [len(x) for x in fls_sets(train, test, gen, max_samples=10)] == [10, 10, 10, 10]
    again = fls_sets(train, test, gen, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, c, d), again))


def test_fls_properties():
    train, test = _feats(160, 8, 1), _feats(80, 8, 2)
    good = get_metric("fls").compute(_inputs(_feats(80, 8, 3), test, train, seed=1))
    copied = get_metric("fls").compute(_inputs(train[:80], test, train, seed=1))
    far = get_metric("fls").compute(_inputs(_feats(80, 8, 3, shift=2.0), test, train, seed=1))
    assert 80 < good["fls"].value < 125 and abs(good["fls_overfit"].value) <= 25
    assert far["fls"].value < good["fls"].value / 2  # a worse model scores lower
    assert copied["fls_overfit"].value > good["fls_overfit"].value  # copies favour the training half
    with pytest.raises(MetricInputError, match="reference.train"):
        get_metric("fls").compute(_inputs(_feats(80, 8, 3), test))


# -- energy -----------------------------------------------------------------------------------------------------------
def test_energy_equals_dgm_eval_for_equal_sizes():
    x, y = _feats(70, 9, 1), _feats(70, 9, 2, 0.4)
    ours, theirs = energy(x, y)["energy"], _ref_energy_distance_naive(x, y)
    print(f"[agreement] energy: evalkit={ours:.12g} reference={theirs:.12g} rel={rel_diff(ours, theirs):.2e}")
    assert rel_diff(ours, theirs) <= 1e-9


def test_energy_distance_in_one_dimension_equals_scipy():
    x, y = _feats(50, 1, 1), _feats(80, 1, 2, 0.7)  # unequal sizes: the V-statistic with means
    ours = energy(x, y)["energy_distance"]
    theirs = scipy.stats.energy_distance(x[:, 0], y[:, 0]) ** 2  # scipy: sqrt(2E|X-Y| - E|X-X'| - E|Y-Y'|)
    print(f"[agreement] energy_distance 1d: evalkit={ours:.12g} scipy={theirs:.12g} rel={rel_diff(ours, theirs):.2e}")
    assert rel_diff(ours, theirs) <= 1e-9


def test_energy_properties():
    x = _feats(60, 5, 1)
    assert energy(x, x.copy())["energy_distance"] == pytest.approx(0.0, abs=1e-9)
    assert energy(x, x.copy())["energy"] == pytest.approx(0.0, abs=1e-9)
    for seed in range(5):
        e = energy(x, _feats(40, 5, 10 + seed, 0.1 * seed))
        assert e["energy_distance"] >= 0 and 0 <= e["energy"] <= 1
    near, far = energy(x, _feats(60, 5, 2, 0.2)), energy(x, _feats(60, 5, 2, 2.0))
    assert far["energy_distance"] > near["energy_distance"] and far["energy"] > near["energy"]
    shifted = energy(x + 3.0, _feats(60, 5, 2, 0.2) + 3.0)  # translation invariant
    assert shifted["energy_distance"] == pytest.approx(near["energy_distance"], rel=1e-9)


def test_energy_metric_subsamples_with_its_seed():
    ref, gen = _feats(90, 4, 1), _feats(50, 4, 2)
    full = get_metric("energy").compute(_inputs(gen, ref))
    assert full["energy"].value == pytest.approx(energy(ref, gen)["energy"], rel=1e-12)
    a = get_metric("energy").compute(_inputs(gen, ref, seed=3, max_samples=30))
    b = get_metric("energy").compute(_inputs(gen, ref, seed=3, max_samples=30))
    assert a["energy"].value == b["energy"].value and a["energy"].extra == {"n_ref": 30, "n_gen": 30}


# -- sliced Wasserstein -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,m,p", [(40, 40, 2), (37, 91, 2), (50, 20, 1)])
def test_sliced_wasserstein_equals_pot_on_the_same_directions(n, m, p):
    x, y = _feats(n, 7, 1), _feats(m, 7, 2, 0.3)
    theta = random_directions(7, 64, seed=5)
    ours, theirs = sliced_wasserstein(x, y, theta, p), _pot_sliced_wasserstein_distance(x, y, theta, p)
    rel = rel_diff(ours, theirs)
    print(
        f"[agreement] sliced_wasserstein n={n} m={m} p={p}: evalkit={ours:.12g} reference={theirs:.12g} rel={rel:.2e}"
    )
    assert rel <= 1e-9


def test_one_direction_in_one_dimension_is_scipys_wasserstein():
    x, y = _feats(33, 1, 1), _feats(51, 1, 2, 0.5)
    assert sliced_wasserstein(x, y, np.ones((1, 1)), p=1) == pytest.approx(
        scipy.stats.wasserstein_distance(x[:, 0], y[:, 0]), rel=1e-12
    )


def test_sliced_wasserstein_of_a_shifted_set_is_the_projected_shift():
    x = _feats(200, 6, 1)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    theta = random_directions(6, 2000, seed=0)
    exact = math.sqrt(np.mean((shift @ theta) ** 2))  # every projection moves by ⟨θ, shift⟩
    assert sliced_wasserstein(x, x + shift, theta) == pytest.approx(exact, rel=1e-9)
    assert exact == pytest.approx(np.linalg.norm(shift) / math.sqrt(6), rel=0.05)  # E⟨θ,s⟩² = |s|²/d
    assert sliced_wasserstein(x, x.copy(), theta) == 0.0


def test_sw_approx_equals_dgm_eval():
    x, y = _feats(80, 10, 1), _feats(60, 10, 2, 0.5)
    ours, theirs = sw_approx(x, y), _ref_sw_approx(x, y)
    print(f"[agreement] sw_approx: evalkit={ours:.12g} reference={theirs:.12g} rel={rel_diff(ours, theirs):.2e}")
    assert rel_diff(ours, theirs) <= 1e-12


def test_sliced_wasserstein_metric_rows_and_seed():
    ref, gen = _feats(70, 5, 1), _feats(50, 5, 2, 0.4)
    a = get_metric("sliced_wasserstein").compute(_inputs(gen, ref, seed=4, projections=100))
    b = get_metric("sliced_wasserstein").compute(_inputs(gen, ref, seed=4, projections=100))
    c = get_metric("sliced_wasserstein").compute(_inputs(gen, ref, seed=5, projections=100))
    assert set(a) == {"sliced_wasserstein", "sw_approx"}
    assert a["sliced_wasserstein"].value == b["sliced_wasserstein"].value != c["sliced_wasserstein"].value
    assert a["sliced_wasserstein"].value == sliced_wasserstein(gen, ref, random_directions(5, 100, 4))


def test_checks_refuse_bad_options():
    from evalkit.metrics.base import MetricContext

    ctx = MetricContext(samples=50, reference=True)
    assert get_metric("sliced_wasserstein").check({"projections": 0, "p": 0.5}, ctx) == [
        "option projections: expected an integer ≥ 1 (the Monte Carlo directions); got 0",
        "option p: expected a number ≥ 1 (the order of W_p); got 0.5",
    ]
    assert get_metric("fls").check({}, ctx) == [] and get_metric("fls").check({}, MetricContext(samples=1))
