"""Model calls per sample for the built-in offline adapters, from declarations alone: no adapter or model is
built and no torch or diffusers imported, so ``evalkit run SUITE --dry-run`` answers in well under a second.

The numbers are those the adapters' own ``expected_model_calls`` give (``tests/test_startup.py`` compares the
two on the smoke suite): the zoo UNet walks its training schedule (:data:`evalkit.zoo.schedule.NOISE_SCHEDULE`)
with the sampler's declared rule (:func:`evalkit.generate.samplers.declared_model_calls`); the noise floor makes
no model call. Anything else, or a case a declaration does not cover, is None: build the adapter and ask it.
"""

from __future__ import annotations

from typing import Any

from evalkit.errors import ConfigError
from evalkit.generate.samplers import check_family, declared_model_calls
from evalkit.zoo.schedule import NOISE_SCHEDULE

_ZOO_WEIGHTS = ("trained", "untrained")
ZOO_FAMILY = "eps"  # :attr:`evalkit.generate.zoo_adapter.ZooMnistAdapter.family` (tests check they agree)


def model_family(adapter: str) -> str | None:
    """The family of a built-in adapter's model where it is known without building it (the zoo's); None where only
    the built adapter can tell (diffusers: from the pipeline's scheduler config) or there is no model (noise)."""
    return ZOO_FAMILY if adapter == "zoo" else None


def family_problems(pairs: list[tuple[str, str, str]]) -> list[str]:
    """For each (model name, adapter, sampler) of a suite, the refusal of a sampler that does not apply to the
    model's family (:func:`evalkit.generate.samplers.check_family`), where the family is known without building
    the model."""
    problems = []
    for model, adapter, sampler in dict.fromkeys(pairs):
        try:
            check_family(sampler, model_family(adapter), model)
        except ConfigError as e:
            problems.append(str(e))
    return problems


def planned_model_calls(
    adapter: str, options: dict[str, Any], sampler: str, steps: int, sampler_options: dict[str, Any]
) -> int | None:
    """Model calls per sample of built-in adapter ``adapter`` (with its suite ``options``) for ``sampler`` at
    ``steps``; None where only the built adapter can tell."""
    if adapter == "noise":
        return 0  # NoiseAdapter: pixels from the generators, no model
    if adapter == "zoo" and set(options) <= {"weights"} and options.get("weights", "trained") in _ZOO_WEIGHTS:
        trained_on = int(NOISE_SCHEDULE["num_train_timesteps"])
        return declared_model_calls(sampler, steps, sampler_options, num_train_timesteps=trained_on)
    return None
