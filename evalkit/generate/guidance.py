"""Guidance methods: how the conditional ε_c and unconditional ε_u predictions become the one the sampler steps on.

Each method is a small function of tensors (k-diffusion style); w is the suite's ``guidance`` scale. Statistics
(std, norms, projections) are per sample, over all non-batch dimensions, so a sample's result does not depend on
the batch it is in. The names and option defaults are :data:`evalkit.suite.guidance.METHODS`.

- ``cfg`` (Ho & Salimans 2022):  ε̂ = ε_u + w·(ε_c − ε_u).
- ``cfg_rescale`` (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps Are Flawed", eq. 15–16):
  x_cfg = ε_u + w·(ε_c − ε_u);  x_rescaled = x_cfg · std(ε_c) / std(x_cfg);  ε̂ = φ·x_rescaled + (1 − φ)·x_cfg
  (diffusers' ``rescale_noise_cfg``; std is torch's unbiased std per sample).
- ``interval`` (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval"): cfg when
  σ_lo ≤ σ ≤ σ_hi, else ε̂ = ε_c from a single conditional call (fewer model calls; the loop counts them).
- ``apg`` (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High Guidance Scales"; transcribed
  from diffusers' ``normalized_guidance``): d = ε_c − ε_u; with momentum β, d ← d + β·d_prev (running average);
  d ← d · min(1, r/‖d‖) when r > 0; d = d_∥ + d_⊥ w.r.t. ε_c (projection in float64);
  ε̂ = ε_u + w·(d_⊥ + η·d_∥). η = 1, r = 0 (off), β = 0 is cfg. Applied to the model's output as diffusers does
  (the paper applies it to the denoised x₀; the formula is the same).
- ``none``: ε̂ = ε_c, one conditional call (guidance off, whatever w).
- ``distilled`` (guidance-distilled models, FLUX.1-dev style): the model takes w as an input (a guidance
  embedding) and was trained to produce the guided prediction itself, so ε̂ = ε_c(x; w) from one conditional call,
  no unconditional batch. The adapter feeds w to the model; one whose model has no guidance embedding refuses the
  method (:func:`check_supported`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from evalkit.errors import ConfigError
from evalkit.suite.guidance import DEFAULT, METHODS, STANDARD_METHODS, check_supported

__all__ = ["STANDARD_METHODS", "check_supported"]  # re-exported: their home is torch-free (planning uses them)


def _dims(x: torch.Tensor) -> list[int]:
    return list(range(1, x.ndim))


def cfg(eps_c: torch.Tensor, eps_u: torch.Tensor, w: float) -> torch.Tensor:
    return eps_u + w * (eps_c - eps_u)


def cfg_rescale(eps_c: torch.Tensor, eps_u: torch.Tensor, w: float, phi: float) -> torch.Tensor:
    x_cfg = cfg(eps_c, eps_u, w)
    rescaled = x_cfg * (eps_c.std(dim=_dims(eps_c), keepdim=True) / x_cfg.std(dim=_dims(x_cfg), keepdim=True))
    return phi * rescaled + (1 - phi) * x_cfg


def in_interval(sigma: float, sigma_lo: float, sigma_hi: float) -> bool:
    return sigma_lo <= sigma <= sigma_hi


def apg(
    eps_c: torch.Tensor,
    eps_u: torch.Tensor,
    w: float,
    eta: float,
    norm_threshold: float,
    momentum: float,
    state: dict[str, Any] | None = None,
) -> torch.Tensor:
    """``state`` carries the momentum's running average between the steps of one trajectory (batch)."""
    d, dims = eps_c - eps_u, _dims(eps_c)
    if momentum != 0:
        if state is None:
            raise ValueError("apg with momentum needs a state dict carried across the steps")
        d = d + momentum * state.get("apg_running", 0)
        state["apg_running"] = d
    if norm_threshold > 0:
        d = d * torch.clamp(norm_threshold / d.norm(p=2, dim=dims, keepdim=True), max=1.0)
    v0, v1 = d.double(), torch.nn.functional.normalize(eps_c.double(), dim=dims)
    parallel = (v0 * v1).sum(dim=dims, keepdim=True) * v1
    orthogonal = (v0 - parallel).to(d.dtype)
    return eps_u + w * (orthogonal + eta * parallel.to(d.dtype))


