"""Peak RSS of a run vs its sample count: images must stream, only per-sample features may grow.

Runs the runner (built-in ``noise`` adapter → mnist-net extractor → FD against 1000 held-out digits)
over 5k and 20k samples, each in a fresh subprocess, and prints each one's peak RSS, the size of its
feature arrays and the differences. If images were held, 15k more 3×32×32 uint8 images would add
~46 MB; streaming adds only the features (15k × (64 + 10) float32 ≈ 4.4 MB) plus small bookkeeping.

    python benchmarks/peak_rss.py                 # 5000 and 20000 samples
    python benchmarks/peak_rss.py 2000 8000 --batch-size 200
    python benchmarks/peak_rss.py --fixed-mmap-threshold   # glibc fragmentation out of the picture

Finding (2 CPU cores, glibc): live data while images stream stays flat (tests/e2e/test_reliability_faults.py
counts the adapter's batches alive at once: ≤ 3), but with glibc's default *dynamic* mmap threshold
the RSS still grows ~13 KiB per sample: after the first large activation buffer is freed, glibc raises
its mmap threshold, later multi-MB activations come from the brk heap, and the small per-batch feature
arrays the runner keeps in a list pin that heap. With ``--fixed-mmap-threshold`` the streaming phase grows
by ~0 MiB. Fixed in the runner, which now copies each batch's features into arrays preallocated for
the cell (``np.empty((n, d))``) instead of keeping a list of per-batch arrays: +0.0 MiB while streaming.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    """A memory figure from /proc/self/status (Linux), else the lifetime peak from getrusage."""
    from evalkit.run.timing import status_mb

    mb = status_mb(field)
    return mb if mb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> float:
    """Reset the kernel's peak-RSS mark (VmHWM) so start-up (imports, reference set) does not hide the
    run's own peak; returns the current RSS."""
    from evalkit.run.timing import reset_peak_rss

    reset_peak_rss()
    return _status_mb("VmRSS")


def child(n: int, batch_size: int) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import evalkit.run.runner as runner_mod
    from evalkit.run.runner import Runner
    from evalkit.store import RunStore

    # the peak while images stream (generate + extract), read when scoring starts
    phase: dict[str, float] = {}
    score = Runner._score_and_write

    def marked(self, *a, **k):
        phase.setdefault("streaming_peak_mb", _status_mb("VmHWM"))
        return score(self, *a, **k)

    setattr(Runner, score.__name__, marked)
    del runner_mod
    from evalkit.suite import parse_suite

    suite = parse_suite(
        {
            "name": f"rss{n}",
            "models": [{"name": "noise", "adapter": "noise"}],
            "samplers": ["ddim"],
            "steps": [1],
            "samples": n,
            "batch_size": batch_size,
            "conditions": {"classes": 10},
            "reference": {"dataset": "mnist-heldout"},
            "extractor": "mnist-net",
            "metrics": ["fd"],
        }
    )
    with tempfile.TemporaryDirectory() as d:
        os.environ["EVALKIT_CACHE_DIR"] = str(Path(d) / "cache")
        runner = Runner(suite, Path(d) / "run", device="cpu")
        runner.extractors()
        runner.reference_features()  # built before the measurement starts: the same for every n
        start_rss = _reset_peak()
        t0 = time.perf_counter()
        summary = runner.run()
        seconds = time.perf_counter() - t0
        assert not summary.failed, summary.failed
        store = RunStore(Path(d) / "run")
        feats = store.load_features(suite.cells()[0].cell_id)
        feature_mb = sum(a.nbytes for a in feats.values()) / 2**20
        shapes = {k: list(v.shape) for k, v in feats.items()}
        fd = float(store.results().query("metric == 'fd'").value.iloc[0])
        peak = _status_mb("VmHWM")  # the peak since _reset_peak()
    print(
        json.dumps(
            {
                "n": n,
                "peak_rss_mb": peak,
                **phase,
                "rss_before_run_mb": start_rss,
                "feature_mb": feature_mb,
                "image_mb": n * 3 * 32 * 32 / 2**20,
                "shapes": shapes,
                "seconds": seconds,
                "fd": fd,
                "numpy": np.__version__,
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples", nargs="*", type=int, default=[5000, 20000])
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument(
        "--fixed-mmap-threshold",
        action="store_true",
        help="run the children with MALLOC_MMAP_THRESHOLD_=131072 (glibc): shows how much of the growth "
        "is heap fragmentation from glibc's dynamic mmap threshold rather than live data",
    )
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.batch_size)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if args.fixed_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    results = []
    for n in args.samples:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--batch-size", str(args.batch_size)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(
            f"n={n:>6}: peak RSS {r['peak_rss_mb']:7.1f} MiB (before the run {r['rss_before_run_mb']:.1f}; "
            f"while images stream {r['streaming_peak_mb']:.1f}), "
            f"features {r['feature_mb']:.2f} MiB {r['shapes']}, images would be {r['image_mb']:.1f} MiB, "
            f"{r['seconds']:.1f} s, FD {r['fd']:.1f}"
        )
    if len(results) >= 2:
        a, b = results[0], results[-1]
        d_feat = b["feature_mb"] - a["feature_mb"]
        d_img = b["image_mb"] - a["image_mb"]
        d_stream = (b["streaming_peak_mb"] - b["rss_before_run_mb"]) - (a["streaming_peak_mb"] - a["rss_before_run_mb"])
        d_rss = (b["peak_rss_mb"] - b["rss_before_run_mb"]) - (a["peak_rss_mb"] - a["rss_before_run_mb"])
        print(f"\n{a['n']} → {b['n']} samples (growth over each run's starting RSS):")
        print(f"  while images stream (generate + extract): +{d_stream:.1f} MiB")
        print(f"  whole run (incl. metrics and writing):    +{d_rss:.1f} MiB")
        print(f"  feature arrays: +{d_feat:.1f} MiB; holding the images would add +{d_img:.1f} MiB")
        print(
            "streaming: OK, grows by about the features, not the images"
            if d_stream < d_feat + 0.5 * d_img
            else "streaming: WARNING, grows like the images"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
