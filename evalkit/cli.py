"""The ``evalkit`` command: run, list, report, check, baseline, stats, weights, zoo.

One argparse tree; each stage package adds its commands with ``register(subparsers)``. Exit codes are
defined once in :mod:`evalkit.errors`: 0 success; 1 some cells failed (run) or a regression (check);
2 bad usage, input, configuration, environment or I/O; 130 interrupted (143 terminated). Every error is
one line on stderr; ``--debug`` adds the traceback. Imports stay light until a command runs, so an
interrupt at any moment ends with one line, not a library's traceback, and ``evalkit --help``, a usage error
and ``evalkit list`` import no torch, pandas, scipy or diffusers (``tests/test_startup.py``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from typing import Any, NoReturn

from evalkit.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, EvalkitError

RESUME_HINT = "finished cells are kept, run the same command again to resume"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the command's --help has the rest), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"evalkit: error: {self.prog}: {message} (see {self.prog} --help)\n")


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that the same cleanup runs as for Ctrl-C."""


def _terminate(signum: int, frame: object) -> NoReturn:
    raise Terminated()


def _calls_rule(rule: Any) -> str:
    """A sampler's declared model calls per sample as a formula of the steps n (read off the rule's values at
    n = 1..5); "(scheduler)" where it declares none: only the built scheduler can tell."""
    if rule is None:
        return "(scheduler)"
    v = [int(rule(n)) for n in range(1, 6)]
    slope, const = v[1] - v[0], v[0] - (v[1] - v[0])
    if all(v[n - 1] == slope * n + const for n in range(1, 6)):
        return ("n" if slope == 1 else f"{slope}n") + (f"{const:+d}" if const else "")
    if v[0] == 1 and all(v[n - 1] == n + 1 for n in range(2, 6)):
        return "n+1 (1 at n=1)"
    return ", ".join(map(str, v)) + ", ..."


def _cmd_list(args: argparse.Namespace) -> int:
    from evalkit.registry import ADAPTERS, EXTRACTORS, METRICS, SAMPLERS
    from evalkit.suite import THROUGHPUT, embedded_suites

    what, verbose = args.what, getattr(args, "verbose", False)
    if what in (None, "models", "adapters"):
        print("adapters: " + ", ".join(ADAPTERS.names()) + "  (or any 'module:function')")
    if what in (None, "samplers"):
        print(f"samplers:  {'':<16} {'scheduler':<32} {'families':<18} {'model calls':<15} description")
        for name in SAMPLERS.names():
            d = SAMPLERS.get(name)
            families = ",".join(getattr(d, "families", ()) or ("?",))
            print(f"  {name:<16} {d.scheduler:<32} {families:<18} {_calls_rule(d.model_calls):<15} {d.description}")
    if what in (None, "metrics"):
        print(f"metrics:  {'':<16} {'rows (↑ higher is better, ↓ lower)':<36} {'default extractor':<18} paper")
        if verbose:
            print("  (a suite sets options as {name: METRIC, options: {OPTION: value}})")
        for name in METRICS.names():
            _print_metric(name, METRICS.get(name), verbose)
        print(f"  {THROUGHPUT:<16} images/s, s/image, model calls, NFE, ms per model call, peak memory")
    if what in (None, "extractors"):
        print("extractors: " + ", ".join(EXTRACTORS.names()))
    if what in (None, "tasks"):
        _print_tasks()
    if what in (None, "suites"):
        print("suites: " + ", ".join(embedded_suites()))
    return EXIT_OK


def _print_tasks() -> None:
    """The image-conditioned tasks (suite ``task``), what each reads, and the masks and detectors that make inputs."""
    from evalkit.imageops.detectors import DETECTORS
    from evalkit.imageops.masks import MASK_KINDS
    from evalkit.suite.tasks import TASKS

    print("tasks:  (suite 'task'; sample i starts from source image i mod n)")
    for t in TASKS.values():
        axis = "strength" if t.takes_strength else "controlnet_scale" if t.takes_controlnet_scale else "-"
        reads = "conditions." + ", conditions.".join(t.needs)
        print(f"  {t.name:<12} axis {axis:<17} reads {reads:<45} {t.description}")
    print(f"  masks (conditions.masks.kind): {', '.join(MASK_KINDS)}; or {{path: ...}}")
    print(f"  detectors (conditions.control.detector): {', '.join(DETECTORS)}; or {{path: ...}}")


