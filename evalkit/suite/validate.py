"""Suite validation, the only validator: every check names the file, the field and what was expected.

:func:`parse_suite` turns a decoded YAML document into a :class:`~evalkit.suite.spec.Suite`. Names of adapters,
samplers, metrics and extractors are checked against :mod:`evalkit.registry`. Every error is a :class:`SuiteError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError
from evalkit.registry import ADAPTERS, EXTRACTORS, METRICS, is_callable_ref
from evalkit.suite import grid
from evalkit.suite.conditions_spec import read_conditions
from evalkit.suite.extractor_spec import ExtractorFields
from evalkit.suite.image_grid import check_images, fill_images, sampler_names
from evalkit.suite.options import (
    OptionError,
    check_adapter_options,
    check_metric_options,
    check_sampler_options,
    close_names,
    shown,
)
from evalkit.suite.reference_spec import read_reference
from evalkit.suite.spec import THROUGHPUT, MetricSpec, ModelSpec, SamplerSpec, Suite, TimingSpec
from evalkit.suite.task_spec import check_regions, check_task_needs, read_tasks

_TOP_KEYS = {
    "name": "suite name (string)",
    "description": "free text",
    "models": "list of {name, adapter, options}",
    "samplers": "list of sampler names or {name, options, label, steps}",
    "steps": "list of positive integers (may be left out when every sampler sets its own steps)",
    "guidance": "list of numbers ≥ 0",
    "guidance_method": "list of cfg (default), cfg_rescale, interval, apg, none, distilled or {name, label, <options>}",
    "samples": "positive integer: samples per cell",
    "batch_size": "positive integer",
    "seed": "integer",
    "conditions": "mapping with 'classes' or 'prompts' (list, .txt/.jsonl/.csv/.json file or builtin:<name>) "
    "and 'per_prompt'; for a task also 'images', 'masks', 'control'; omit for unconditional",
    "task": "img2img, inpaint, upscale, controlnet or edit, or a list of them (image-conditioned tasks)",
    "strength": "list of numbers in (0, 1]: the img2img/inpaint/upscale axis",
    "controlnet_scale": "list of numbers ≥ 0: the controlnet axis",
    "reference": "mapping with one of 'dataset', 'path', 'stats', and optionally 'train' (the training split)",
    "metrics": "list of metric names or {name, extractor, options}",
    "extractor": "default extractor for metrics: a name, or {name, weights: file} for custom weights",
    "grid_samples": "positive integer: images kept per cell for grids",
    "zip": "list of two or more of models, samplers, steps, guidance: paired element by element, not crossed",
    "only": "list of mappings over model, sampler, steps, guidance: keep only the cells matching one",
    "exclude": "list of mappings over model, sampler, steps, guidance: drop the cells matching one",
    "timing": "mapping {repeats: integer ≥ 1, warmup: integer ≥ 0, threads: integer ≥ 1 or null}",
}


# Upper bounds that keep a typo (samples: 10000000000) from turning into an allocation failure later.
LIMITS = {
    "samples": 10_000_000,
    "batch_size": 1_000_000,
    "steps": 100_000,
    "grid_samples": 10_000,
    "classes": 1_000_000,
    "per_prompt": 10_000_000,
    "seed": 2**63 - 1,
    "reference.samples": 100_000_000,
    "repeats": 100_000,
    "warmup": 100_000,
    "threads": 100_000,
}
# Values in one options mapping (they are hashed and recorded): bounds the work a huge or self-sharing value costs.
MAX_OPTION_VALUES = 100_000


class SuiteError(ConfigError):
    """A suite that does not validate. ``str()`` names the file, the field and what was expected."""

    def __init__(self, file: str | Path | None, field: str, message: str):
        self.file, self.field, self.message = (str(file) if file else "<suite>"), field, message
        super().__init__(f"{self.file}: {field}: {message}")


def parse_suite(raw: Any, *, file: str | Path | None = None) -> Suite:
    """Validate a decoded YAML document. All checks name the field and the expected value."""
    v = _Validator(file)
    if not isinstance(raw, dict):
        raise SuiteError(file, "<top level>", f"expected a mapping of {', '.join(_TOP_KEYS)}; got {_kind(raw)}")
    for key in raw:
        if key not in _TOP_KEYS:
            close = close_names(key, list(_TOP_KEYS)) if isinstance(key, str) else []
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SuiteError(file, shown(key), f"unknown key; expected one of: {', '.join(_TOP_KEYS)}{hint}")
    raw = fill_images(raw, file, v.fail)  # an images suite's grid from its manifests (evalkit.suite.image_grid)
    for key in ("name", "models", "samplers", "samples", "metrics"):
        if key not in raw:
            raise SuiteError(file, key, f"required; expected {_TOP_KEYS[key]}")
    name = v.suite_name(raw["name"])
    models, samplers, steps, guidance = _axes(v, raw)
    extractors = EXTRACTORS.names()
    ex_fields = ExtractorFields(file, v.fail, extractors)  # a name, or {name, weights}: evalkit.suite.extractor_spec
    default_ex = ex_fields.read("extractor", raw.get("extractor"))
    metrics = [
        v.metric(f"metrics[{i}]", m, [*METRICS.names(), THROUGHPUT], ex_fields.read, default_ex)
        for i, m in enumerate(v.list("metrics", raw["metrics"]))
    ]
    reference = read_reference(v, raw.get("reference"))  # and its training split: evalkit.suite.reference_spec
    samples = v.integer("samples", raw["samples"], minimum=1)
    tasks = read_tasks(v, raw)
    conditions = read_conditions(v, raw.get("conditions"))
    check_task_needs(v, tasks["task"], conditions)
    check_regions(v, metrics, conditions)
    _check_metrics_have_inputs(file, metrics, extractors, reference, bool(conditions and "images" in conditions))
    try:
        grid_fields = grid.parse_grid(raw, [m.name for m in models], [s.label for s in samplers], tasks["task"])
        suite = Suite(
            name=name,
            models=models,
            samplers=samplers,
            steps=steps,
            guidance=guidance,
            samples=samples,
            metrics=metrics,
            reference=reference,
            conditions=conditions,
            batch_size=v.integer("batch_size", raw.get("batch_size", 64), minimum=1),
            seed=v.integer("seed", raw.get("seed", 0), minimum=0),
            description=v.string("description", raw.get("description", ""), allow_empty=True),
            grid_samples=v.integer("grid_samples", raw.get("grid_samples", 32), minimum=1),
            timing=v.timing(raw.get("timing")),
            extractor_weights=ex_fields.weights,
            file=str(file) if file else None,
            **grid_fields,
            **tasks,
        )
        grid.check_grid(suite)  # zipped lengths, filters matching nothing, an empty grid, shared cell ids
        check_images(suite, v.fail)  # each images cell has its samples, under the suite's conditions
    except grid.GridError as e:
        raise SuiteError(file, e.field, e.message) from None
    return suite


def _axes(v: _Validator, raw: dict[str, Any]) -> tuple[list[ModelSpec], list[SamplerSpec], list[int], list[float]]:
    """The grid's four lists: models and sampler labels unique, ``steps`` optional when every sampler has its own."""
    models = [v.model(f"models[{i}]", m, ADAPTERS.names()) for i, m in enumerate(v.list("models", raw["models"]))]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise v.fail("models", f"model names must be unique; got {names}")
    samplers = [
        v.sampler(f"samplers[{i}]", s, sampler_names(raw)) for i, s in enumerate(v.list("samplers", raw["samplers"]))
    ]
    labels = [s.label for s in samplers]
    if len(set(labels)) != len(labels):
        raise v.fail("samplers", f"sampler labels must be unique (set 'label' to tell options apart); got {labels}")
    if "steps" not in raw and any(s.steps is None for s in samplers):
        raise v.fail("steps", f"required (for samplers without their own); expected {_TOP_KEYS['steps']}")
    steps = [v.integer(f"steps[{i}]", s, minimum=1) for i, s in enumerate(v.list("steps", raw.get("steps", [1])))]
    guidance = [
        v.number(f"guidance[{i}]", g, minimum=0.0) for i, g in enumerate(v.list("guidance", raw.get("guidance", [1.0])))
    ]
    return models, samplers, steps if "steps" in raw else [], guidance


