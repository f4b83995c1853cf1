"""``evalkit baseline`` and ``evalkit check``: run the suite, judge it, and say so in markdown and JUnit.

Exit codes of ``check``: 0 pass (improvements included), 1 regression (or a cell that failed to run),
2 usage or configuration error (another protocol, seed, extractor weights or reference; missing cells; a
baseline sidecar that is missing or broken — found, with the protocol and seed, before the suite runs).
``baseline`` exits 2 when the runs cannot make a baseline. The verdict rule lives in
:mod:`evalkit.gate.compare`, rendering in :mod:`evalkit.gate.render`; this module only runs and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, EvalkitError
from evalkit.gate.schema import DEFAULT_RESAMPLES

if TYPE_CHECKING:  # the verdict, the store and pandas load in the functions: --help stays light
    from evalkit.gate.baseline import Baseline, Tolerance
    from evalkit.gate.compare import CheckReport
    from evalkit.store import RunData


# -- arguments, checked before any work ------------------------------------------------------------
def option_problems(*, k: float | None, n_resamples: int, confidence: float) -> list[str]:
    """What is wrong with check's numeric options (empty: nothing)."""
    problems = []
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        problems.append(f"--confidence {confidence}: must be between 0 and 1 (exclusive), e.g. 0.95")
    if not isinstance(n_resamples, int) or n_resamples < 1:
        problems.append(f"--bootstrap {n_resamples}: must be at least 1")
    if k is not None and not (math.isfinite(k) and k > 0):
        problems.append(f"--k {k}: must be a finite number > 0")
    return problems


def unwritable(path: str | Path) -> str | None:
    """Why ``path`` cannot be written (None: it can). Probes by opening it for appending — the only test that
    holds for root, read-only mounts and paths under a file — and removes a file it had to create."""
    p = Path(path)
    if p.is_dir():
        return "is a directory"
    blocking = next((a for a in p.parents if a.exists() and not a.is_dir()), None)
    if blocking is not None:
        return f"{blocking} is not a directory"
    existed = p.exists()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    if not existed:
        with contextlib.suppress(OSError):
            p.unlink()
    return None


def output_problems(junit: str | None, markdown: str | None) -> list[str]:
    """The output files asked for (and ``$GITHUB_STEP_SUMMARY``) that cannot be written."""
    outputs = [
        ("--junit", junit),
        ("--markdown", markdown),
        ("GITHUB_STEP_SUMMARY", os.environ.get("GITHUB_STEP_SUMMARY")),
    ]
    return [f"{flag} {path}: cannot be written ({why})" for flag, path in outputs if path and (why := unwritable(path))]


# -- running ----------------------------------------------------------------------------------------
def is_run_folder(target: str | Path) -> bool:
    return Path(target).is_dir() and (Path(target) / "run.json").is_file()


def _run_suite(suite: Any, out: Path, *, device: str, batch_size: int | None, progress: bool) -> Any:
    from evalkit.run.runner import Runner

    runner = Runner(suite, out, device=device, batch_size=batch_size, progress=progress)
    runner.run()
    return runner


def run_check(
    target: str | Path,
    baseline_path: str | Path,
    *,
    k: float | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    progress: bool = False,
) -> CheckReport:
    """Run ``target`` (a suite) or read it (a run folder) and judge it against the baseline.

    A suite runs in a fresh temporary folder unless ``out`` is given (then finished cells are reused:
    only do that when the model cannot have changed in between). Raises :class:`CheckConfigError`.
    """
    from evalkit.gate.baseline import Baseline, CheckConfigError
    from evalkit.gate.compare import config_problems, is_paired
    from evalkit.gate.integrity import sidecar_problems
    from evalkit.store import read_run

    bad = option_problems(k=k, n_resamples=n_resamples, confidence=confidence)
    if bad:
        raise CheckConfigError(bad)
    baseline = Baseline.load(baseline_path)
    judge = {"k": k, "allow_other_seed": seed is not None, "n_resamples": n_resamples, "confidence": confidence}
    if is_run_folder(target):
        run = read_run(target)
        if seed is not None and seed != run.seed:
            raise CheckConfigError([f"--seed {seed}: the run folder {target} was made with seed {run.seed}"])
        if is_paired(baseline, run.seed, run.n) and (sidecar := sidecar_problems(baseline)):
            raise CheckConfigError(sidecar)
        return _judged(baseline, run, judge)
    from evalkit.suite import load_suite

    suite = load_suite(target)
    if seed is not None:
        suite = dataclasses.replace(suite, seed=seed)
    # a broken .npz must not cost a whole run before it is noticed (only a paired check reads it)
    early = sidecar_problems(baseline) if is_paired(baseline, suite.seed, suite.samples) else []
    early += config_problems(baseline, suite.to_config(), allow_other_seed=seed is not None)
    if early:  # before spending minutes on a run that cannot be judged
        raise CheckConfigError(early)
    with tempfile.TemporaryDirectory(prefix="evalkit-check-") as tmp:
        folder = Path(out) if out is not None else Path(tmp) / "run"
        _run_suite(suite, folder, device=device, batch_size=batch_size, progress=progress)
        return _judged(baseline, read_run(folder), judge)


