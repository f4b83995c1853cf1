"""``evalkit run SUITE``: run a suite into a run folder (resuming it), or plan it with ``--dry-run``.

Cheap to import: the runner, the suite loader and pandas load inside the handler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from evalkit.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError
from evalkit.registry import is_callable_ref


def cmd_run(args: argparse.Namespace) -> int:
    from evalkit.suite import load_suite

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer ≥ 1; got {args.batch_size}")
    suite = load_suite(args.suite)  # before torch and diffusers load: a bad suite fails in well under a second
    from evalkit.run import distributed
    from evalkit.run.preflight import PreflightError
    from evalkit.run.runner import Runner
    from evalkit.store import read_run

    out = Path(args.out) if args.out else Path("runs") / suite.name
    runner = Runner(suite, out, device=args.device, batch_size=args.batch_size, progress=not args.quiet)
    try:
        if args.dry_run:
            return dry_run(runner) if runner.dist.is_main else EXIT_OK
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


def dry_run(runner: Any) -> int:
    """Cells (after ``only``/``exclude``), samples and the model calls they will cost, then every problem the run
    would stop on (:mod:`evalkit.run.preflight`; exit 2). ``module:function`` adapters are not imported: a plan
    must not run a plugin's code (their calls show as '?'); with problems found, no model is built either."""
    from evalkit.run.preflight import PreflightError, preflight
    from evalkit.suite.grid import full_points

    suite = runner.suite
    problems = preflight(suite, base_dir=runner.base_dir, import_plugins=False)
    total_calls, cells, full = 0, suite.cells(), len(full_points(suite))
    dropped = f" (of {full} in the grid: {full - len(cells)} dropped by only/exclude)" if full != len(cells) else ""
    print(f"suite {suite.name}: {len(cells)} cells{dropped} × {suite.samples} samples, batch {runner.batch_size}")
    notes, errors = {}, 0
    for cell in cells:
        if is_callable_ref(cell.model.adapter):
            per, note = None, f"adapter {cell.model.adapter} is not imported by --dry-run"
        elif problems:
            per, note = None, "not built: fix the problems below first"
        else:
            adapter = runner.adapter(cell)
            try:
                per = adapter.expected_model_calls(cell.sampler.name, cell.steps, cell.sampler.options)
            except ValueError as e:  # e.g. a sampler the pipeline's scheduler is not compatible with
                print(f"  {cell.cell_id:<40} error: {e}")
                errors += 1
                continue
            note = getattr(adapter, "dry_run_note", lambda: None)()  # e.g. the weights are not on this machine
        batches = -(-cell.n // runner.batch_size)
        calls = per * batches if per is not None else None
        total_calls += calls or 0
        shown_per, shown_calls = (per if per is not None else "?"), (calls if calls is not None else "?")
        print(f"  {cell.cell_id:<40} model calls/sample {shown_per:>4}   batched calls {shown_calls}")
        if note:
            notes[cell.model.name] = note
    print(f"total batched model calls (estimate): {total_calls}{' + unknown' if notes else ''}")
    for model, note in notes.items():
        print(f"note: model {model}: {note}")
    if problems:
        print_problems(PreflightError(str(suite.file or suite.name), problems))
    return EXIT_USAGE if errors or problems else EXIT_OK


def print_problems(error: Any) -> None:
    """A :class:`~evalkit.run.preflight.PreflightError` on stderr: ``evalkit: error:`` and the count, then one
    problem per item (a long one keeps its own lines, indented)."""
    lines = error.lines()
    print("\n".join([f"evalkit: error: {lines[0]}", *lines[1:]]), file=sys.stderr)


def summary_table(run: Any, *, cache_dir: Path | None = None) -> str:
    """The end-of-run summary of a run folder (a :class:`~evalkit.store.RunData`): every metric with its CI and
    N, ties and the floor marked, the best sampler per step count only where a CI backs it
    (:func:`evalkit.study.summary.summary_text`)."""
    from evalkit.study.summary import summary_text

    return summary_text(run, cache_dir=cache_dir)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run`` to the ``evalkit`` command."""
    r = subparsers.add_parser("run", help="run a suite (resumes an existing run folder)")
    r.add_argument("suite", help="suite YAML file, or the name of an embedded suite (e.g. smoke)")
    r.add_argument("--out", help="run folder (default: runs/<suite name>)")
    r.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    r.add_argument("--batch-size", type=int, help="override the suite's batch size")
    r.add_argument("--dry-run", action="store_true", help="print cells, samples and estimated model calls; run nothing")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)
