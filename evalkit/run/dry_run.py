"""``evalkit run SUITE --dry-run``: the plan of a run, and every problem it would stop on, with nothing run.

Cells (after ``only``/``exclude``), samples and the model calls they will cost, timing-only batches included.
The built-in offline adapters (zoo, noise) answer from declarations (:mod:`evalkit.generate.planning`): no
model is built and torch, diffusers and pandas are not imported. Any other adapter is built through
``adapter_for`` (the diffusers adapter reads its pipeline's scheduler config) unless the preflight found
problems; a ``module:function`` adapter is never imported: a plan must not run a plugin's code (its calls
show as '?').
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalkit.errors import EXIT_OK, EXIT_USAGE
from evalkit.generate.planning import planned_model_calls
from evalkit.registry import is_callable_ref
from evalkit.run.preflight import PreflightError, preflight, print_problems
from evalkit.run.task_preflight import source_summary
from evalkit.suite import Cell, Suite, TimingSpec
from evalkit.suite.grid import full_points


def dry_run(suite: Suite, *, batch_size: int, adapter_for: Callable[[Cell], Any], base_dir: Path | None = None) -> int:
    """Print the plan; exit 2 (:data:`~evalkit.errors.EXIT_USAGE`) when the preflight found problems or a cell's
    calls could not be planned. ``adapter_for(cell)`` builds the cell's adapter, called only where needed."""
    problems = preflight(suite, base_dir=base_dir, import_plugins=False)
    total_calls, cells, full = 0, suite.cells(), len(full_points(suite))
    dropped = f" (of {full} in the grid: {full - len(cells)} dropped by only/exclude)" if full != len(cells) else ""
    print(f"suite {suite.name}: {len(cells)} cells{dropped} × {suite.samples} samples, batch {batch_size}")
    if suite.task:
        print(f"tasks {', '.join(suite.task)}: {source_summary(suite.conditions or {})}; sample i uses source i mod n")
    notes, errors, warmed = {}, 0, set()
    for cell in cells:
        try:
            per, note = _calls_per_sample(cell, adapter_for, bool(problems))
        except ValueError as e:  # e.g. a sampler the pipeline's scheduler is not compatible with
            print(f"  {cell.cell_id:<40} error: {e}")
            errors += 1
            continue
        warm = (cell.model.name, cell.sampler.label) not in warmed  # as ModelCache.needs_warmup (resume aside)
        warmed.add((cell.model.name, cell.sampler.label))
        batches = -(-cell.n // batch_size) + timing_batches(cell.n, batch_size, suite.timing, warm=warm)
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


def timing_batches(n: int, batch_size: int, timing: TimingSpec, *, warm: bool) -> int:
    """Batches a cell generates for timing alone (:func:`evalkit.run.cell.generate_shard`): warm-ups its own
    batches do not cover, then repeats of the fixed size ``min(batch_size, n)`` its own full batches lack."""
    fixed, own, w = min(batch_size, n), -(-n // batch_size), timing.warmup if warm else 0
    timed_own = max(0, n // fixed - w)  # the warm-ups are the first (full) batches
    return max(0, w - own) + max(0, timing.repeats - timed_own)


def _calls_per_sample(cell: Cell, adapter_for: Callable[[Cell], Any], problems: bool) -> tuple[int | None, Any]:
    """(model calls per sample or None, a note on why unknown or None) for one cell."""
    model, sampler = cell.model, cell.sampler
    if is_callable_ref(model.adapter):
        return None, f"adapter {model.adapter} is not imported by --dry-run"
    strength = cell.task.strength if cell.task is not None else None
    per = planned_model_calls(
        model.adapter, dict(model.options), sampler.name, cell.steps, dict(sampler.options), strength=strength
    )
    if per is not None:
        return per, None
    if problems:
        return None, "not built: fix the problems below first"
    adapter = adapter_for(cell)
    task = {} if cell.task is None else {"task": cell.task.task, "strength": strength}
    per = adapter.expected_model_calls(sampler.name, cell.steps, sampler.options, **task)
    return per, getattr(adapter, "dry_run_note", lambda: None)()  # e.g. the weights are not on this machine
