"""Guidance methods as a grid axis (suite field ``guidance_method``): their names, options and validation.

``guidance`` stays the scale w; ``guidance_method`` says how the conditional and unconditional predictions are
combined (the math lives in :mod:`evalkit.generate.guidance`; suite knows no network). A method is a name or a
mapping ``{name: cfg_rescale, phi: 0.5}`` (optionally with a ``label``); its options are filled with their
defaults here, so the recorded config and the hashes state every number the method used.

The default ``[cfg]`` is left out of the config and of cell ids/hashes, so suites that do not use the field keep
their ids and config, cell and protocol hashes.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import ConfigError

# name -> {option: (default, description)}
METHODS: dict[str, dict[str, tuple[float, str]]] = {
    "cfg": {},
    "cfg_rescale": {"phi": (0.7, "mix of the std-rescaled and the plain CFG prediction (0: cfg, 1: fully rescaled)")},
    "interval": {
        "sigma_lo": (0.28, "guidance only for σ in [sigma_lo, sigma_hi]; one conditional call elsewhere"),
        "sigma_hi": (5.42, "upper end of the guidance interval (σ of the sampler's noise level)"),
    },
    "apg": {
        "eta": (0.0, "weight of the update's component parallel to the conditional prediction"),
        "norm_threshold": (0.0, "r: the update's per-sample L2 norm is clipped to r (0: no clipping)"),
        "momentum": (0.0, "β: running average of the update, d_t + β·avg_{t-1} (0: none)"),
    },
    "none": {},
    # guidance-distilled models (FLUX.1-dev): w goes to the model as an embedding, one conditional call per step
    "distilled": {},
}

# The methods a model without a guidance embedding can take: all but ``distilled`` (what an adapter passes to
# :func:`check_supported` as ``supported``)
STANDARD_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "distilled")


def check_supported(method: str, supported: tuple[str, ...], model: str) -> None:
    """Refuse guidance ``method`` on ``model`` unless it is one of ``supported`` (the adapter's, for that model):
    a :class:`ConfigError` naming the field, the value, the model and the methods it supports. Without it,
    ``distilled`` on a model with no guidance embedding would run as ``none``, the scale silently unused."""
    if method in supported:
        return
    if method == "distilled":
        why = " (it feeds the scale to a guidance-distilled model's guidance embedding; this model has none)"
    elif "distilled" in supported:
        why = " (a guidance-distilled model takes the scale as an input: use 'distilled')"
    else:
        why = ""
    raise ConfigError(
        f"guidance_method {method!r} does not apply to model {model}{why}; "
        f"it supports: {', '.join(supported) or 'no guidance method'}"
    )


DEFAULT = "cfg"


@dataclass(frozen=True)
class GuidanceSpec:
    """One guidance method of the grid: its name, its options (defaults filled in) and the label in cell ids."""

    name: str = DEFAULT
    options: dict[str, Any] = field(default_factory=dict)
    label: str = DEFAULT

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT and self.label == DEFAULT

    def request_fields(self) -> dict[str, Any]:
        """The ``GenerationRequest`` fields for this method; none for plain cfg (the request's default)."""
        return {} if self.is_default else {"guidance_method": self.name, "guidance_options": dict(self.options)}


def as_spec(x: Any) -> GuidanceSpec:
    """A :class:`GuidanceSpec` from itself or from its recorded form (a dict in run.json / a baseline)."""
    return x if isinstance(x, GuidanceSpec) else GuidanceSpec(**x)


class GuidanceError(ConfigError):
    """A ``guidance_method`` entry that does not validate (raised as a GridError by the grid's parser)."""

    def __init__(self, field_: str, message: str):
        self.field, self.message = field_, message
        super().__init__(f"{field_}: {message}")


def parse_methods(raw: Any) -> list[GuidanceSpec]:
    """``guidance_method``: a non-empty list of method names or ``{name, label, <options>}`` mappings."""
    if raw is None:
        return [GuidanceSpec()]
    if not isinstance(raw, list) or not raw:
        raise GuidanceError("guidance_method", f"expected a non-empty list of {', '.join(METHODS)}; got {raw!r}"[:200])
    specs = [_method(f"guidance_method[{i}]", item) for i, item in enumerate(raw)]
    labels = [s.label for s in specs]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise GuidanceError(f"guidance_method[{i}]", f"label {label!r} is used twice; set a distinct 'label'")
    return specs


def _method(f: str, item: Any) -> GuidanceSpec:
    entry = {"name": item} if isinstance(item, str) else item
    if not isinstance(entry, dict) or "name" not in entry:
        raise GuidanceError(f, f"expected a method name or a mapping with 'name'; got {item!r}"[:200])
    name = entry["name"]
    if name not in METHODS:
        raise GuidanceError(
            f"{f}.name", f"unknown method {name!r}; expected one of: {', '.join(METHODS)}{hint(name, METHODS)}"
        )
    known = METHODS[name]
    options: dict[str, Any] = {}
    for key, value in entry.items():
        if key in ("name", "label"):
            continue
        if key not in known:
            allowed = ", ".join(["label", *known]) if known else "label (this method takes no options)"
            raise GuidanceError(f"{f}.{key}", f"unknown option of {name!r}; expected: {allowed}{hint(key, known)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise GuidanceError(f"{f}.{key}", f"expected a finite number; got {value!r}"[:200])
        if float(value) < 0 and key != "momentum":
            raise GuidanceError(f"{f}.{key}", f"expected a number ≥ 0; got {value!r}")
        options[key] = float(value)
    full = {k: options.get(k, default) for k, (default, _) in known.items()}
    if name == "interval" and full["sigma_lo"] > full["sigma_hi"]:
        raise GuidanceError(f"{f}.sigma_lo", f"must be ≤ sigma_hi ({full['sigma_hi']:g}); got {full['sigma_lo']:g}")
    if name == "cfg_rescale" and full["phi"] > 1:
        raise GuidanceError(f"{f}.phi", f"expected a number in [0, 1]; got {full['phi']:g}")
    label = entry.get("label", _label(name, options))
    if not isinstance(label, str) or not label or not all(c.isalnum() or c in "-_." for c in label):
        raise GuidanceError(f"{f}.label", f"expected a non-empty name of letters, digits, '-', '_', '.'; got {label!r}")
    return GuidanceSpec(name, full, label)


def _label(name: str, options: dict[str, float]) -> str:
    """``apg``, or with the options set away from their defaults: ``apg-eta0.5`` (keeps ids distinct)."""
    changed = [(k, v) for k, v in sorted(options.items()) if v != METHODS[name][k][0]]
    return name + "".join(f"-{k}{v:g}" for k, v in changed)


def hint(name: Any, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6) if isinstance(name, str) else []
    return f"; did you mean {close[0]!r}?" if close else ""
