"""Checks before a run builds a model or generates an image: every problem found at once, exit 2.

A suite validates on its own (:mod:`evalkit.suite.validate`); what it needs from the machine and from its
metrics did not show until minutes of generation had been spent: a weights file that is not there, a
metric that cannot work on the suite's samples, a prompt file that does not read. :func:`preflight` looks
for all of them, cheaply — no network is loaded, no model built, nothing generated — and reports them
together (``evalkit run`` and ``evalkit run --dry-run`` alike; :class:`PreflightError` is exit 2):

- every extractor's weights file is present, trusted and matches its sha256
  (:func:`evalkit.features.weights.check_extractor_weights`: the same lookup its build will do);
- each metric's preconditions on this suite (:attr:`evalkit.metrics.base.MetricDef.check`: e.g.
  ``lpips_diversity`` needs a condition holding two or more samples);
- the prompt file reads; the reference set is there (a known dataset, an existing folder or stats file);
- each model's adapter options have the types its factory's defaults tell, and pass the adapter's own
  ``preflight(options) -> list[str]`` where it has one (a built-in adapter given no options is not imported:
  the built-ins' checks are of their options). A ``module:function`` adapter is imported for a run
  (it is about to be anyway) but never by ``--dry-run``, which must not run a plugin's code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError, EvalkitError
from evalkit.features.weights import check_extractor_weights
from evalkit.generate.planning import family_problems, guidance_problems
from evalkit.metrics.base import MetricContext, get_metric
from evalkit.references.names import BUILTIN_DATASETS, train_spec
from evalkit.registry import ADAPTERS, is_callable_ref
from evalkit.run.task_preflight import task_problems
from evalkit.suite import THROUGHPUT, Conditions, Suite, expand_conditions
from evalkit.suite.grid import points as grid_points
from evalkit.suite.options import OptionError, check_names, check_values, keyword_parameters


class PreflightError(ConfigError):
    """Problems found before anything ran; ``problems`` lists each (its field or file, and what to do)."""

    def __init__(self, where: str, problems: list[str]):
        self.where, self.problems = where, list(problems)
        n = len(self.problems)
        super().__init__(
            f"{where}: {n} problem{'s' if n != 1 else ''} found before running anything (nothing was generated): "
            + "; ".join(f"({i}) {p}" for i, p in enumerate(self.problems, 1))
        )

    def lines(self) -> list[str]:
        """The report as printed by ``evalkit run``: a header, then each problem (its own lines indented)."""
        n = len(self.problems)
        out = [
            f"{self.where}: {n} problem{'s' if n != 1 else ''} found before running anything (nothing was generated):"
        ]
        for p in self.problems:
            first, *rest = str(p).splitlines() or [""]
            out += [f"  - {first}", *(f"    {line}" for line in rest)]
        return out


def print_problems(error: PreflightError) -> None:
    """``error`` on stderr as ``evalkit run`` prints it: ``evalkit: error:`` and the count, then one problem per
    item (a long one keeps its own lines, indented)."""
    lines = error.lines()
    print("\n".join([f"evalkit: error: {lines[0]}", *lines[1:]]), file=sys.stderr)


def preflight(suite: Suite, *, base_dir: Path | None = None, import_plugins: bool = True) -> list[str]:
    """Every problem :mod:`this module <evalkit.run.preflight>` looks for; [] when the suite can run here."""
    problems: list[str] = []
    base = base_dir if base_dir is not None else (Path(suite.file).parent if suite.file else Path.cwd())
    found, labels, captions = task_problems(suite, base)  # a task suite's sources, masks and controls
    problems += found
    conditions = _conditions(suite, base, problems, labels, captions)
    problems += _reference_problems(suite.reference, base)
    problems += _train_problems(suite, base)
    for ex in dict.fromkeys(m.extractor for m in suite.metrics if m.extractor):
        users = ", ".join(f"metrics[{i}] {m.name}" for i, m in enumerate(suite.metrics) if m.extractor == ex)
        problems += [
            f"extractor {ex} (needed by {users}): {p}"
            for p in check_extractor_weights(ex, **suite.extractor_options(ex))  # custom weights: that file
        ]
    if conditions is not None:
        problems += _metric_problems(suite, conditions)
    problems += _adapter_problems(suite, import_plugins)
    points = list(grid_points(suite))
    problems += family_problems([(m.name, m.adapter, dict(m.options), s.name) for m, s, *_ in points])
    problems += guidance_problems([(m.name, m.adapter, dict(m.options), g.name) for m, _, _, _, g, _ in points])
    return problems


def _conditions(
    suite: Suite, base: Path, problems: list[str], labels: Any = None, captions: list[str] | None = None
) -> Conditions | None:
    """Each sample's label / prompt as the runner will assign them; None (and the problem noted) if unreadable."""
    try:
        return expand_conditions(suite.conditions, suite.samples, base, source_labels=labels, source_prompts=captions)
    except (EvalkitError, OSError, ValueError) as e:
        if not problems:
            problems.append(f"conditions.{'classes' if suite.task else 'prompts'}: {e}")
        return None


