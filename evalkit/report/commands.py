"""The ``evalkit report`` command: a self-contained HTML report of one or more run folders.

Reads the run store only (the report never runs a suite). Exit 0 when the report is written, 2 when
a run folder or the baseline is missing or unreadable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evalkit.errors import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report RUN [RUN ...] [-o reports/NAME.html] [--baseline FILE]`` to the ``evalkit`` CLI."""
    p = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of one or more run folders",
        description="Write one self-contained HTML file (plots, tables, image grids, environment) "
        "from run folders written by `evalkit run`. Several runs are shown side by side.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) written by `evalkit run`")
    p.add_argument("-o", "--out", help="HTML file to write (default: reports/<suite>.html)")
    p.add_argument(
        "--baseline",
        metavar="FILE",
        help="baselines JSON (evalkit baseline) or another run folder: show deltas where cells match",
    )
    p.add_argument("--title", help="report title (default: 'evalkit report — <suite>')")
    p.add_argument(
        "--save-plots",
        action="store_true",
        help="also write every plot as PNG and SVG into <out stem>_plots/ next to the HTML",
    )
    p.add_argument("--export", metavar="DIR", help="also write the tidy table and pivots as CSV, parquet and markdown")
    p.set_defaults(func=run_report)


def default_out(run: str) -> Path:
    """reports/<suite>.html, named after the first run's suite."""
    from evalkit.store import read_run, safe_component

    suite = read_run(run).manifest.get("suite") or Path(run).name
    return Path("reports") / f"{safe_component(suite)}.html"


def run_report(args: argparse.Namespace) -> int:
    """The command itself; bad input (a missing run folder or baseline) raises an EvalkitError: exit 2."""
    from evalkit.report.data import load_results
    from evalkit.report.html import write_report
    from evalkit.report.tables import export

    out = Path(args.out) if args.out else default_out(args.runs[0])
    path = write_report(args.runs, out, baseline=args.baseline, title=args.title, save_plots=args.save_plots)
    if args.export:
        export(load_results(args.runs), args.export)
    print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if args.save_plots:
        print(f"plots: {path.with_name(path.stem + '_plots')}/")
    if args.export:
        print(f"tables: {args.export}/")
    return EXIT_OK