def _check_metrics_have_inputs(
    file: str | Path | None,
    metrics: list[MetricSpec],
    extractors: list[str],
    reference: dict[str, Any] | None,
    sources: bool = False,
) -> None:
    """Every metric but throughput reads an extractor; a metric comparing with real data needs a reference (in a
    task suite, ``sources``, the source images stand in for it where the metric compares sample with source)."""
    for i, m in enumerate(metrics):
        if m.name == THROUGHPUT:
            continue
        if m.extractor is None:
            raise SuiteError(
                file,
                f"metrics[{i}].extractor",
                f"metric {m.name!r} needs an extractor; set 'extractor' on it or at the top level "
                f"(one of: {', '.join(extractors)})",
            )
        mdef = METRICS.get(m.name)
        from_sources = mdef.reads_source or m.options.get("region") == "masked"  # masked crops: the sources' crops
        if mdef.needs_reference and reference is None and not (sources and from_sources):
            raise SuiteError(
                file,
                "reference",
                f"metric {m.name!r} compares with a reference set; "
                "expected a mapping with one of 'dataset', 'path', 'stats'",
            )


def _kind(x: Any) -> str:
    return "nothing (null)" if x is None else f"{type(x).__name__} {x!r}"[:80]


class _Validator:
    def __init__(self, file: str | Path | None):
        self.file = file

    def fail(self, field_: str, message: str) -> SuiteError:
        return SuiteError(self.file, field_, message)

    def string(self, f: str, x: Any, *, allow_empty: bool = False) -> str:
        if not isinstance(x, str) or (not allow_empty and not x.strip()):
            raise self.fail(f, f"expected a non-empty string; got {_kind(x)}")
        return x

    def suite_name(self, x: Any) -> str:
        name = self.string("name", x)
        if any(c in name for c in "/\\\0") or not name.strip(". ") or len(name) > 200:
            raise self.fail(
                "name",
                f"expected a plain suite name (it names the default run folder runs/<name>: "
                f"no '/', '\\' or NUL, not only dots, at most 200 characters); got {name!r}",
            )
        return name

    def path_string(self, f: str, x: Any) -> str:
        text = self.string(f, x)
        if "\0" in text:
            raise self.fail(f, f"expected a file path; got a string with a NUL character: {text!r}")
        return text

    def integer(self, f: str, x: Any, *, minimum: int | None = None) -> int:
        if isinstance(x, bool) or not isinstance(x, int):
            raise self.fail(f, f"expected an integer{f' ≥ {minimum}' if minimum is not None else ''}; got {_kind(x)}")
        if minimum is not None and x < minimum:
            raise self.fail(f, f"expected an integer ≥ {minimum}; got {x}")
        key = re.sub(r"\[\d+\]", "", f).replace("conditions.", "")  # samplers[1].steps[0] -> samplers.steps
        limit = LIMITS.get(key, LIMITS.get(key.rsplit(".", 1)[-1]))
        if limit is not None and x > limit:
            raise self.fail(f, f"expected an integer ≤ {limit}; got {x}")
        return x

    def number(self, f: str, x: Any, *, minimum: float | None = None) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise self.fail(f, f"expected a finite number; got {_kind(x)}")
        try:
            value = float(x)
        except OverflowError:  # a huge YAML integer
            value = math.inf
        if not math.isfinite(value):
            raise self.fail(f, f"expected a finite number; got {_kind(x)}")
        if minimum is not None and value < minimum:
            raise self.fail(f, f"expected a number ≥ {minimum}; got {x}")
        return value

    def list(self, f: str, x: Any) -> list[Any]:
        if not isinstance(x, list) or not x:
            raise self.fail(f, f"expected a non-empty list ({_TOP_KEYS.get(f, '')}); got {_kind(x)}")
        return x

    def mapping(self, f: str, x: Any, allowed: dict[str, str]) -> dict[str, Any]:
        if not isinstance(x, dict):
            raise self.fail(f, f"expected a mapping with keys {', '.join(allowed)}; got {_kind(x)}")
        for k in x:
            if k not in allowed:
                shown = k if isinstance(k, str) and k.strip() and k.isprintable() else repr(k)
                raise self.fail(f"{f}.{shown}", f"unknown key; expected one of: {', '.join(allowed)}")
        return x

    def choice(self, f: str, x: Any, allowed: list[str]) -> str:
        if not isinstance(x, str) or x not in allowed:
            raise self.fail(f, f"unknown value {x!r}; expected one of: {', '.join(allowed)}")
        return x

    def options(self, f: str, x: Any, check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """An options mapping of plain data, checked by ``check`` (the receiver's names and types) when given."""
        if x is None:
            x = {}
        if not isinstance(x, dict) or not all(isinstance(k, str) for k in x):
            raise self.fail(f, f"expected a mapping of option names to values; got {_kind(x)}")
        budget = [MAX_OPTION_VALUES]
        for k, val in x.items():
            self.plain_value(f"{f}.{shown(k)}", val, budget=budget)
        if check is not None and x:
            try:
                check(x)
            except OptionError as e:
                raise self.fail(f"{f}.{shown(e.option)}", str(e)) from None
            except ConfigError as e:
                raise self.fail(f, str(e)) from None
        return dict(x)

    def plain_value(self, f: str, x: Any, depth: int = 0, budget: list[int] | None = None) -> None:
        """Option values are plain data (they are hashed and recorded as JSON): no dates, bytes, sets."""
        if depth > 20:
            raise self.fail(f, "expected plain data; nested too deeply")
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise self.fail(f, f"expected plain data of at most {MAX_OPTION_VALUES} values in one options mapping")
        if x is None or isinstance(x, (str, bool, int, float)):
            return
        if isinstance(x, list):
            for i, item in enumerate(x):
                self.plain_value(f"{f}[{i}]", item, depth + 1, budget)
            return
        if isinstance(x, dict):
            for k, item in x.items():
                if not isinstance(k, str):
                    raise self.fail(f, f"expected string keys; got {_kind(k)}")
                self.plain_value(f"{f}.{shown(k)}", item, depth + 1, budget)
            return
        raise self.fail(f, f"expected a string, number, boolean, list or mapping; got {_kind(x)}")

    def model(self, f: str, x: Any, adapters: list[str]) -> ModelSpec:
        x = self.mapping(f, x, {"name": "", "adapter": "", "options": ""})
        if "adapter" not in x:
            raise self.fail(f"{f}.adapter", f"required; expected one of: {', '.join(adapters)} or 'module:function'")
        adapter = x["adapter"]
        if not (isinstance(adapter, str) and (adapter in adapters or is_callable_ref(adapter))):
            raise self.fail(
                f"{f}.adapter",
                f"unknown adapter {adapter!r}; expected one of: {', '.join(adapters)} or a 'module:function' callable",
            )
        name = self.string(f"{f}.name", x.get("name", adapter))
        options = self.options(f"{f}.options", x.get("options"), lambda o: check_adapter_options(adapter, o, adapters))
        return ModelSpec(name=name, adapter=adapter, options=options)

    def sampler(self, f: str, x: Any, samplers: list[str]) -> SamplerSpec:
        if isinstance(x, str):
            return SamplerSpec(self.choice(f, x, samplers), x)
        x = self.mapping(f, x, {"name": "", "options": "", "label": "", "steps": ""})
        name = self.choice(f"{f}.name", x.get("name"), samplers)
        label = self.string(f"{f}.label", x.get("label", name))
        options = self.options(f"{f}.options", x.get("options"), lambda o: check_sampler_options(name, o))
        steps = None
        if "steps" in x:  # this sampler's own step counts, in place of the suite's
            steps = [
                self.integer(f"{f}.steps[{i}]", s, minimum=1) for i, s in enumerate(self.list(f"{f}.steps", x["steps"]))
            ]
        return SamplerSpec(name, label, options, steps)

    def timing(self, x: Any) -> TimingSpec:
        """How cost is measured; outside every identity hash (it changes no quality number)."""
        if x is None:
            return TimingSpec()
        x = self.mapping("timing", x, {"repeats": "", "warmup": "", "threads": ""})
        return TimingSpec(
            repeats=self.integer("timing.repeats", x.get("repeats", TimingSpec.repeats), minimum=1),
            warmup=self.integer("timing.warmup", x.get("warmup", TimingSpec.warmup), minimum=0),
            threads=None if x.get("threads") is None else self.integer("timing.threads", x["threads"], minimum=1),
        )

    def metric(self, f: str, x: Any, metrics: list[str], extractor: Callable[..., Any], default_ex: Any) -> MetricSpec:
        if isinstance(x, str):
            x = {"name": x}
        x = self.mapping(f, x, {"name": "", "extractor": "", "options": ""})
        name = self.choice(f"{f}.name", x.get("name"), metrics)
        options = self.options(f"{f}.options", x.get("options"), lambda o: check_metric_options(name, o))
        if name == THROUGHPUT:
            return MetricSpec(name, None, options)
        ex = x.get("extractor", default_ex or METRICS.get(name).default_extractor)
        return MetricSpec(name, extractor(f"{f}.extractor", ex), options)