def _reference_problems(spec: dict[str, Any] | None, base: Path) -> list[str]:
    """The reference is there: a built-in dataset name, an existing images folder/zip or stats file."""
    if not spec:
        return []
    if "dataset" in spec:
        name = str(spec["dataset"])
        ok = name in BUILTIN_DATASETS
        return [] if ok else [f"reference.dataset: unknown dataset {name!r}; known: {', '.join(BUILTIN_DATASETS)}"]
    kind = "path" if "path" in spec else "stats"
    path = Path(os.path.expanduser(str(spec.get(kind, ""))))
    path = path if path.is_absolute() else base / path
    if kind == "stats" and not path.is_file():
        return [f"reference.stats: no statistics file at {path} (make one with `evalkit stats`)"]
    if kind == "path" and not path.exists():
        return [f"reference.path: no reference images at {path} (expected a folder of images or a .zip)"]
    return []


def _train_problems(suite: Suite, base: Path) -> list[str]:
    """Metrics that need the model's training split (``MetricDef.needs_train``) have one, and it is there."""
    train = (suite.reference or {}).get("train")
    if train is None:
        need = [f"metrics[{i}] {m.name}" for i, m in enumerate(suite.metrics) if _needs_train(m.name)]
        if not need:
            return []
        return [
            f"reference.train: {', '.join(need)} compare(s) the samples with the model's training split; set "
            "reference.train (a built-in dataset such as mnist-train, or the training images: a folder, zip, tar "
            "or .npz), e.g. reference: {dataset: mnist-heldout, train: mnist-train}"
        ]
    spec = train_spec(train, base_dir=base)  # a name or path as the runner will read it
    return [p.replace("reference.", "reference.train.", 1) for p in _reference_problems(spec, base)]


def _needs_train(name: str) -> bool:
    return name != THROUGHPUT and bool(getattr(get_metric(name), "needs_train", False))


def _metric_problems(suite: Suite, conditions: Conditions) -> list[str]:
    """Each metric's own preconditions (``MetricDef.check``) on the suite's samples and conditions."""
    ctx = MetricContext(
        samples=suite.samples,
        labels=conditions.labels,
        prompts=conditions.prompts,
        conditions=suite.conditions,
        reference=suite.reference is not None,
    )
    problems = []
    for i, spec in enumerate(suite.metrics):
        if spec.name == THROUGHPUT:
            continue
        check = getattr(get_metric(spec.name), "check", None)
        if check is None:
            continue
        try:
            found = [str(p) for p in check(dict(spec.options), ctx)]
        except Exception as e:  # a broken check must not hide the other problems
            found = [f"its preflight check failed: {type(e).__name__}: {e}"]
        problems += [f"metrics[{i}] {spec.name}: {p}" for p in found]
    return problems


def _adapter_problems(suite: Suite, import_plugins: bool) -> list[str]:
    """Option types against the adapter factory's defaults, and the adapter's own ``preflight`` hook."""
    problems = []
    for i, model in enumerate(suite.models):
        where = f"models[{i}] {model.name} (adapter {model.adapter})"
        if is_callable_ref(model.adapter) and not import_plugins:
            continue
        try:
            factory = ADAPTERS.get(model.adapter)
            if not model.options and getattr(factory, "builtin", False):
                continue  # nothing to check, and importing the adapter's module would load torch
            params = keyword_parameters(factory, exclude=("device",))
            if params is not None:
                check_names(model.options, params, f"adapter {model.adapter}")
                check_values(model.options, params, f"adapter {model.adapter}")
        except OptionError as e:
            problems.append(f"{where}: options.{e.option}: {e}")
            continue
        except ConfigError as e:  # a module:function that does not import
            problems.append(f"{where}: {e}")
            continue
        target = factory.target() if callable(getattr(factory, "target", None)) else factory  # a built-in's class
        hook = getattr(target, "preflight", None)
        if callable(hook):
            try:
                problems += [f"{where}: {p}" for p in hook(dict(model.options))]
            except Exception as e:
                problems.append(f"{where}: its preflight check failed: {type(e).__name__}: {e}")
    return problems