def _print_metric(name: str, defn: Any, verbose: bool) -> None:
    """A metric's line (its rows and which way is better, the extractor it reads unless the suite says another,
    the paper), then what it computes and the implementation its numbers are checked against."""
    rows = " ".join(f"{row} {'↑' if up else '↓'}" for row, up in defn.higher_is_better.items())
    extractor = defn.default_extractor or "(the suite's)"
    print(f"  {name:<16} {rows:<36} {extractor:<18} {getattr(defn, 'paper', '') or '–'}")
    reference = getattr(defn, "reference", "")
    print(f"  {'':<16}   {defn.description}" + (f" Checked against: {reference}." if reference else ""))
    if verbose:
        _print_options(defn)


def _print_options(defn: Any) -> None:
    """``evalkit list metrics -v``: each option a metric takes, its default and meaning (from its ``MetricDef``)."""
    from evalkit.metrics.base import option_help

    if defn.options is None:
        print(f"  {'':<16}   options: not declared (not checked)")
        return
    rows = option_help(defn)
    if not rows:
        print(f"  {'':<16}   options: none")
    for option, default, meaning in rows:
        print(f"    {option:<18} default {default or '(not stated)':<16} {meaning}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="evalkit", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (anywhere on the line)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    ls = sub.add_parser("list", help="list adapters, samplers, metrics, extractors, tasks, suites")
    kinds = ["models", "adapters", "samplers", "metrics", "extractors", "tasks", "suites"]
    ls.add_argument("what", nargs="?", choices=kinds)
    ls.add_argument("-v", "--verbose", action="store_true", help="metrics: every option with its default and meaning")
    ls.set_defaults(func=_cmd_list, needs_torch=False)

    from evalkit.features import commands as feature_commands
    from evalkit.gate import commands as gate_commands
    from evalkit.references import commands as reference_commands
    from evalkit.report import commands as report_commands
    from evalkit.run import commands as run_commands
    from evalkit.zoo import commands as zoo_commands

    for module in (run_commands, report_commands, gate_commands, reference_commands, feature_commands, zoo_commands):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, before or after the command
    argv = [a for a in argv if a != "--debug"]
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args = build_parser().parse_args(argv)  # --help and usage errors leave here, before any heavy import
        if _needs_torch(args):
            interrupted = _import_torch_deferring_signals()
            if interrupted is not None:
                return interrupted
        return int(args.func(args) or 0)
    except EvalkitError as e:
        return _fail(str(e), e.exit_code, debug)
    except OSError as e:  # I/O outside evalkit's own checks: disk full, permissions, a folder where a file goes
        where = f" ({e.filename})" if getattr(e, "filename", None) and str(e.filename) not in str(e) else ""
        return _fail(f"{e}{where}", EXIT_USAGE, debug)
    except KeyboardInterrupt:
        return _fail(f"interrupted; {RESUME_HINT}", EXIT_INTERRUPTED, debug)
    except Terminated:
        return _fail(f"terminated; {RESUME_HINT}", EXIT_TERMINATED, debug)
    except Exception as e:  # a bug, not the user's input: still one line, with the way to the traceback
        return _fail(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", 2, debug)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _needs_torch(args: argparse.Namespace) -> bool:
    """Whether the command imports torch: yes unless its parser says otherwise with ``set_defaults(needs_torch=False)``
    or a predicate of the parsed arguments (``needs_torch=lambda args: not args.dry_run``)."""
    needs = getattr(args, "needs_torch", True)
    return bool(needs(args) if callable(needs) else needs)


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"evalkit: error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message
    return code


def entry() -> NoReturn:
    """The console script and ``python -m evalkit``: :func:`main`, made safe against an interrupt at any moment.

    A signal raised inside code run by ``exec`` (dataclasses does that) makes CPython 3.11 end with SIGINT even
    after ``main`` handled it, so an interrupted command leaves by ``os._exit`` with its exit code once its one
    line is written (its files were closed while the exception unwound)."""
    code = main()
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _import_torch_deferring_signals() -> int | None:
    """Import torch (once) with SIGINT/SIGTERM deferred: a signal that lands inside torch's C++ import can abort
    the process (SIGABRT). Done before a command that needs torch runs (not for ``--help``, a usage error, or a
    command registered with ``needs_torch=False``, such as ``list``). The exit code if a signal came meanwhile."""
    if "torch" in sys.modules or threading.current_thread() is not threading.main_thread():
        return None  # already imported (or not ours to guard: signal handlers belong to the main thread)
    caught: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        import torch  # noqa: F401  (the slow C++ import, while a signal only sets a flag)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not caught:
        return None
    terminated = caught[0] == signal.SIGTERM
    return _fail(
        f"{'terminated' if terminated else 'interrupted'}; {RESUME_HINT}",
        EXIT_TERMINATED if terminated else EXIT_INTERRUPTED,
        False,
    )


if __name__ == "__main__":
    entry()