def options_of(method: str, options: dict[str, Any] | None) -> dict[str, float]:
    """The method's options with their defaults filled in; an unknown method or option is a ConfigError."""
    if method not in METHODS:
        raise ConfigError(f"unknown guidance method {method!r}; expected one of: {', '.join(METHODS)}")
    given = dict(options or {})
    unknown = sorted(set(given) - set(METHODS[method]))
    if unknown:
        raise ConfigError(f"guidance method {method!r}: unknown option(s) {', '.join(unknown)}")
    return {k: float(given.get(k, default)) for k, (default, _) in METHODS[method].items()}


def needs_uncond(method: str, w: float, options: dict[str, Any] | None = None, sigma: float | None = None) -> bool:
    """Does this step need the unconditional prediction (a doubled batch), or is ε_c alone the answer?
    ``none`` and ``distilled`` never do (distilled: the model was given w and guides itself)."""
    if method in ("none", "distilled"):
        return False
    if method == "apg":
        return True  # even at w = 1: ε_u + d_⊥ + η·d_∥ is ε_c only for η = 1 without clipping
    if w == 1.0:
        return False  # cfg, cfg_rescale and interval all give ε_c at w = 1
    if method == "interval":
        if sigma is None or math.isnan(sigma):  # σ = ∞ is pure noise (flow matching's first step): outside
            raise ConfigError("guidance method 'interval' needs the noise level σ of each step from the sampler loop")
        opts = options_of(method, options)
        return in_interval(sigma, opts["sigma_lo"], opts["sigma_hi"])
    return True


def combine(
    method: str,
    eps_c: torch.Tensor,
    eps_u: torch.Tensor,
    w: float,
    options: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
) -> torch.Tensor:
    """ε̂ from both predictions (call only where :func:`needs_uncond` said so)."""
    if method == DEFAULT or method == "interval":
        return cfg(eps_c, eps_u, w)
    opts = options_of(method, options)
    if method == "cfg_rescale":
        return cfg_rescale(eps_c, eps_u, w, opts["phi"])
    if method == "apg":
        return apg(eps_c, eps_u, w, opts["eta"], opts["norm_threshold"], opts["momentum"], state)
    return eps_c  # none, distilled: the conditional prediction is the answer


def sigma_at(scheduler: Any, t: Any) -> float:
    """The step's noise-to-signal ratio σ (EDM's σ, the units of ``interval``'s bounds) at timestep ``t``.

    VP (DDPM-family) schedules: σ = √((1 − ᾱ_t)/ᾱ_t), linearly interpolated for fractional ``t`` (as diffusers'
    Euler schedulers interpolate σ). Flow matching (x_t = (1 − s)·x₀ + s·ε, t = s·num_train_timesteps; also
    DPM-Solver/UniPC with ``use_flow_sigmas``):
    σ = s/(1 − s). EDM and consistency-model schedulers (``sigma_data`` in their config) keep σ itself, their
    timesteps being c_noise(σ): the σ at ``t`` in their schedule."""
    t = float(t)
    config = getattr(scheduler, "config", None) or {}
    if config.get("sigma_data") is not None and getattr(scheduler, "sigmas", None) is not None:
        timesteps = torch.as_tensor(scheduler.timesteps).detach().cpu().double()
        return float(scheduler.sigmas[int((timesteps - t).abs().argmin())])
    if config.get("use_flow_sigmas") and getattr(scheduler, "sigmas", None) is not None:
        # DPM-Solver/UniPC on flow sigmas: integer timesteps round σ·1000, so read the schedule's own σ (and they
        # keep DDPM betas too, which are not this model's)
        timesteps = torch.as_tensor(scheduler.timesteps).detach().cpu().double()
        s = float(scheduler.sigmas[int((timesteps - t).abs().argmin())])
        return s / (1 - s) if s < 1 else math.inf
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is not None:
        sigmas = ((1 - alphas) / alphas).sqrt().double()
        lo = min(max(math.floor(t), 0), len(sigmas) - 1)
        hi = min(lo + 1, len(sigmas) - 1)
        frac = t - lo
        return float((1 - frac) * sigmas[lo] + frac * sigmas[hi])
    train = getattr(getattr(scheduler, "config", None), "num_train_timesteps", None)
    if train:
        s = t / float(train)
        return s / (1 - s) if s < 1 else math.inf
    raise ConfigError(f"cannot tell σ at a step of {type(scheduler).__name__} for interval guidance")
