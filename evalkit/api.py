"""evalkit from Python: the four things the command line does, as functions.

```python
from evalkit import api

df = api.score("samples/", "mnist-heldout", metrics=["fd", "kid"], extractor="mnist-net")  # evalkit score
df = api.run("smoke", out="runs/smoke")                  # evalkit run: the results table
run = api.load_results("runs/smoke")                     # the run folder, as report and check read it
report = api.compare("runs/smoke", "baselines/ci.json")  # evalkit check: the gate's verdict
report.exit_code, [(c.entry.cell, c.entry.metric, c.verdict) for c in report.comparisons]
```

Each function is a thin wrapper over what the command runs (:func:`evalkit.run.score.score_images`, the
:class:`~evalkit.run.runner.Runner`, :func:`evalkit.store.read_run`, :func:`evalkit.gate.commands.run_check`), so
the numbers, files and errors are the command's: bad input raises an :class:`~evalkit.errors.EvalkitError` whose
message names the file or field (``exit_code`` says what the command would exit with). ``evalkit.score``,
``evalkit.load_results`` and ``evalkit.compare`` are these functions too (``evalkit.run`` is the package of the
runner; use ``evalkit.api.run``). Importing this module imports no torch or pandas; each function does on its call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.gate.compare import CheckReport
    from evalkit.store import RunData
    from evalkit.suite import Suite

PathLike = str | os.PathLike


def score(gen: PathLike, ref: PathLike, metrics: Sequence[str] | str = ("fd",), **kw: Any) -> pd.DataFrame:
    """Score images you already have against a reference, as ``evalkit score GEN --ref REF -m METRICS``.

    ``gen``: a folder (recursive), ``.zip``, ``.tar`` webdataset shard or ``.npz`` uint8 array; ``ref``: the same, a
    built-in dataset (``mnist-heldout``) or statistics (clean-fid / pytorch-fid ``.npz``, ``evalkit stats --out``).
    Keywords go to :func:`evalkit.run.score.score_images`: ``extractor`` (of the metrics without their own; default
    ``inception``, clean-fid's), ``out`` (run folder, default ``runs/score-<name>``), ``prompts``, ``strict``,
    ``device`` (default ``"cpu"``), ``batch_size``. Returns the result rows (one per metric row, the columns of
    ``evalkit run``'s ``results.parquet``); ``df.attrs`` holds ``run_dir``, ``cell_id`` and ``reused``.
    """
    from evalkit.run.score import score_images

    return score_images(gen, ref, [metrics] if isinstance(metrics, str) else list(metrics), **kw)


def run(
    suite: PathLike | Mapping[str, Any] | Suite,
    *,
    out: PathLike | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Run a suite, as ``evalkit run SUITE --out OUT``, and return its results table.

    ``suite``: a YAML file, the name of an embedded suite (``"smoke"``), a mapping of the YAML's fields (validated
    as a file would be; relative paths from the working folder) or a :class:`~evalkit.suite.Suite`. ``out``: the run
    folder (default ``runs/<suite name>``); finished cells there are reused, as by the command. Returns
    :attr:`RunData.results <evalkit.store.RunData>` (one row per cell × metric row); ``df.attrs`` holds ``run_dir``
    and the cell ids ``done``, ``reused``, ``failed`` (cell → error) and ``failed_metrics`` (cell → {row: error}):
    where either is not empty the command would exit 1. Problems found
    before anything runs raise :class:`~evalkit.run.preflight.PreflightError` (``.problems`` lists each).
    """
    from evalkit.run import distributed
    from evalkit.run.runner import Runner
    from evalkit.store import read_run
    from evalkit.suite import Suite, load_suite, parse_suite

    if isinstance(suite, Mapping):
        suite = parse_suite(dict(suite))
    elif not isinstance(suite, Suite):
        suite = load_suite(suite)
    folder = Path(out) if out is not None else Path("runs") / suite.name
    try:
        summary = Runner(suite, folder, device=device, batch_size=batch_size, progress=progress).run()
    finally:
        distributed.shutdown()
    df = read_run(folder).results
    df.attrs.update(run_dir=str(folder), done=summary.done, reused=summary.reused, failed=dict(summary.failed))
    df.attrs["failed_metrics"] = dict(summary.failed_metrics)
    return df


def load_results(run: PathLike | RunData) -> RunData:
    """A run folder (of ``evalkit run``, ``evalkit score`` or :func:`run`), read by the one reader
    :func:`evalkit.store.read_run`, as ``evalkit report`` and ``evalkit check`` read it.

    The :class:`~evalkit.store.RunData` has ``results`` (the table of the folder's current config), ``config``,
    ``manifest``, ``features(cell_id)``, ``samples(cell_id)``, ``floors`` and ``warnings``. A RunData is returned as
    it is."""
    from evalkit.store import RunData, read_run

    return run if isinstance(run, RunData) else read_run(run)


def compare(run: PathLike | RunData, baseline: PathLike, **kw: Any) -> CheckReport:
    """Judge a run against a baseline file (made by ``evalkit baseline``), as ``evalkit check RUN --baseline FILE``:
    the gate's one verdict (:mod:`evalkit.gate.compare`).

    ``run``: a run folder or :class:`~evalkit.store.RunData` (read), or a suite (run first, in a temporary folder
    unless ``out=`` is given). Keywords go to :func:`evalkit.gate.commands.run_check`: ``k``, ``seed``,
    ``n_resamples``, ``confidence``, ``out``, ``device``, ``batch_size``, ``progress``. Returns the
    :class:`~evalkit.gate.compare.CheckReport`: ``comparisons`` (per cell × metric: ``now``, ``reference``,
    ``delta``, ``tolerance``, ``ci``, ``verdict`` — pass / improved / regression / error), ``regressions``,
    ``exit_code`` (1 on a regression) and ``changes``. A run that cannot be judged against the baseline (another
    protocol, other extractor weights, stale cells) raises :class:`~evalkit.gate.baseline.CheckConfigError`.
    """
    from evalkit.gate.commands import run_check
    from evalkit.store import RunData

    return run_check(run.root if isinstance(run, RunData) else run, baseline, **kw)
