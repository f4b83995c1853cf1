"""Model calls per sample for the built-in offline adapters, from declarations alone: no adapter or model is
built and no torch or diffusers imported, so ``evalkit run SUITE --dry-run`` answers in well under a second.

The numbers are those the adapters' own ``expected_model_calls`` give (``tests/test_startup.py`` compares the
two on the smoke suite): the zoo UNets walk their training schedules (:mod:`evalkit.zoo.schedule`)
with the sampler's declared rule (:func:`evalkit.generate.samplers.declared_model_calls`); the noise floor makes
no model call. Anything else, or a case a declaration does not cover, is None: build the adapter and ask it.
"""

from __future__ import annotations

from typing import Any

from evalkit.errors import ConfigError
from evalkit.generate.samplers import check_family, declared_model_calls
from evalkit.suite.guidance import STANDARD_METHODS, check_supported
from evalkit.zoo.schedule import FLOW_SCHEDULE, NOISE_SCHEDULE

_ZOO_WEIGHTS = ("trained", "untrained")
# the zoo's diffusion models by their ``model`` option: the family of their output and the schedule they were
# trained on (:attr:`evalkit.generate.zoo_adapter.ZooMnistAdapter.family`; tests check they agree)
ZOO_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "mnist-unet": ("eps", NOISE_SCHEDULE),
    "mnist-flow": ("flow", FLOW_SCHEDULE),
}
ZOO_DEFAULT_MODEL = "mnist-unet"


def model_family(adapter: str, options: dict[str, Any] | None = None) -> str | None:
    """The family of a built-in adapter's model where it is known without building it (the zoo's, by its ``model``
    option); None where only the built adapter can tell (diffusers: from the pipeline's scheduler config), there is
    no model (noise), or the option names no zoo model (the adapter refuses it)."""
    if adapter != "zoo":
        return None
    known = ZOO_MODELS.get(str((options or {}).get("model", ZOO_DEFAULT_MODEL)))
    return known[0] if known else None


def family_problems(pairs: list[tuple[str, str, dict[str, Any], str]]) -> list[str]:
    """For each (model name, adapter, adapter options, sampler) of a suite, the refusal of a sampler that does not
    apply to the model's family (:func:`evalkit.generate.samplers.check_family`), where the family is known without
    building the model."""
    problems = []
    seen = set()
    for model, adapter, options, sampler in pairs:
        family = model_family(adapter, options)
        if (model, family, sampler) in seen:
            continue
        seen.add((model, family, sampler))
        try:
            check_family(sampler, family, model)
        except ConfigError as e:
            problems.append(str(e))
    return problems


def guidance_problems(pairs: list[tuple[str, str, dict[str, Any], str]]) -> list[str]:
    """For each (model name, adapter, adapter options, guidance method) of a suite, the refusal of a method the
    built-in model cannot take (:func:`evalkit.suite.guidance.check_supported`): the zoo models have no guidance
    embedding, so ``distilled`` would leave the scale unused."""
    problems = []
    for model, adapter, options, method in pairs:
        if adapter != "zoo" or model_family(adapter, options) is None:
            continue
        try:
            check_supported(method, STANDARD_METHODS, model)
        except ConfigError as e:
            problems.append(str(e))
    return list(dict.fromkeys(problems))


def planned_model_calls(
    adapter: str, options: dict[str, Any], sampler: str, steps: int, sampler_options: dict[str, Any]
) -> int | None:
    """Model calls per sample of built-in adapter ``adapter`` (with its suite ``options``) for ``sampler`` at
    ``steps``; None where only the built adapter can tell."""
    if adapter == "noise":
        return 0  # NoiseAdapter: pixels from the generators, no model
    if adapter != "zoo" or not set(options) <= {"weights", "model"}:
        return None
    known = ZOO_MODELS.get(str(options.get("model", ZOO_DEFAULT_MODEL)))
    if known is None or options.get("weights", "trained") not in _ZOO_WEIGHTS:
        return None
    trained_on = int(known[1]["num_train_timesteps"])
    return declared_model_calls(sampler, steps, sampler_options, num_train_timesteps=trained_on)
