"""Options checked against what receives them: unknown names (with a did-you-mean) and values of the wrong type.

A sampler's options go to a diffusers scheduler, a model's to an adapter factory, a metric's to its compute
function; a misspelled name there would be recorded in run.json and never applied. The receivers are found by
name in :mod:`evalkit.registry` (``suite`` imports no adapter or network): a sampler checks its own options
(:meth:`~evalkit.generate.samplers.SamplerDef.check_options`, built on the helpers here), an adapter's are the
keyword parameters of its registered factory (one taking ``**kwargs`` is not checked; a ``module:function``
reference is never imported to validate a suite), a metric's are its declared ``MetricDef.options``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from evalkit.errors import ConfigError
from evalkit.registry import ADAPTERS, METRICS, SAMPLERS
from evalkit.suite.spec import THROUGHPUT

# The parameter kinds a suite's options can fill (by keyword); positional-only and *args cannot.
_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class OptionError(ConfigError):
    """An option its receiver does not take, or a value of the wrong type. ``option`` is the option's name."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(message)


def shown(key: Any) -> str:
    """A key as it can appear in a field path: itself when plain, else its repr."""
    return key if isinstance(key, str) and key.strip() and key.isprintable() else repr(key)


def unknown_option(name: str, accepted: Iterable[str], owner: str) -> OptionError:
    """``unknown option 'x' for <owner>; did you mean 'y'?`` (or the accepted names when nothing is close)."""
    accepted = sorted(accepted)
    close = close_names(name, accepted) if isinstance(name, str) else []
    if close:
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
    elif accepted:
        hint = f"expected one of: {', '.join(accepted)}"
    else:
        hint = "it takes no options"
    return OptionError(name, f"unknown option {name!r} for {owner}; {hint}")


def close_names(name: str, accepted: list[str]) -> list[str]:
    """The closest name; a second one only when about as close, or when ``name`` is a shortened form of it
    (``subset`` → ``subsets`` or ``subset_size``)."""
    close = difflib.get_close_matches(name, accepted, n=2, cutoff=0.6)
    if len(close) == 2:
        second = close[1]
        if difflib.SequenceMatcher(None, name, second).ratio() < 0.85 and not second.startswith(name):
            close = close[:1]
    return close


def check_names(options: Mapping[str, Any], accepted: Iterable[str], owner: str) -> None:
    """Every key of ``options`` is one of ``accepted``; else an :class:`OptionError` naming the first that is not."""
    accepted = set(accepted)
    for name in options:
        if name not in accepted:
            raise unknown_option(name, accepted, owner)


def keyword_parameters(obj: Any, *, exclude: Iterable[str] = ()) -> dict[str, inspect.Parameter] | None:
    """The keyword parameters ``obj`` (a function or class) takes, less ``exclude``; None where it takes
    ``**kwargs`` (anything goes) or has no readable signature (then nothing can be checked)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    skip = set(exclude)
    return {p.name: p for p in params if p.kind in _KINDS and p.name not in skip and p.name != "self"}


def expected_types(param: inspect.Parameter) -> tuple[tuple[type, ...], str] | None:
    """The value types a parameter's default tells (bool, int, float, str, list), or None where it tells none.

    An int default whose annotation says float also takes floats; an annotation that admits None takes null.
    """
    default, note = param.default, str(param.annotation)
    if isinstance(default, bool):
        types: tuple[type, ...] = (bool,)
        what = "true or false"
    elif isinstance(default, int):
        types, what = ((int, float), "a number") if "float" in note else ((int,), "an integer")
    elif isinstance(default, float):
        types, what = (int, float), "a number"
    elif isinstance(default, str):
        types, what = (str,), "a string"
    elif isinstance(default, list):
        types, what = (list,), "a list"
    else:
        return None
    if "None" in note or "Optional" in note:
        types, what = (*types, type(None)), f"{what} or null"
    return types, what


def check_values(options: Mapping[str, Any], params: Mapping[str, inspect.Parameter], owner: str) -> None:
    """Each option's value has the type its parameter's default tells (``eta: abc`` for a float eta fails)."""
    for name, value in options.items():
        param = params.get(name)
        told = expected_types(param) if param is not None else None
        if told is None:
            continue
        types, what = told
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            got = "null" if value is None else f"{type(value).__name__} {value!r}"[:80]
            raise OptionError(
                name, f"option {name!r} for {owner}: expected {what} (the default is {param.default!r}); got {got}"
            )


# -- the receivers, found by name in the registry ------------------------------------------------------------


def check_adapter_options(adapter: str, options: dict[str, Any], registered: list[str]) -> None:
    """Names against the registered factory's signature. A factory taking ``**kwargs`` is not checked, nor is a
    ``module:function`` reference (validating a suite never imports one)."""
    if "device" in options:
        raise OptionError("device", "set by evalkit (the --device flag of evalkit run), not an adapter option")
    if adapter not in registered:
        return
    params = keyword_parameters(_load(ADAPTERS, adapter), exclude=("device",))
    if params is not None:
        check_names(options, params, f"adapter {adapter}")


def check_sampler_options(name: str, options: dict[str, Any]) -> None:
    """The registered sampler checks its own options (its scheduler's names and value types): a
    :class:`~evalkit.generate.samplers.SamplerDef` method, called here through the registry."""
    method = getattr(_load(SAMPLERS, name), "check_options", None)
    if callable(method):
        method(options)


def check_metric_options(name: str, options: dict[str, Any]) -> None:
    """Names against the metric's declared ``options`` (throughput takes none; None declared: not checked)."""
    declared = {} if name == THROUGHPUT else getattr(_load(METRICS, name), "options", None)
    if declared is not None and "region" in options and "region" not in declared and name != THROUGHPUT:
        # any metric may score an inpainting's regenerated region on masked crops (evalkit.run.task_inputs)
        if options["region"] != "masked":
            raise OptionError(
                "region", f"metric {name}: option 'region' takes only 'masked' here; got {options['region']!r}"
            )
        declared = {**declared, "region": "masked: read the outputs cropped to their masks (inpainting)"}
    if declared is not None:
        check_names(options, declared, f"metric {name}")


def _load(registry: Any, name: str) -> Any:
    """A registered part, a plugin's import failure included as a ConfigError."""
    try:
        return registry.get(name)
    except ConfigError:
        raise
    except Exception as e:  # a plugin module that fails to import
        raise ConfigError(
            f"cannot load {registry.kind} {name!r} to check its options: {type(e).__name__}: {e}"
        ) from None
