"""Guidance methods: each method's math against a direct transcription (diffusers' where it has one), the
properties the papers state, per-sample batch invariance, and model calls counted through a real scheduler loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    CMStochasticIterativeScheduler,
    DDIMScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance
from diffusers.guiders.guider_utils import rescale_noise_cfg

from evalkit.errors import ConfigError
from evalkit.generate import guidance as G
from evalkit.generate.denoise import CallCounter, guided_eps
from evalkit.suite import parse_suite
from evalkit.suite.guidance import METHODS, GuidanceError, GuidanceSpec, parse_methods


def _pair(b: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    eps_c = torch.randn(b, 3, 8, 8, generator=g)
    return eps_c, eps_c + 0.7 * torch.randn(b, 3, 8, 8, generator=g) + 0.3


def _denoiser(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in whose output depends on the condition (so ε_c ≠ ε_u)."""
    return torch.tanh(x) * 0.9 + 0.05 * cond.float().view(-1, 1, 1, 1) + 1e-3 * float(t)


def test_method_tables_agree():
    assert set(METHODS) == {"cfg", "cfg_rescale", "interval", "apg", "none", "distilled"}
    assert G.STANDARD_METHODS == ("cfg", "cfg_rescale", "interval", "apg", "none")
    for name in METHODS:
        assert G.options_of(name, None) == {k: v for k, (v, _) in METHODS[name].items()}
    with pytest.raises(ConfigError, match="unknown option"):
        G.options_of("apg", {"etaa": 1})


def test_cfg_is_bit_identical_to_the_old_guided_eps():
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t, cond, uncond = torch.tensor(500), torch.arange(5), torch.full((5,), 10)
    eps_c, eps_u = _denoiser(torch.cat([x, x]), t, torch.cat([cond, uncond])).chunk(2)
    old = eps_u + 3.0 * (eps_c - eps_u)
    assert torch.equal(guided_eps(_denoiser, x, t, cond, uncond, 3.0), old)
    assert torch.equal(guided_eps(_denoiser, x, t, cond, uncond, 3.0, method="cfg"), old)
    assert torch.equal(guided_eps(_denoiser, x, t, cond, uncond, 1.0), _denoiser(x, t, cond))


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.7, 1.0])
def test_cfg_rescale_matches_diffusers(phi):
    eps_c, eps_u = _pair()
    want = rescale_noise_cfg(eps_u + 4.0 * (eps_c - eps_u), eps_c, guidance_rescale=phi)
    torch.testing.assert_close(G.cfg_rescale(eps_c, eps_u, 4.0, phi), want, rtol=0, atol=0)
    got = G.combine("cfg_rescale", eps_c, eps_u, 4.0, {"phi": phi})
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    if phi == 1.0:  # fully rescaled: each sample has the conditional prediction's std
        torch.testing.assert_close(got.std(dim=(1, 2, 3)), eps_c.std(dim=(1, 2, 3)))


@pytest.mark.parametrize(("eta", "r", "beta"), [(0.0, 0.0, 0.0), (0.3, 2.5, 0.0), (0.0, 15.0, -0.5), (1.0, 0.0, 0.5)])
def test_apg_matches_diffusers_normalized_guidance_over_steps(eta, r, beta):
    buffer, state = MomentumBuffer(beta), {}
    for step in range(4):  # momentum carries across steps
        eps_c, eps_u = _pair(seed=step)
        want = normalized_guidance(eps_c, eps_u, 5.0, buffer if beta else None, eta=eta, norm_threshold=r)
        opts = {"eta": eta, "norm_threshold": r, "momentum": beta}
        torch.testing.assert_close(G.combine("apg", eps_c, eps_u, 5.0, opts, state), want, rtol=1e-6, atol=1e-6)


def test_apg_properties():
    eps_c, eps_u = _pair()
    plain = G.apg(eps_c, eps_u, 3.0, eta=1.0, norm_threshold=0.0, momentum=0.0)  # η = 1, r = ∞, β = 0: cfg
    torch.testing.assert_close(plain, G.cfg(eps_c, eps_u, 3.0), rtol=1e-5, atol=1e-5)
    update = (G.apg(eps_c, eps_u, 3.0, eta=0.0, norm_threshold=0.0, momentum=0.0) - eps_u) / 3.0
    dots = (update.double() * eps_c.double()).flatten(1).sum(1) / eps_c.double().flatten(1).norm(dim=1)
    assert dots.abs().max() < 1e-5  # η = 0: the update is orthogonal to ε_c, sample by sample
    clipped = (G.apg(eps_c, eps_u, 1.0, eta=1.0, norm_threshold=0.5, momentum=0.0) - eps_u).flatten(1).norm(dim=1)
    assert clipped.max() <= 0.5 + 1e-5  # r bounds each sample's update norm
    with pytest.raises(ValueError, match="state"):
        G.apg(eps_c, eps_u, 3.0, eta=0.0, norm_threshold=0.0, momentum=0.5)


