"""``evalkit run SUITE``: run a suite into a run folder (resuming it), or plan it with ``--dry-run``;
``evalkit score GEN --ref REF``: score images that already exist into such a folder (:mod:`evalkit.run.score`).

Cheap to import: the runner, the suite loader and pandas load inside the handler. ``--dry-run`` needs no torch
for the built-in offline models (:mod:`evalkit.run.dry_run`); any other adapter it builds imports its own.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from evalkit.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError


def cmd_run(args: argparse.Namespace) -> int:
    from evalkit.suite import load_suite

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer ≥ 1; got {args.batch_size}")
    suite = load_suite(args.suite)  # before torch and diffusers load: a bad suite fails in well under a second
    out = Path(args.out) if args.out else Path("runs") / suite.name
    if args.dry_run:
        return _dry_run(args, suite, out)
    from evalkit.run import distributed
    from evalkit.run.preflight import PreflightError, print_problems
    from evalkit.run.runner import Runner
    from evalkit.store import read_run

    runner = Runner(suite, out, device=args.device, batch_size=args.batch_size, progress=not args.quiet)
    try:
        summary = runner.run()
    except PreflightError as e:  # every problem on its own line(s), not one long line
        if runner.dist.is_main:
            print_problems(e)
        return EXIT_USAGE
    except distributed.PeerFailed:
        return EXIT_FAILED  # rank 0 prints the error
    finally:
        distributed.shutdown()
    if not runner.dist.is_main:  # under torchrun only rank 0 reports
        return summary.exit_code
    print(summary_table(read_run(out), cache_dir=runner.cache_dir))  # this suite's cells (not other suites')
    failed_metrics = sum(len(m) for m in summary.failed_metrics.values())
    print(
        f"\nrun folder: {out}  ({len(summary.done)} cells computed, {len(summary.reused)} reused, "
        f"{len(summary.failed)} failed" + (f"; {failed_metrics} metric rows failed" if failed_metrics else "") + ")"
    )
    for cell_id, err in summary.failed.items():
        where = runner.store.cell_dir(cell_id) / "cell.json"
        print(f"FAILED {cell_id}: {err}  (traceback in {where})", file=sys.stderr)
    for cell_id, errors in summary.failed_metrics.items():
        for metric, err in errors.items():
            print(f"FAILED metric {metric} of {cell_id}: {err}", file=sys.stderr)
    if summary.failed_metrics:
        print(
            "(the cells' other metrics and their features are kept; a failed metric's rows hold value NaN and the "
            "error. Fix the cause, then delete those cells' folders under "
            f"{runner.store.root / 'cells'} and run again to recompute them)",
            file=sys.stderr,
        )
    return summary.exit_code


def _dry_run(args: argparse.Namespace, suite: Any, out: Path) -> int:
    """:func:`evalkit.run.dry_run.dry_run`, building the :class:`~evalkit.run.runner.Runner` (torch) only for a cell
    whose adapter must be built to tell its model calls; the built-in offline models need none."""
    from evalkit.run.dry_run import dry_run

    runner = None

    def build_runner() -> Any:
        nonlocal runner
        if runner is None:
            from evalkit.run.runner import Runner

            runner = Runner(suite, out, device=args.device, batch_size=args.batch_size, progress=False)
        return runner

    try:
        torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # as distributed.torchrun_env, without torch
        if torchrun and not build_runner().dist.is_main:  # every rank joins, as for a run; only rank 0 reports
            return EXIT_OK
        batch_size = args.batch_size or suite.batch_size
        return dry_run(suite, batch_size=batch_size, adapter_for=lambda cell: build_runner().adapter(cell))
    finally:
        if runner is not None:
            from evalkit.run import distributed

            distributed.shutdown()


def summary_table(run: Any, *, cache_dir: Path | None = None) -> str:
    """The end-of-run summary of a run folder (a :class:`~evalkit.store.RunData`): every metric with its CI and
    N, ties and the floor marked, the best sampler per step count only where a CI backs it
    (:func:`evalkit.study.summary.summary_text`)."""
    from evalkit.study.summary import summary_text

    return summary_text(run, cache_dir=cache_dir)


def cmd_score(args: argparse.Namespace) -> int:
    from evalkit.run.score import image_set_name, score_images
    from evalkit.store import read_run

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer ≥ 1; got {args.batch_size}")
    out = Path(args.out) if args.out else Path("runs") / f"score-{image_set_name(Path(args.gen))}"
    df = score_images(
        args.gen,
        args.ref,
        args.metrics,
        extractor=args.extractor,
        out=out,
        prompts=args.prompts,
        strict=args.strict,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(summary_table(read_run(out)))
    state = "reused (images, reference and metrics unchanged)" if df.attrs.get("reused") else "computed"
    print(f"\nrun folder: {out}  (cell {df.attrs.get('cell_id')} {state})")
    failed = df[df["error"].astype(str) != ""]
    for _, row in failed.iterrows():
        print(f"FAILED metric {row['metric']} of {row['cell_id']}: {row['error']}", file=sys.stderr)
    return EXIT_FAILED if len(failed) else EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``score`` to the ``evalkit`` command."""
    _register_score(subparsers)
    r = subparsers.add_parser("run", help="run a suite (resumes an existing run folder)")
    r.add_argument("suite", help="suite YAML file, or the name of an embedded suite (e.g. smoke)")
    r.add_argument("--out", help="run folder (default: runs/<suite name>)")
    r.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    r.add_argument("--batch-size", type=int, help="override the suite's batch size")
    r.add_argument("--dry-run", action="store_true", help="print cells, samples and estimated model calls; run nothing")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run, needs_torch=lambda a: not a.dry_run)  # a dry-run imports torch only if it must


def _register_score(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "score",
        help="score images you already have against a reference (as clean-fid's compute_fid), into a run folder",
        description="Score existing images: evalkit score GEN --ref REF -m fd kid ... "
        "(GEN: a folder, .zip, .tar webdataset shard or .npz uint8 array; rows as `evalkit run` writes them).",
    )
    s.add_argument("gen", help="the images to score: folder (recursive), .zip, .tar (key.png + key.txt) or .npz array")
    s.add_argument(
        "--ref",
        required=True,
        help="reference: images (folder, .zip, .tar, .npz), a built-in dataset (mnist-heldout), or statistics "
        "(clean-fid / pytorch-fid .npz with mu and sigma, torch-fidelity's cached .pt, `evalkit stats --out`)",
    )
    s.add_argument(
        "-m", "--metrics", nargs="+", default=["fd"], metavar="METRIC", help="metrics (default: fd); see evalkit list"
    )
    s.add_argument(
        "-e",
        "--extractor",
        help="extractor of the metrics without one of their own (fd, kid, is, pr, ...; default: inception, "
        "clean-fid's); a metric with its own keeps it: clip_score and cmmd clip, lpips lpips-alex, psnr/ssim/ms_ssim "
        "pixels",
    )
    s.add_argument(
        "--prompts",
        help="prompts for clip_score: a .txt (one per line), .jsonl, .csv or .json file with one prompt per image, "
        "in sorted file-name order (default: key.txt beside each key.png)",
    )
    s.add_argument("--out", help="run folder (default: runs/score-<name of GEN>)")
    s.add_argument(
        "--strict", action="store_true", help="an unreadable image is an error (default: listed, skipped, warned)"
    )
    s.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    s.add_argument("--batch-size", type=int, help="images per extractor batch (default 64)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_score)
