"""The ``evalkit`` command: run, list, report, check, baseline, stats, weights, zoo.

One argparse tree; each stage package adds its commands with ``register(subparsers)``. Exit codes are
defined once in :mod:`evalkit.errors`: 0 success; 1 some cells failed (run) or a regression (check);
2 bad usage, input, configuration or I/O; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from evalkit.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, EvalkitError


def _cmd_run(args: argparse.Namespace) -> int:
    from evalkit.run import distributed
    from evalkit.run.runner import Runner
    from evalkit.suite import load_suite

    suite = load_suite(args.suite)
    out = Path(args.out) if args.out else Path("runs") / suite.name
    runner = Runner(suite, out, device=args.device, batch_size=args.batch_size, progress=not args.quiet)
    try:
        if args.dry_run:
            return _dry_run(runner) if runner.dist.is_main else EXIT_OK
        summary = runner.run()
    except distributed.PeerFailed:
        return EXIT_FAILED  # rank 0 prints the error
    finally:
        distributed.shutdown()
    if not runner.dist.is_main:  # under torchrun only rank 0 reports
        return summary.exit_code
    df = runner.store.results()
    print(summary_table(df))
    print(
        f"\nrun folder: {out}  ({len(summary.done)} cells computed, {len(summary.reused)} reused, "
        f"{len(summary.failed)} failed)"
    )
    for cell_id, err in summary.failed.items():
        print(
            f"FAILED {cell_id}: {err}  (traceback in {runner.store.cell_dir(cell_id) / 'cell.json'})", file=sys.stderr
        )
    return summary.exit_code


def _dry_run(runner) -> int:
    suite = runner.suite
    total_calls = 0
    print(f"suite {suite.name}: {len(suite.cells())} cells × {suite.samples} samples, batch {runner.batch_size}")
    notes, errors = {}, 0
    for cell in suite.cells():
        adapter = runner.adapter(cell)
        try:
            per = adapter.expected_model_calls(cell.sampler.name, cell.steps, cell.sampler.options)
        except ValueError as e:  # e.g. a sampler the pipeline's scheduler is not compatible with
            print(f"  {cell.cell_id:<40} error: {e}")
            errors += 1
            continue
        batches = -(-cell.n // runner.batch_size)
        calls = per * batches if per is not None else None
        total_calls += calls or 0
        print(
            f"  {cell.cell_id:<40} model calls/sample {per if per is not None else '?':>4}   "
            f"batched calls {calls if calls is not None else '?'}"
        )
        note = getattr(adapter, "dry_run_note", lambda: None)()  # e.g. the weights are not on this machine
        if note:
            notes[cell.model.name] = note
    print(f"total batched model calls (estimate): {total_calls}{' + unknown' if notes else ''}")
    for model, note in notes.items():
        print(f"note: model {model}: {note}")
    return EXIT_USAGE if errors else EXIT_OK


def summary_table(df: pd.DataFrame) -> str:
    """FD (or the first quality metric) and seconds per image, sampler × steps, one block per guidance."""
    if df.empty:
        return "(no results)"
    quality = [m for m in ("fd", "kid", "is", "precision") if m in set(df.metric)]
    shown = quality[:1] + ["s_per_image", "nfe"]
    blocks = []
    for metric in shown:
        sub = df[df.metric == metric]
        if sub.empty:
            continue
        pivot = sub.pivot_table(index=["model", "sampler"], columns=["guidance", "steps"], values="value")
        blocks.append(
            f"{metric} (rows: model/sampler; columns: guidance/steps; n={int(sub.n.iloc[0])})\n"
            + pivot.to_string(float_format=lambda v: f"{v:.4g}")
        )
    return "\n\n".join(blocks)


def _cmd_list(args: argparse.Namespace) -> int:
    from evalkit.registry import ADAPTERS, EXTRACTORS, METRICS, SAMPLERS
    from evalkit.suite import THROUGHPUT, embedded_suites

    what = args.what
    if what in (None, "models", "adapters"):
        print("adapters: " + ", ".join(ADAPTERS.names()) + "  (or any 'module:function')")
    if what in (None, "samplers"):
        print("samplers:")
        for name in SAMPLERS.names():
            d = SAMPLERS.get(name)
            print(f"  {name:<16} {d.scheduler:<32} {d.description}")
    if what in (None, "metrics"):
        print("metrics:")
        for name in METRICS.names():
            print(f"  {name:<16} {METRICS.get(name).description}")
        print(f"  {THROUGHPUT:<16} images/s, s/image, model calls, NFE, ms per model call, peak memory")
    if what in (None, "extractors"):
        print("extractors: " + ", ".join(EXTRACTORS.names()))
    if what in (None, "suites"):
        print("suites: " + ", ".join(embedded_suites()))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evalkit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a suite (resumes an existing run folder)")
    r.add_argument("suite", help="suite YAML file, or the name of an embedded suite (e.g. smoke)")
    r.add_argument("--out", help="run folder (default: runs/<suite name>)")
    r.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    r.add_argument("--batch-size", type=int, help="override the suite's batch size")
    r.add_argument("--dry-run", action="store_true", help="print cells, samples and estimated model calls; run nothing")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser("list", help="list adapters, samplers, metrics, extractors, suites")
    ls.add_argument("what", nargs="?", choices=["models", "adapters", "samplers", "metrics", "extractors", "suites"])
    ls.set_defaults(func=_cmd_list)

    from evalkit.features import commands as feature_commands
    from evalkit.gate import commands as gate_commands
    from evalkit.references import commands as reference_commands
    from evalkit.report import commands as report_commands
    from evalkit.zoo import commands as zoo_commands

    for module in (report_commands, gate_commands, reference_commands, feature_commands, zoo_commands):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EvalkitError as e:
        print(f"evalkit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("evalkit: interrupted; finished cells are kept, run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