@pytest.mark.parametrize(
    ("method", "opts"),
    [("cfg_rescale", {"phi": 0.7}), ("apg", {"eta": 0.0, "norm_threshold": 2.0, "momentum": -0.5})],
)
def test_per_sample_statistics_make_methods_batch_invariant(method, opts):
    eps_c, eps_u = _pair(8)
    big_state, small_state = {}, {}
    for _ in range(3):
        big = G.combine(method, eps_c, eps_u, 4.0, opts, big_state)
        small = G.combine(method, eps_c[:3], eps_u[:3], 4.0, opts, small_state)
        torch.testing.assert_close(small, big[:3], rtol=1e-6, atol=1e-6)


def test_interval_and_none_skip_the_unconditional_call():
    assert G.needs_uncond("interval", 3.0, {"sigma_lo": 0.28, "sigma_hi": 5.42}, sigma=1.0)
    assert not G.needs_uncond("interval", 3.0, {"sigma_lo": 0.28, "sigma_hi": 5.42}, sigma=6.0)
    assert not G.needs_uncond("interval", 3.0, None, sigma=0.1)
    assert not G.needs_uncond("none", 3.0) and not G.needs_uncond("cfg", 1.0) and G.needs_uncond("apg", 1.0)
    assert not any(G.needs_uncond("distilled", w, None, sigma=1.0) for w in (0.0, 1.0, 3.5, 10.0))
    with pytest.raises(ConfigError, match="σ"):
        G.needs_uncond("interval", 3.0, None, sigma=None)


def test_sigma_at_is_the_schedulers_sigma():
    euler = EulerDiscreteScheduler(beta_schedule="scaled_linear")
    euler.set_timesteps(16)  # fractional timesteps, σ interpolated
    for t, s in zip(euler.timesteps, euler.sigmas[:-1]):
        assert G.sigma_at(euler, t) == pytest.approx(float(s), rel=1e-4)
    flow = FlowMatchEulerDiscreteScheduler()
    flow.set_timesteps(8)
    for t, s in zip(flow.timesteps, flow.sigmas[:-1]):
        assert G.sigma_at(flow, t) == pytest.approx(float(s / (1 - s)), rel=1e-4)
    from diffusers import DPMSolverMultistepScheduler

    solver = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)
    solver.set_timesteps(8)  # keeps DDPM betas, but its timesteps are flow sigmas × 1000
    for t, s in zip(solver.timesteps, solver.sigmas[:-1]):
        assert G.sigma_at(solver, t) == pytest.approx(float(s / (1 - s)), rel=1e-4)


def test_sigma_at_reads_edm_and_consistency_model_sigmas():
    """Their timesteps are c_noise(σ) (EDM: log σ / 4; CM: 250·log σ), not a fraction of num_train_timesteps."""
    for scheduler in (EDMEulerScheduler(), CMStochasticIterativeScheduler()):
        scheduler.set_timesteps(8)
        for t, s in zip(scheduler.timesteps, scheduler.sigmas[:-1]):
            assert G.sigma_at(scheduler, t) == pytest.approx(float(s), rel=1e-6)
        assert G.sigma_at(scheduler, scheduler.timesteps[0]) == pytest.approx(80.0, rel=1e-5)


def test_distilled_is_one_conditional_call_whose_output_is_the_guided_prediction():
    """Guidance-distilled models (FLUX.1-dev): w reaches the model through the adapter's denoiser (here, a stand-in
    taking it as an embedding), never an unconditional batch, even where an ``uncond`` is at hand."""
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t, cond, uncond = torch.tensor(500), torch.arange(3), torch.full((3,), 10)
    for w in (1.0, 3.5):
        counter = CallCounter(lambda x, t, c, w=w: _denoiser(x, t, c) * w)  # w bound per loop
        got = guided_eps(counter, x, t, cond, uncond, w, method="distilled")
        assert torch.equal(got, _denoiser(x, t, cond) * w) and (counter.calls, counter.images) == (1, 3)
    eps_c, eps_u = _pair()
    assert torch.equal(G.combine("distilled", eps_c, eps_u, 3.5), eps_c)
    assert G.options_of("distilled", None) == {}


def test_check_supported_refuses_a_method_the_model_cannot_take_naming_field_model_value_and_choices():
    G.check_supported("cfg", G.STANDARD_METHODS, "mnist")
    G.check_supported("distilled", ("distilled",), "flux-dev")
    with pytest.raises(ConfigError) as e:
        G.check_supported("distilled", G.STANDARD_METHODS, "mnist")
    assert str(e.value) == (
        "guidance_method 'distilled' does not apply to model mnist (it feeds the scale to a guidance-distilled "
        "model's guidance embedding; this model has none); it supports: cfg, cfg_rescale, interval, apg, none"
    )
    with pytest.raises(ConfigError) as e:
        G.check_supported("apg", ("distilled", "none"), "flux-dev")
    assert str(e.value) == (
        "guidance_method 'apg' does not apply to model flux-dev (a guidance-distilled model takes the scale as an "
        "input: use 'distilled'); it supports: distilled, none"
    )
    with pytest.raises(ConfigError, match="^guidance_method 'interval' does not apply to model sd; it supports: cfg$"):
        G.check_supported("interval", ("cfg",), "sd")


