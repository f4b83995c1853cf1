"""Scale-out: ``torchrun --nproc-per-node 2 -m evalkit run`` (gloo on CPU) equals one process, and resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import torch

from evalkit.cli import main
from evalkit.run.distributed import Dist
from evalkit.store import RunStore

SUITE = """\
name: dist
models: [{name: mnist, adapter: zoo}]
samplers: [ddim]
steps: [3]
guidance: [1, 3]
samples: 20
batch_size: 4
conditions: {classes: 10}
reference: {dataset: mnist-heldout, samples: 100}
extractor: mnist-net
metrics: [fd, throughput]
grid_samples: 10
"""


def test_shards_are_contiguous_whole_batches_covering_every_sample():
    idx = np.arange(23)
    for k in (1, 2, 3, 7):
        shards = [Dist(rank=r, world_size=k).shard(idx, 4) for r in range(k)]
        assert np.array_equal(np.concatenate(shards), idx)
        assert all(len(s) % 4 == 0 for s in shards[:-1] if len(s))  # batches keep their one-process composition


def test_torchrun_two_ranks_equals_one_process_and_resumes(tmp_path):
    suite = tmp_path / "dist.yaml"
    suite.write_text(SUITE)
    one, two = tmp_path / "one", tmp_path / "two"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers (OMP_NUM_THREADS=1): CPU kernels round alike, bit for bit
    try:
        assert main(["run", str(suite), "--out", str(one), "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    # the two-rank run resumes a copy of the one-process run with the guided cell removed
    shutil.copytree(one, two, ignore=shutil.ignore_patterns(".lock"))
    shutil.rmtree(two / "cells" / "mnist__ddim__s3__g3")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "evalkit",
            "run",
            str(suite),
            "--out",
            str(two),
            "-q",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "1 cells computed, 1 reused" in res.stdout
    assert res.stdout.count("run folder:") == 1  # only rank 0 reports

    a, b = RunStore(one), RunStore(two)
    cell = "mnist__ddim__s3__g3"
    record = b.read_cell(cell)
    assert record["world_size"] == 2 and [r["n"] for r in record["ranks"]] == [8, 12]
    sa, sb = a.load_samples(cell), b.load_samples(cell)
    assert sb["images"].shape == (10, 3, 32, 32) and np.array_equal(sb["indices"], np.arange(10))
    assert sa["images"].tobytes() == sb["images"].tobytes()  # samples 0..9 span both ranks' shards
    fa, fb = a.load_features(cell), b.load_features(cell)
    assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)
    ra, rb = (pd.read_parquet(s.root / "results.parquet").set_index(["guidance", "metric"])["value"] for s in (a, b))
    for metric in ("fd", "model_calls", "nfe"):
        assert abs(rb[(3.0, metric)] - ra[(3.0, metric)]) <= 1e-6 * abs(ra[(3.0, metric)]), metric
    assert rb[(3.0, "images_per_s")] > 0
    manifest = json.loads((two / "run.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == {"done": 2, "failed": 0, "total": 2}
