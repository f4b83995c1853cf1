"""The error hierarchy and the exit-code table, defined once.

Every error evalkit raises on purpose derives from :class:`EvalkitError` and carries the exit code the
CLI returns for it; ``cli.main`` has a single ``except EvalkitError``. Exit codes:

- 0: success (a check that passed, improvements included)
- 1: the work ran and found a problem: some cell failed (``run``) or a regression (``check``)
- 2: bad usage, input, configuration, environment or I/O: nothing was judged
- 130: interrupted, 143: terminated (finished cells are kept; the same command resumes)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # some cell failed (run) or a regression (check)
EXIT_USAGE = 2  # bad usage, input, configuration, environment or I/O
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): finished cells are kept
EXIT_TERMINATED = 143  # SIGTERM


class EvalkitError(Exception):
    """Base of every error evalkit raises on purpose: printed as one line, no traceback."""

    exit_code = EXIT_USAGE


class ConfigError(EvalkitError, ValueError):
    """A suite, option, baseline or command-line value that does not validate."""


class InputError(EvalkitError, ValueError):
    """An input file or data set that cannot be used (reference images, prompt files, stats files)."""


class WeightsError(EvalkitError, RuntimeError):
    """Network weights that are missing, mismatched or unsafe to load."""


class StoreError(EvalkitError, RuntimeError):
    """A run folder that cannot be used: locked by another process, corrupt, or from another suite."""


class RunError(EvalkitError, RuntimeError):
    """A cell's work failed (an adapter broke its contract, a rank failed): the cell fails, exit 1."""

    exit_code = EXIT_FAILED


class UnknownNameError(ConfigError, KeyError):
    """A name no registry knows (adapter, sampler, metric, extractor)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DependencyError(EvalkitError, ImportError):
    """An optional package a part needs is not installed; the message names the pip command."""