def test_the_suite_parses_distilled_with_no_options_and_labels_its_cells():
    assert parse_methods(["distilled"]) == [GuidanceSpec("distilled", {}, "distilled")]
    assert parse_methods([{"name": "distilled", "label": "dist"}])[0].label == "dist"
    with pytest.raises(GuidanceError) as e:
        parse_methods([{"name": "distilled", "phi": 0.5}])
    assert e.value.field == "guidance_method[0].phi" and "takes no options" in e.value.message
    suite = parse_suite(
        {
            "name": "d",
            "models": [{"name": "m", "adapter": "noise"}],
            "samplers": ["flow_euler"],
            "steps": [4],
            "guidance": [3.5],
            "guidance_method": ["distilled", "cfg"],
            "samples": 2,
            "metrics": ["throughput"],
        }
    )
    cells = suite.cells()
    assert [c.cell_id for c in cells] == ["m__flow_euler__s4__g3.5__distilled", "m__flow_euler__s4__g3.5"]
    assert [c.sampler_label for c in cells] == ["flow_euler+distilled", "flow_euler"]
    assert cells[0].guidance_method.request_fields() == {"guidance_method": "distilled", "guidance_options": {}}
    assert cells[0].describe()["guidance_method"] == "distilled"


def _nfe_per_image(method: str, opts: dict | None, guidance: float, steps: int = 16, batch: int = 4) -> float:
    """The sampling loop with the method, σ and state passed to ``guided_eps`` (what ``denoise.sample`` does once
    it passes them): model images counted by :class:`CallCounter`, per generated image."""
    scheduler = DDIMScheduler(num_train_timesteps=1000)  # the zoo's schedule: linear β, 1000 steps
    scheduler.set_timesteps(steps)
    counter, state = CallCounter(_denoiser), {}
    x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, uncond = torch.arange(batch), torch.full((batch,), 10)
    for t in scheduler.timesteps:
        sigma = G.sigma_at(scheduler, t)
        eps = guided_eps(counter, x, t, cond, uncond, guidance, method=method, options=opts, sigma=sigma, state=state)
        x = scheduler.step(eps, t, x).prev_sample
    assert torch.isfinite(x).all()
    return counter.images / batch


def test_nfe_is_counted_per_method():
    assert _nfe_per_image("cfg", None, 3.0) == 32
    assert _nfe_per_image("cfg", None, 1.0) == 16
    assert _nfe_per_image("none", None, 3.0) == 16
    assert _nfe_per_image("distilled", None, 3.5) == 16  # w goes to the model, not into a second batch
    assert _nfe_per_image("apg", None, 3.0) == 32
    assert _nfe_per_image("cfg_rescale", {"phi": 0.7}, 3.0) == 32
    interval = _nfe_per_image("interval", {"sigma_lo": 0.28, "sigma_hi": 5.42}, 3.0)
    assert 16 < interval < 32
    assert _nfe_per_image("interval", {"sigma_lo": 0.0, "sigma_hi": 1e9}, 3.0) == 32  # the whole range: cfg


def test_guidance_methods_run_end_to_end_with_counted_nfe(tmp_path):
    """Through `evalkit run` on the built-in ε model: cfg keeps its cell id and images; NFE is counted per method."""
    import pandas as pd

    from evalkit.cli import main

    body = (
        "name: g\nmodels: [{name: m, adapter: zoo}]\nsamplers: [ddim]\nsteps: [16]\nguidance: [3]\nsamples: 6\n"
        "batch_size: 6\nconditions: {classes: 10}\nmetrics: [throughput]\ntiming: {repeats: 1}\n"
    )
    plain, methods = tmp_path / "plain.yaml", tmp_path / "methods.yaml"
    plain.write_text(body)
    methods.write_text(body + "guidance_method: [cfg, none, interval, apg, {name: cfg_rescale, phi: 0.7}]\n")
    assert main(["run", str(plain), "--out", str(tmp_path / "a"), "-q"]) == 0
    assert main(["run", str(methods), "--out", str(tmp_path / "b"), "-q"]) == 0
    nfe = pd.read_parquet(tmp_path / "b" / "results.parquet").query("metric == 'nfe'").set_index("cell_id")["value"]
    assert nfe["m__ddim__s16__g3"] == 32 and nfe["m__ddim__s16__g3__none"] == 16
    assert nfe["m__ddim__s16__g3__apg"] == 32 and nfe["m__ddim__s16__g3__cfg_rescale"] == 32
    assert 16 < nfe["m__ddim__s16__g3__interval"] < 32  # the unconditional pass only for σ in [σ_lo, σ_hi]
    same = [np.load(tmp_path / run / "cells" / "m__ddim__s16__g3" / "samples.npz")["images"] for run in ("a", "b")]
    assert np.array_equal(*same)  # cfg as before: same cell id, same images
