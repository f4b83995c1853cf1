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
    from evalkit.run.runner import Runner

    out = Path(args.out) if args.out else Path("runs") / suite.name
    runner = Runner(suite, out, device=args.device, batch_size=args.batch_size, progress=not args.quiet)
    try:
        if args.dry_run:
            return dry_run(runner) if runner.dist.is_main else EXIT_OK
        summary = runner.run()
    except distributed.PeerFailed:
        return EXIT_FAILED  # rank 0 prints the error
    finally:
        distributed.shutdown()
    if not runner.dist.is_main:  # under torchrun only rank 0 reports
        return summary.exit_code
    print(summary_table(runner.store.results()))
    print(
        f"\nrun folder: {out}  ({len(summary.done)} cells computed, {len(summary.reused)} reused, "
        f"{len(summary.failed)} failed)"
    )
    for cell_id, err in summary.failed.items():
        where = runner.store.cell_dir(cell_id) / "cell.json"
        print(f"FAILED {cell_id}: {err}  (traceback in {where})", file=sys.stderr)
    return summary.exit_code


def dry_run(runner: Any) -> int:
    """Cells, samples and the model calls they will cost. ``module:function`` adapters are not imported: a
    plan must not run a plugin's code (their calls show as '?')."""
    suite = runner.suite
    total_calls = 0
    print(f"suite {suite.name}: {len(suite.cells())} cells × {suite.samples} samples, batch {runner.batch_size}")
    notes, errors = {}, 0
    for cell in suite.cells():
        if is_callable_ref(cell.model.adapter):
            per, note = None, f"adapter {cell.model.adapter} is not imported by --dry-run"
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
    return EXIT_USAGE if errors else EXIT_OK


def summary_table(df: Any) -> str:
    """FD (or the first quality metric) and seconds per image, sampler × steps, one block per guidance."""
    if df.empty:
        return "(no results)"
    quality = [m for m in ("fd", "kid", "is", "precision") if m in set(df.metric)]
    blocks = []
    for metric in [*quality[:1], "s_per_image", "nfe"]:
        sub = df[df.metric == metric]
        if sub.empty:
            continue
        pivot = sub.pivot_table(index=["model", "sampler"], columns=["guidance", "steps"], values="value")
        blocks.append(
            f"{metric} (rows: model/sampler; columns: guidance/steps; n={int(sub.n.iloc[0])})\n"
            + pivot.to_string(float_format=lambda v: f"{v:.4g}")
        )
    return "\n\n".join(blocks)


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