def _judged(baseline: Baseline, run: RunData, judge: dict[str, Any]) -> CheckReport:
    """:func:`compare` (which also says what changed besides the numbers: adapters, weights, versions)."""
    from evalkit.gate.compare import compare

    return compare(baseline, run, **judge)


def make_baseline(
    suite_path: str | Path,
    output: str | Path,
    *,
    seeds: int,
    work_dir: str | Path | None = None,
    tolerance: Tolerance | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    features: bool = True,
    progress: bool = False,
) -> Baseline:
    """Run the suite on seed sets ``seed + 0..seeds-1`` (resumable run folders under ``work_dir``)."""
    from evalkit.gate.baseline import CheckConfigError, Tolerance, build_baseline
    from evalkit.store import read_run
    from evalkit.suite import load_suite

    if seeds < 2:
        raise CheckConfigError(["--seeds must be at least 2 (noise is measured across seed sets)"])
    suite = load_suite(suite_path)
    work = Path(work_dir) if work_dir else Path("runs") / f"baseline-{suite.name}"
    runs, first = [], None
    for i in range(seeds):
        s = dataclasses.replace(suite, seed=suite.seed + i)
        if progress:
            print(f"seed set {i + 1}/{seeds} (seed {s.seed})", file=sys.stderr)
        runner = _run_suite(s, work / f"seed-{s.seed}", device=device, batch_size=batch_size, progress=progress)
        first = first or runner
        runs.append(read_run(runner.store.root))
    ref = first.reference_features() if features else None
    baseline, sidecar = build_baseline(runs, tolerance=tolerance or Tolerance(), reference_features=ref)
    baseline.save(output, sidecar if features else None)
    return baseline


