"""Does the quality gate work? False alarms on fresh seeds and power against degraded models.

    python benchmarks/quality_gate.py                       # suites/ci.yaml against baselines/ci.json
    python benchmarks/quality_gate.py --fresh 20 --degraded-seeds 3 --noise 0.05 --half-steps

1. False alarms: the *same* model on ``--fresh`` seed sets the baseline never saw (seed + 1000 + j);
   each run is checked against the baseline (unpaired). A good gate fails at most one of 20.
2. Power: degraded models — the UNet's weights plus Gaussian noise of ``--noise`` × each tensor's std
   (a plugin adapter defined here, ``quality_gate:perturbed_zoo``), and the same weights sampled with
   half the steps behind the suite's back — on the baseline's seed (paired) and on fresh seed sets
   (unpaired). Power = fraction of degraded runs the check fails.

Run folders go under ``--work`` (resumable: a finished run is read, not recomputed). Prints one line
per run and the two figures at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # so the suite's adapter "quality_gate:perturbed_zoo" imports


def perturbed_zoo(device: str = "cpu", noise: float = 0.0, noise_seed: int = 0, step_factor: float = 1.0) -> Any:
    """The trained zoo model with weight noise (``noise`` × std of each tensor) and/or fewer steps."""
    import torch

    from evalkit.generate.zoo_adapter import ZooMnistAdapter

    class Degraded(ZooMnistAdapter):
        def generate(self, request):
            if step_factor != 1.0:
                request = dataclasses.replace(request, steps=max(1, round(request.steps * step_factor)))
            yield from super().generate(request)

        def info(self) -> dict[str, Any]:
            return {**super().info(), "weight_noise": noise, "noise_seed": noise_seed, "step_factor": step_factor}

    model = Degraded(weights="trained", device=device)
    if noise > 0:
        gen = torch.Generator().manual_seed(noise_seed)
        with torch.no_grad():
            for p in model.unet.parameters():
                if p.numel() > 1:
                    p.add_(torch.randn(p.shape, generator=gen).to(p) * noise * p.std())
    return model


def with_model(suite: Any, adapter: str, options: dict[str, Any]) -> Any:
    """The suite with its (single) model swapped, keeping the model name: same protocol."""
    models = [dataclasses.replace(m, adapter=adapter, options=options) for m in suite.models]
    return dataclasses.replace(suite, models=models)


def run_and_check(suite: Any, folder: Path, baseline: Any, device: str) -> Any:
    from evalkit.gate.compare import compare
    from evalkit.run.runner import Runner
    from evalkit.store import read_run

    summary = Runner(suite, folder, device=device).run()
    if summary.failed:
        print(f"  cells failed in {folder}: {summary.failed}", file=sys.stderr)
    return compare(baseline, read_run(folder), allow_other_seed=True)


def worst(report: Any) -> str:
    """The entry closest to (or furthest past) its tolerance on the worse side."""

    def ratio(c: Any) -> float:
        sign = 1.0 if c.entry.higher_is_better else -1.0
        return (-sign * c.delta) / c.tolerance if c.tolerance > 0 else 0.0

    c = max(report.comparisons, key=ratio)
    return (
        f"worst {c.entry.cell}/{c.entry.metric}: delta {c.delta:+.4g} vs tolerance {c.tolerance:.3g} ({ratio(c):+.2f}×)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="suites/ci.yaml")
    p.add_argument("--baseline", default="baselines/ci.json")
    p.add_argument("--fresh", type=int, default=20, help="fresh seed sets of the unchanged model (default 20)")
    p.add_argument(
        "--noise",
        type=float,
        action="append",
        help="relative weight noise of a degraded model (repeatable; default 0.05)",
    )
    p.add_argument(
        "--half-steps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also test the model sampled with half the steps (default on)",
    )
    p.add_argument(
        "--degraded-seeds",
        type=int,
        default=3,
        help="seed sets per degraded model: the baseline's seed (paired) + fresh ones (default 3)",
    )
    p.add_argument("--work", default="runs/quality-gate", help="run folders (resumable)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from evalkit.gate.baseline import Baseline
    from evalkit.suite import load_suite

    baseline, suite = Baseline.load(args.baseline), load_suite(args.suite)
    work, fresh0 = Path(args.work), max(baseline.seeds) + 1000
    t0 = time.perf_counter()

    print(f"false alarms: the unchanged model on {args.fresh} fresh seed sets ({fresh0}..{fresh0 + args.fresh - 1})")
    alarms = 0
    for j in range(args.fresh):
        s = dataclasses.replace(suite, seed=fresh0 + j)
        rep = run_and_check(s, work / f"same-seed{s.seed}", baseline, args.device)
        alarms += rep.exit_code != 0
        print(f"  seed {s.seed}: {'ALARM' if rep.exit_code else 'pass '}  {worst(rep)}", flush=True)

    degraded = [(f"weights+{n:g}σ noise", "quality_gate:perturbed_zoo", {"noise": n}) for n in (args.noise or [0.05])]
    if args.half_steps:
        degraded.append(("half the steps", "quality_gate:perturbed_zoo", {"step_factor": 0.5}))
    seeds = [baseline.seed] + [fresh0 + 500 + j for j in range(args.degraded_seeds - 1)]
    caught = total = 0
    print(f"power: {len(degraded)} degraded models × seed sets {seeds} (the first is the baseline's: paired)")
    for label, adapter, options in degraded:
        for seed in seeds:
            s = dataclasses.replace(with_model(suite, adapter, options), seed=seed)
            tag = "-".join(f"{k}{v:g}" for k, v in options.items())
            rep = run_and_check(s, work / f"degraded-{tag}-seed{seed}", baseline, args.device)
            caught += rep.exit_code != 0
            total += 1
            fd = [f"{c.delta:+.3g}" for c in rep.comparisons if c.entry.metric == "fd"]
            print(
                f"  {label}, seed {seed} ({'paired' if rep.paired else 'unpaired'}): "
                f"{'caught' if rep.exit_code else 'MISSED'}  ({len(rep.regressions)} regressions; "
                f"FD deltas {', '.join(fd)})",
                flush=True,
            )

    print(f"\nFALSE ALARMS: {alarms}/{args.fresh} fresh seed sets of the unchanged model failed the check")
    print(f"POWER: {caught}/{total} = {caught / max(total, 1):.0%} of degraded runs caught")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0 if alarms <= args.fresh // 20 and caught == total else 1


if __name__ == "__main__":
    sys.exit(main())
