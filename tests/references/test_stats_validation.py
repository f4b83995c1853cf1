"""A reference statistics file is checked when it is opened (issue 15): NaN/Inf, a sigma that is not a symmetric
positive semi-definite (d, d) matrix for mu's d, or a mu without sigma is a ReferenceSetError naming the file
(exit 2), never a Fréchet distance computed from it."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from evalkit.cli import main
from evalkit.references import ReferenceSetError, open_reference

D = 64  # mnist-net's feature size


def _gaussian(n: int = 200, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x.mean(0), np.cov(x, rowvar=False)


def _broken(kind: str) -> dict[str, np.ndarray]:
    mu, sigma = _gaussian()
    if kind == "nan_mu":
        mu[3] = np.nan
    elif kind == "inf_sigma":
        sigma[2, 5] = sigma[5, 2] = np.inf
    elif kind == "asymmetric":
        sigma[0, 1] += 0.5
    elif kind == "negative_definite":
        sigma = -sigma
    elif kind == "one_negative_eigenvalue":
        w, v = np.linalg.eigh(sigma)
        w[0] = -1e-2 * w[-1]  # far beyond rounding
        sigma = (v * w) @ v.T
    elif kind == "shapes":
        sigma = sigma[:-1, :-1]
    elif kind == "sigma_1d":
        sigma = np.diag(sigma)
    elif kind == "no_sigma":
        return {"mu": mu}
    return {"mu": mu, "sigma": sigma}


BROKEN = {
    "nan_mu": "mu holds 1 NaN/Inf values",
    "inf_sigma": "sigma holds 2 NaN/Inf values",
    "asymmetric": "sigma is not symmetric",
    "negative_definite": "sigma is not positive semi-definite",
    "one_negative_eigenvalue": "sigma is not positive semi-definite",
    "shapes": "mu has shape (64,) and sigma (63, 63); expected mu (d,) and sigma (64, 64)",
    "sigma_1d": "mu has shape (64,) and sigma (64,)",
    "no_sigma": "mu without sigma",
}


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_statistics_are_refused_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    np.savez(path, **_broken(kind))
    with pytest.raises(ReferenceSetError, match="unusable") as err:
        open_reference({"stats": str(path)})
    assert str(path) in str(err.value) and BROKEN[kind] in str(err.value)


def test_output_prefixed_statistics_are_checked_too(tmp_path):
    mu, sigma = _gaussian(d=8)
    np.savez(
        tmp_path / "s.npz", **{"features.mu": mu, "features.sigma": sigma, "logits.mu": mu, "logits.sigma": -sigma}
    )
    with pytest.raises(ReferenceSetError, match=r"\(logits\): sigma is not positive semi-definite"):
        open_reference({"stats": str(tmp_path / "s.npz")})


@pytest.mark.parametrize("case", ["float32", "rank_deficient", "rounding_negative", "zero"])
def test_real_covariances_are_accepted(tmp_path, case):
    """What real files hold: float32 statistics, N < d samples (zero eigenvalues that rounding makes slightly
    negative), eigenvalues a hair below zero, a constant feature set."""
    mu, sigma = _gaussian(n=20 if case == "rank_deficient" else 200)
    if case == "float32":
        mu, sigma = mu.astype(np.float32), sigma.astype(np.float32)
    elif case == "rounding_negative":
        w, v = np.linalg.eigh(sigma)
        w[:3] = -1e-9 * w[-1]
        sigma = (v * w) @ v.T
        sigma = (sigma + sigma.T) / 2
    elif case == "zero":
        sigma = np.zeros_like(sigma)
    if case == "rank_deficient":
        assert np.linalg.matrix_rank(sigma) < D  # 45 zero eigenvalues, which rounding scatters around 0
    np.savez(tmp_path / "s.npz", mu=mu, sigma=sigma, n=20)
    assert len(open_reference({"stats": str(tmp_path / "s.npz")})) == 20


def test_run_with_broken_statistics_exits_2_naming_the_file(tmp_path, capsys):
    stats = tmp_path / "ref_stats.npz"
    np.savez(stats, **_broken("negative_definite"), n=200)
    suite = tmp_path / "s.yaml"
    suite.write_text(
        textwrap.dedent(f"""\
        name: badstats
        models: [{{name: noise, adapter: noise}}]
        samplers: [ddim]
        steps: [1]
        samples: 8
        batch_size: 8
        conditions: {{classes: 10}}
        reference: {{stats: "{stats}"}}
        extractor: mnist-net
        metrics: [fd]
        grid_samples: 4
    """)
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err
    assert str(stats) in err and "not positive semi-definite" in err
