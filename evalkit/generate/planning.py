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
from evalkit.generate.samplers import check_family, declared_model_calls, get_sampler
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
# the image-conditioned tasks the zoo models run, each SDEdit from the (upsampled) source (evalkit.generate.partial)
ZOO_TASKS = ("img2img", "inpaint", "upscale")


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
    adapter: str,
    options: dict[str, Any],
    sampler: str,
    steps: int,
    sampler_options: dict[str, Any],
    strength: float | None = None,
) -> int | None:
    """Model calls per sample of built-in adapter ``adapter`` (with its suite ``options``) for ``sampler`` at
    ``steps``; None where only the built adapter can tell. ``strength`` (an img2img/inpaint/upscale cell's): the
    calls of the schedule's tail it walks (:func:`strength_start`), the rule at ``steps − t_start``: a Heun-type
    list of 2n − 1 timesteps cut at 2·t_start keeps 2(n − t_start) − 1."""
    if adapter == "noise":
        return 0  # NoiseAdapter: pixels from the generators, no model
    if adapter != "zoo" or not set(options) <= {"weights", "model"}:
        return None
    known = ZOO_MODELS.get(str(options.get("model", ZOO_DEFAULT_MODEL)))
    if known is None or options.get("weights", "trained") not in _ZOO_WEIGHTS:
        return None
    trained_on = int(known[1]["num_train_timesteps"])
    walked = steps
    if strength is not None:
        t_start = strength_start(steps, strength)
        check_mid_start(sampler, get_sampler(sampler).scheduler, t_start)
        walked = steps - t_start
    return declared_model_calls(sampler, walked, sampler_options, num_train_timesteps=trained_on)


# Schedulers that cannot start part-way through their schedule, by class name, with why: an image-conditioned task at
# strength < 1 is refused on them. Measured with an ε-oracle (the exact noise of a start at the scheduler's own level):
# the samplers that can return the source to ~1e-6; cut as diffusers' img2img cuts them, PLMS misses it by 0.35 and
# LMS by 0.7 to 17 (in [-1, 1] units).
NO_MID_START: dict[str, str] = {
    "PNDMScheduler": (
        "its PLMS warm-up repeats a timestep of the full list; cut part-way (as diffusers' img2img does) every "
        "later step reads the sample one timestep off"
    ),
    "LMSDiscreteScheduler": (
        "it takes its multistep order from the step index, not from the derivatives it holds: started part-way "
        "its first steps apply 4th-order coefficients to a single derivative"
    ),
}


def strength_start(steps: int, strength: float) -> int:
    """The schedule index an image-conditioned start at ``strength`` skips to, as diffusers' img2img pipelines cut
    it: ``init = min(int(steps·strength), steps)``, ``t_start = steps − init`` (multiply by the scheduler's order
    for its timestep list). Refuses a strength outside (0, 1] and one that leaves no step to run."""
    check_strength(strength)
    init = min(int(steps * strength), steps)
    if init < 1:
        raise ConfigError(
            f"strength {strength:g} × {steps} steps runs no step (int({steps}·{strength:g}) = 0): "
            f"raise strength to at least {1 / steps:.3g} or the steps"
        )
    return max(steps - init, 0)


def check_strength(strength: Any) -> float:
    """``strength`` as a float, refused unless a number in (0, 1]."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ConfigError(f"strength: expected a number in (0, 1]; got {strength!r}")
    return float(strength)


def check_mid_start(sampler: str, scheduler_class: str, t_start: int) -> None:
    """Refuse a sampler whose scheduler (:data:`NO_MID_START`) cannot start part-way, where it would (t_start > 0)."""
    why = NO_MID_START.get(scheduler_class)
    if t_start > 0 and why:
        raise ConfigError(
            f"sampler {sampler} ({scheduler_class}) cannot start part-way through its schedule, as strength < 1 "
            f"needs: {why}; use strength 1 or another sampler (ddim, euler, dpmpp_2m, ...)"
        )
