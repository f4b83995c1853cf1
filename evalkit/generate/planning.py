"""Model calls per sample for the built-in offline adapters, from declarations alone: no adapter or model is
built and no torch or diffusers imported, so ``evalkit run SUITE --dry-run`` answers in well under a second.

The numbers are those the adapters' own ``expected_model_calls`` give (``tests/test_startup.py`` compares the
two on the smoke suite): the zoo UNet walks its training schedule (:data:`evalkit.zoo.schedule.NOISE_SCHEDULE`)
with the sampler's declared rule (:func:`evalkit.generate.samplers.declared_model_calls`); the noise floor makes
no model call. Anything else, or a case a declaration does not cover, is None: build the adapter and ask it.
"""

from __future__ import annotations

from typing import Any

from evalkit.generate.samplers import declared_model_calls
from evalkit.zoo.schedule import NOISE_SCHEDULE

_ZOO_WEIGHTS = ("trained", "untrained")


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
