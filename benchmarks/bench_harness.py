"""d. Harness overhead on the smoke suite: wall clock of a whole run ÷ (pure generation + pure extraction).

    python benchmarks/bench_harness.py                        # smoke suite, 48 samples per cell, 1 repeat
    python benchmarks/bench_harness.py --samples 200 --repeats 2   # the full smoke suite (200 samples/cell)

Before the timed repeats, an untimed run of a tiny copy of the suite (10 samples, one step count and
guidance) warms the process for both sides. One repeat = (1) the harness: ``Runner(suite).run()`` in this process
into a fresh run folder with a fresh
reference-feature cache (wall clock around ``run()``: reference features, every cell's warm-up,
generation, extraction, metrics, store writes, results table); then (2) the pure parts, measured
independently with the same objects the runner builds: for every cell the adapter's ``generate`` over
the cell's sample indices at the suite's batch size (batches consumed, nothing else), each batch
through the extractor, and the reference images through the extractor. The ratio is
``wall(run) / (Σ pure generation + Σ pure extraction incl. the reference)`` (target ≤ 1.10). The
per-cell ``timings`` the runner records (``cells/<id>/cell.json``) are summed too, to show where the
harness time goes (warm-up, metrics, the rest = store writes, grids, bookkeeping).

``--samples`` makes a reduced copy of the suite (same grid, fewer samples per cell, batch = samples)
so the benchmark stays short; ``--profile`` writes a cProfile of one harness run (top 25 printed).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import emit, fmt_s, median, print_machine


def pure_parts(suite, device: str = "cpu") -> dict[str, float]:
    """Generation and extraction of every cell (and the reference), nothing else, timed separately."""
    import torch

    from evalkit.features.base import build_extractor
    from evalkit.generate import GenerationRequest, build_adapter
    from evalkit.references import open_reference
    from evalkit.suite.conditions import expand_conditions

    conditions = expand_conditions(
        suite.conditions, suite.samples, Path(suite.file).parent if suite.file else Path.cwd()
    )
    extractors = [
        build_extractor(n, device=device) for n in sorted({m.extractor for m in suite.metrics if m.extractor})
    ]
    gen_s = ext_s = ref_s = 0.0
    ref = open_reference(suite.reference, base_dir=Path(suite.file).parent if suite.file else Path.cwd())
    with torch.inference_mode():
        t0 = time.perf_counter()
        for batch in ref.iter_batches(suite.batch_size):
            for ex in extractors:
                ex(batch)
        ref_s = time.perf_counter() - t0
    adapters = {}
    for cell in suite.cells():
        if cell.model.name not in adapters:
            adapters[cell.model.name] = build_adapter(cell.model.adapter, device=device, **cell.model.options)
        adapter = adapters[cell.model.name]
        idx = np.arange(cell.n, dtype=np.int64)
        labels, prompts = conditions.take(idx)
        req = GenerationRequest(
            indices=idx,
            seed=cell.seed,
            sampler=cell.sampler.name,
            steps=cell.steps,
            guidance=cell.guidance,
            batch_size=suite.batch_size,
            sampler_options=cell.sampler.options,
            labels=labels,
            prompts=prompts,
            device=device,
        )
        stream = iter(adapter.generate(req))
        while True:
            t0 = time.perf_counter()
            batch = next(stream, None)
            gen_s += time.perf_counter() - t0
            if batch is None:
                break
            images = batch.images
            t0 = time.perf_counter()
            for ex in extractors:
                ex(images)
            ext_s += time.perf_counter() - t0
    return {"generate_s": gen_s, "extract_s": ext_s, "reference_extract_s": ref_s}


def harness_run(suite, out: Path, cache: Path, profile: Path | None = None) -> tuple[float, dict[str, float]]:
    from evalkit.run.runner import Runner

    runner = Runner(suite, out, device="cpu", cache_dir=cache)
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    summary = runner.run()
    if prof:
        prof.disable()
    wall = time.perf_counter() - t0
    if summary.failed:
        raise RuntimeError(f"cells failed: {summary.failed}")
    sums: dict[str, float] = {}
    for f in sorted(out.glob("cells/*/cell.json")):
        for k, v in json.loads(f.read_text())["timings"].items():
            sums[k] = sums.get(k, 0.0) + float(v)
    if prof:
        prof.dump_stats(str(profile))
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(25)
        print(s.getvalue())
    return wall, sums


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="smoke")
    p.add_argument(
        "--samples",
        type=int,
        default=48,
        help="samples per cell in the reduced copy (default 48; the smoke suite itself has 200)",
    )
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--profile", help="write a cProfile of the (first) harness run here and print its top 25")
    p.add_argument("--json", help="append result records (JSON lines) to this file")
    args = p.parse_args(argv)

    import torch

    from evalkit.suite import load_suite

    print_machine()
    suite = load_suite(args.suite)
    if args.samples and args.samples != suite.samples:
        suite = dataclasses.replace(
            suite,
            samples=args.samples,
            batch_size=min(suite.batch_size, args.samples),
            grid_samples=min(suite.grid_samples, args.samples),
        )
    cells = suite.cells()
    print(
        f"suite {suite.name}: {len(cells)} cells × {suite.samples} samples, batch {suite.batch_size}, "
        f"metrics {[m.name for m in suite.metrics]}, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    walls, pures, sums_all = [], [], []
    with tempfile.TemporaryDirectory(prefix="evalkit-harness-") as tmp:
        # Untimed: a tiny run of the same suite, so that both sides are timed in a warm process (imports of
        # the dataset and metric packages, thread pools, first-call kernels) and neither pays that alone.
        tiny = dataclasses.replace(
            suite, samples=10, batch_size=10, grid_samples=10, steps=suite.steps[:1], guidance=suite.guidance[:1]
        )
        harness_run(tiny, Path(tmp) / "warm", Path(tmp) / "warm-cache")
        pure_parts(tiny)
        for r in range(args.repeats):
            # alternate which side runs first
            order = ("harness", "pure") if r % 2 == 0 else ("pure", "harness")
            for side in order:
                if side == "harness":
                    prof = Path(args.profile) if args.profile and r == 0 else None
                    wall, sums = harness_run(suite, Path(tmp) / f"run{r}", Path(tmp) / f"cache{r}", prof)
                    walls.append(wall)
                    sums_all.append(sums)
                else:
                    pures.append(pure_parts(suite))
    wall = median(walls)
    pure_gen = median([q["generate_s"] for q in pures])
    pure_ext = median([q["extract_s"] + q["reference_extract_s"] for q in pures])
    pure = pure_gen + pure_ext
    ratio = wall / pure
    s = {k: median([x[k] for x in sums_all]) for k in sums_all[0]}
    rest = wall - s["total_s"]
    in_cells_other = s["total_s"] - s["warmup_s"] - s["generate_s"] - s["extract_s"] - s["metrics_s"]
    print(
        f"d. HARNESS OVERHEAD {suite.name} ({len(cells)} cells × {suite.samples}): run wall {fmt_s(wall)} / (pure "
        f"generation {fmt_s(pure_gen)} + pure extraction {fmt_s(pure_ext)}) = {ratio:.3f} (target <= 1.10) "
        f"{'PASS' if ratio <= 1.10 else 'FAIL'}  (medians of {args.repeats})"
    )
    print(
        f"   where the run's time goes (sums of cells/*/cell.json timings): generate {fmt_s(s['generate_s'])}, "
        f"extract {fmt_s(s['extract_s'])}, warm-up {fmt_s(s['warmup_s'])} ({s['warmup_s'] / wall:.1%}), metrics "
        f"{fmt_s(s['metrics_s'])} ({s['metrics_s'] / wall:.1%}), rest of cells (store writes, grids, checks) "
        f"{fmt_s(in_cells_other)} ({in_cells_other / wall:.1%}); outside cells (reference features, manifest, "
        f"results table) {fmt_s(rest)} ({rest / wall:.1%})",
        flush=True,
    )
    emit(
        {
            "bench": "harness",
            "suite": suite.name,
            "cells": len(cells),
            "samples": suite.samples,
            "repeats": args.repeats,
            "wall_s": walls,
            "pure": pures,
            "cell_timing_sums": sums_all,
            "ratio": ratio,
        },
        args.json,
    )
    return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