# -- commands ---------------------------------------------------------------------------------------
def _cmd_check(args: argparse.Namespace) -> int:
    from evalkit.gate.render import config_error_markdown, junit_config_error, junit_xml, markdown_report, publish

    t0 = time.perf_counter()
    bad = option_problems(k=args.k, n_resamples=args.bootstrap, confidence=args.confidence)
    bad += output_problems(args.junit, args.markdown)
    if bad:  # before any work, and one line: the outputs may be what cannot be written
        raise ConfigError("; ".join(bad))
    try:
        report = run_check(
            args.target,
            args.baseline,
            k=args.k,
            seed=args.seed,
            out=args.out,
            device=args.device,
            batch_size=args.batch_size,
            n_resamples=args.bootstrap,
            confidence=args.confidence,
            progress=not args.quiet,
        )
    except EvalkitError as e:  # nothing was judged: say why in every output CI reads, one line on stderr
        if e.exit_code == EXIT_USAGE:
            problems = getattr(e, "problems", None) or [str(e)]
            md = config_error_markdown(problems, args.baseline)
            junit = junit_config_error(problems, args.baseline)
            publish(md, junit=junit, junit_path=args.junit, markdown_path=args.markdown)
        raise
    md = markdown_report(report)
    print(md)
    publish(
        md,
        junit=junit_xml(report, seconds=time.perf_counter() - t0),
        junit_path=args.junit,
        markdown_path=args.markdown,
    )
    if not args.quiet:
        print(f"evalkit check: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return EXIT_FAILED if report.exit_code else EXIT_OK


def _cmd_baseline(args: argparse.Namespace) -> int:
    from evalkit.gate.baseline import CheckConfigError, Tolerance, effective_k
    from evalkit.gate.render import md_text

    bad = ["--seeds must be at least 2 (noise is measured across seed sets)"] if args.seeds < 2 else []
    bad += [
        f"--{n} {v}: must be a finite non-negative number"
        for n in ("k", "rel", "abs")
        if not math.isfinite(v := getattr(args, n)) or v < 0
    ]
    if bad:
        raise ConfigError("; ".join(bad))
    try:
        b = make_baseline(
            args.suite,
            args.output,
            seeds=args.seeds,
            work_dir=args.work_dir,
            tolerance=Tolerance(args.k, args.rel, args.abs),
            device=args.device,
            batch_size=args.batch_size,
            features=not args.no_features,
            progress=not args.quiet,
        )
    except CheckConfigError as e:
        raise ConfigError("cannot make a baseline: " + "; ".join(e.problems)) from None
    print(
        f"| cell | metric | value (seed {b.seed}) | mean | σ over {len(b.seeds)} seed sets | sampling σ |\n"
        "|---|---|---:|---:|---:|---:|"
    )
    for e in b.entries:
        sampling = f"{e.sigma_sampling:.3g}" if e.sigma_sampling else ""
        print(
            f"| {md_text(e.cell)} | {md_text(e.metric)} | {e.value:.4g} | {e.mean:.4g} | {e.sigma:.3g} | {sampling} |"
        )
    k_eff = effective_k(args.k, len(b.seeds))
    print(
        f"\ntolerance: k={args.k:g} → k_eff={k_eff:.2f}σ with {len(b.seeds)} seed sets"
        + (
            "  (few seed sets make σ uncertain and the tolerance wide: use --seeds 10 or more)"
            if len(b.seeds) < 10
            else ""
        )
    )
    side = f" + {b.features_file}" if b.features_file else ""
    print(f"\nwrote {b.path}{side} (protocol {b.protocol_hash}, seeds {b.seeds[0]}..{b.seeds[-1]}, N={b.n})")
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, help="override the suite's batch size (does not change the numbers)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def register(subparsers: Any) -> None:
    """Add ``baseline`` and ``check`` to the ``evalkit`` command (called by :mod:`evalkit.cli`)."""
    b = subparsers.add_parser("baseline", help="measure a suite's values and seed noise into a baseline file")
    b.add_argument("suite", help="suite YAML file or embedded suite name")
    b.add_argument("--seeds", type=int, default=10, help="seed sets K: seed+0..seed+K-1 (default 10)")
    b.add_argument("-o", "--output", required=True, help="baseline JSON to write (features go beside it as .npz)")
    b.add_argument("--work-dir", help="run folders, one per seed set; resumable (default runs/baseline-<suite>)")
    b.add_argument("--k", type=float, default=3.0, help="tolerance in noise σ (default 3)")
    b.add_argument("--rel", type=float, default=0.02, help="relative tolerance floor (default 0.02)")
    b.add_argument("--abs", type=float, default=0.0, help="absolute tolerance floor (default 0)")
    b.add_argument("--no-features", action="store_true", help="no feature sidecar (checks are then unpaired)")
    _common(b)
    b.set_defaults(func=_cmd_baseline)

    c = subparsers.add_parser("check", help="judge a suite run against a baseline (exit 0 pass, 1 regression, 2 error)")
    c.add_argument("target", help="suite YAML (it is run) or an existing run folder (it is read)")
    c.add_argument("--baseline", required=True, help="baseline JSON made by `evalkit baseline`")
    c.add_argument("--junit", help="write JUnit XML here (one testcase per cell × metric)")
    c.add_argument("--markdown", help="also write the markdown table here")
    c.add_argument("--k", type=float, help="override the baseline's tolerance in noise σ")
    c.add_argument("--seed", type=int, help="run on this seed instead of the suite's (fresh seed set: unpaired)")
    c.add_argument("--out", help="run folder to use (default: a fresh temporary one)")
    c.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_RESAMPLES,
        help=f"paired bootstrap resamples (default {DEFAULT_RESAMPLES})",
    )
    c.add_argument("--confidence", type=float, default=0.95, help="paired CI level (default 0.95)")
    _common(c)
    c.set_defaults(func=_cmd_check)
