"""a. Fréchet distance on 2048-d features: evalkit's prepared-reference eigenvalue form vs clean-fid's
``scipy.linalg.sqrtm`` path, per FD, with the reference prepared once (as in a grid or a bootstrap).

    python benchmarks/bench_frechet.py                      # N = 1000 and 10000, 3 interleaved repeats
    python benchmarks/bench_frechet.py --n 1000 --repeats 5 --json out.jsonl

Timed region, each side, from the N×2048 generated features to the FD value:

- clean-fid: ``np.mean`` + ``np.cov`` (as ``cleanfid.fid`` fits a folder's features) and
  ``cleanfid.fid.frechet_distance(mu, sigma, mu_ref, sigma_ref)`` (``scipy.linalg.sqrtm`` of Σ1Σ2);
- evalkit: ``frechet_distance_to_reference(x, prepared)`` (the ``fd`` metric's path).

A second line per N times the FD step alone, from given statistics (μ1, Σ1): clean-fid's
``frechet_distance`` vs evalkit's ``frechet_distance_prepared`` (sub-timings of interleaved calls).

Outside the timed region, once: the reference's μ, Σ (both sides) and evalkit's ``prepare_reference``
(one ``eigh`` of Σ_ref, also timed and printed). Also printed: evalkit's cost per bootstrap replicate
(``frechet_distance_resampled``, what the ``fd`` metric's CI uses) and the relative difference of the
values. Features are synthetic Inception-like (non-negative, 2048-d, a few hundred strong directions
over a full-rank floor); the FD arithmetic does not depend on where they came from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import emit, fmt_s, interleaved, median, print_machine, rel

TARGETS = {1000: 20.0, 10000: 10.0}  # issue 8: speed-up wanted at each N


def features(n: int, d: int, *, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(12345).normal(size=(256, d)) / 8.0  # shared by gen and ref
    latent = rng.normal(size=(n, 256)) * np.linspace(1.5, 0.2, 256)
    x = latent @ basis + 0.3 * rng.normal(size=(n, d)) + 0.5 + shift
    return np.maximum(x, 0.0).astype(np.float32)  # ReLU'd like pool3, float32 like every extractor's output


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, action="append", help="generated samples (repeatable; default 1000 and 10000)")
    p.add_argument("--n-ref", type=int, default=10000, help="reference samples (default 10000)")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per side (default 3)")
    p.add_argument("--bootstrap", type=int, default=20, help="evalkit bootstrap replicates timed (default 20)")
    p.add_argument("--json", help="append result records (JSON lines) to this file")
    args = p.parse_args(argv)
    ns = args.n or [1000, 10000]

    from cleanfid.fid import frechet_distance as cleanfid_fd

    from evalkit.metrics.frechet import (
        frechet_distance_prepared,
        frechet_distance_resampled,
        frechet_distance_to_reference,
        prepare_reference,
    )
    from evalkit.metrics.resampling import bootstrap_indices

    print_machine()
    ref = features(args.n_ref, args.dim, seed=1).astype(np.float64)
    mu_r, sigma_r = np.mean(ref, axis=0), np.cov(ref, rowvar=False)
    t0 = time.perf_counter()
    prepared = prepare_reference(mu_r, sigma_r)
    prep_s = time.perf_counter() - t0
    print(
        f"reference: N_ref={args.n_ref}, d={args.dim}; evalkit prepare_reference (once, untimed below): "
        f"{fmt_s(prep_s)}, rank {prepared.rank}",
        flush=True,
    )
    ok = True
    for n in ns:
        x = features(n, args.dim, seed=100 + n, shift=0.05)

        sub: dict[str, list[float]] = {"cleanfid_fd_only": [], "evalkit_fd_only": []}

        def clean() -> float:
            mu, sigma = np.mean(x, axis=0), np.cov(x, rowvar=False)
            t0 = time.perf_counter()
            value = float(cleanfid_fd(mu, sigma, mu_r, sigma_r))
            sub["cleanfid_fd_only"].append(time.perf_counter() - t0)
            return value

        def ours() -> float:
            return frechet_distance_to_reference(x, prepared)

        def ours_from_stats() -> float:
            mu, sigma = np.mean(x, axis=0), np.cov(x, rowvar=False)
            t0 = time.perf_counter()
            value = frechet_distance_prepared(mu, sigma, prepared)
            sub["evalkit_fd_only"].append(time.perf_counter() - t0)
            return value

        times, vals = interleaved(
            {"evalkit": ours, "clean-fid sqrtm": clean, "evalkit stats": ours_from_stats}, args.repeats
        )
        idx = bootstrap_indices(n, args.bootstrap, 0)
        t0 = time.perf_counter()
        frechet_distance_resampled(x, prepared, idx)
        boot_s = (time.perf_counter() - t0) / args.bootstrap
        m_ours, m_ref = median(times["evalkit"]), median(times["clean-fid sqrtm"])
        m_ours_st, m_ref_st = median(sub["evalkit_fd_only"]), median(sub["cleanfid_fd_only"])
        ratio, ratio_st = m_ref / m_ours, m_ref_st / m_ours_st
        d = rel(vals["evalkit"], vals["clean-fid sqrtm"])
        d_st = rel(vals["evalkit stats"], vals["clean-fid sqrtm"])
        target = TARGETS.get(n)
        passed = (target is None or ratio >= target) and max(d, d_st) <= 1e-6
        ok &= passed
        print(
            f"FD N={n} d={args.dim} from features (mean+cov+FD): evalkit {fmt_s(m_ours)} vs clean-fid sqrtm "
            f"{fmt_s(m_ref)} (medians of {args.repeats}) -> {ratio:.1f}x faster (target {target or '-'}x); "
            f"FD {vals['evalkit']:.10g} vs {vals['clean-fid sqrtm']:.10g}, rel diff {d:.2e} (<=1e-6) "
            f"{'PASS' if passed else 'FAIL'}",
            flush=True,
        )
        print(
            f"FD N={n} d={args.dim} from statistics (FD of given mu1, Sigma1): evalkit frechet_distance_prepared "
            f"{fmt_s(m_ours_st)} vs clean-fid frechet_distance {fmt_s(m_ref_st)} -> {ratio_st:.1f}x; rel diff "
            f"{d_st:.2e}; one bootstrap replicate (frechet_distance_resampled, mean of {args.bootstrap}) "
            f"{fmt_s(boot_s)} -> {m_ref / boot_s:.0f}x",
            flush=True,
        )
        emit(
            {
                "bench": "frechet",
                "n": n,
                "n_ref": args.n_ref,
                "dim": args.dim,
                "repeats": args.repeats,
                "evalkit_s": times["evalkit"],
                "cleanfid_s": times["clean-fid sqrtm"],
                "median_evalkit_s": m_ours,
                "median_cleanfid_s": m_ref,
                "ratio": ratio,
                "evalkit_stats_s": sub["evalkit_fd_only"],
                "cleanfid_stats_s": sub["cleanfid_fd_only"],
                "ratio_from_stats": ratio_st,
                "bootstrap_replicate_s": boot_s,
                "fd_evalkit": vals["evalkit"],
                "fd_cleanfid": vals["clean-fid sqrtm"],
                "fd_evalkit_stats": vals["evalkit stats"],
                "rel_diff": d,
                "rel_diff_stats": d_st,
                "prepare_s": prep_s,
            },
            args.json,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
