"""The zoo MNIST models' image-conditioned tasks (:mod:`evalkit.generate.partial`): SDEdit img2img, inpainting by
mask blend, bicubic-then-SDEdit ×2 upscaling. Model calls against diffusers' own schedulers, the physics of strength
on the trained ε model, the inpainting guarantee, batch-size invariance and the refusals."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalkit.errors import ConfigError
from evalkit.generate.adapter import GenerationRequest, check_task
from evalkit.generate.denoise import run_steps
from evalkit.generate.partial import noised, start_timesteps
from evalkit.generate.planning import planned_model_calls
from evalkit.generate.samplers import get_sampler, make_scheduler, samplers_for
from evalkit.generate.zoo_adapter import ZooMnistAdapter
from evalkit.zoo.data import mnist_split
from evalkit.zoo.schedule import FLOW_SCHEDULE, NOISE_SCHEDULE


@pytest.fixture(scope="module")
def unet() -> ZooMnistAdapter:
    return ZooMnistAdapter()


@pytest.fixture(scope="module")
def flow() -> ZooMnistAdapter:
    return ZooMnistAdapter(model="mnist-flow")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, np.ndarray]:
    """Held-out real MNIST digits as uint8 (N, 3, 32, 32) and their labels."""
    split = mnist_split()
    images = torch.from_numpy(np.array(split.heldout_x[:32]))[:, None].repeat(1, 3, 1, 1)
    return images, np.array(split.heldout_y[:32])


def _request(task, n, sampler="ddim", steps=20, strength=0.5, batch=None, guidance=1.0, labels=None, **inputs):
    idx = np.arange(n)
    labels = idx % 10 if labels is None else labels
    return GenerationRequest(
        idx, 0, sampler, steps, guidance, batch or n, labels=labels, task=task, strength=strength, **inputs
    )


def _run(adapter, request):
    batches = list(adapter.generate(request))
    return torch.cat([b.images for b in batches]), batches


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-image PSNR (dB) of channel 0, uint8 scale."""
    mse = ((a[:, 0].double() - b[:, 0].double()) ** 2).mean((1, 2)).clamp_min(1e-10)
    return float((10 * torch.log10(255.0**2 / mse)).mean())


def _diffusers_count(cls_name: str, config: dict, steps: int, strength: float, **options) -> int:
    """The tail of diffusers' own timestep list that StableDiffusionImg2ImgPipeline.get_timesteps walks."""
    scheduler = getattr(diffusers, cls_name).from_config(
        {k: v for k, v in config.items() if not k.startswith("_")}, **options
    )
    scheduler.set_timesteps(steps)
    init = min(int(steps * strength), steps)
    return len(scheduler.timesteps[max(steps - init, 0) * scheduler.order :])


@pytest.mark.parametrize(
    "model,sampler,strength,cls_name",
    [
        ("mnist-unet", "ddim", 0.5, "DDIMScheduler"),
        ("mnist-unet", "heun", 0.5, "HeunDiscreteScheduler"),
        ("mnist-unet", "dpm2", 0.3, "KDPM2DiscreteScheduler"),
        ("mnist-unet", "euler_a", 0.75, "EulerAncestralDiscreteScheduler"),
        ("mnist-flow", "flow_euler", 0.5, "FlowMatchEulerDiscreteScheduler"),
        ("mnist-flow", "flow_heun", 0.35, "FlowMatchHeunDiscreteScheduler"),
    ],
)
def test_counted_calls_equal_diffusers_tail_and_the_plan(unet, flow, digits, model, sampler, strength, cls_name):
    adapter = unet if model == "mnist-unet" else flow
    schedule = NOISE_SCHEDULE if model == "mnist-unet" else FLOW_SCHEDULE
    images = digits[0][:2]
    _, batches = _run(adapter, _request("img2img", 2, sampler, 20, strength, images=images))
    counted = batches[0].model_calls
    reference = _diffusers_count(cls_name, schedule, 20, strength)
    planned = planned_model_calls("zoo", {"model": model}, sampler, 20, {}, strength=strength)
    expected = adapter.expected_model_calls(sampler, 20, {}, strength=strength)
    print(
        f"[agreement] {model} {sampler} strength {strength}: counted {counted}, diffusers {reference}, plan {planned}"
    )
    assert counted == reference == planned == expected
    if sampler == "ddim":
        assert counted == 10
    full = adapter.expected_model_calls(sampler, 20, {})
    assert planned_model_calls("zoo", {"model": model}, sampler, 20, {}, strength=1.0) == full
    assert adapter.expected_model_calls(sampler, 20, {}, strength=1.0) == full


def test_strength_one_and_inpaint_without_strength_count_as_plain_sampling(unet, digits):
    images, _ = digits
    masks = torch.ones(2, 1, 32, 32, dtype=torch.uint8)
    plain = next(unet.generate(_request(None, 2, "heun", 6, None))).model_calls
    img2img = next(unet.generate(_request("img2img", 2, "heun", 6, 1.0, images=images[:2]))).model_calls
    inpaint = next(unet.generate(_request("inpaint", 2, "heun", 6, None, images=images[:2], masks=masks)))
    assert plain == img2img == inpaint.model_calls == 11 and inpaint.schedule["strength"] == 1.0


@pytest.mark.parametrize("sampler", ["pndm", "lms"])
def test_samplers_that_cannot_start_part_way_are_refused_below_strength_one(unet, digits, sampler):
    with pytest.raises(ConfigError, match=f"sampler {sampler} .* cannot start part-way"):
        unet.expected_model_calls(sampler, 20, {}, strength=0.5)
    with pytest.raises(ConfigError, match=f"sampler {sampler} .* cannot start part-way"):
        planned_model_calls("zoo", {}, sampler, 20, {}, strength=0.5)
    with pytest.raises(ConfigError, match=f"sampler {sampler} .* cannot start part-way"):
        _run(unet, _request("img2img", 1, sampler, 20, 0.5, images=digits[0][:1]))
    assert unet.expected_model_calls(sampler, 20, {}, strength=1.0) == unet.expected_model_calls(sampler, 20, {})


def _oracle_run(name: str, family: str, strength: float, x0: torch.Tensor, eps: torch.Tensor) -> tuple[float, float]:
    """(max |final − x₀|, max |x − noised(x₀, ε, t_next)| after the complete steps) for sampler ``name`` started at
    ``strength`` with an ε-oracle: the very noise x₀ was noised with (flow: the velocity ε − x₀)."""
    base = {"_class_name": "DDPMScheduler", **NOISE_SCHEDULE} if family == "eps" else FLOW_SCHEDULE
    s = make_scheduler(name, base, {}, family=family)
    ts = start_timesteps(s, 20, strength, sampler=name)
    level = [0.0]

    def after(i: int, x: torch.Tensor) -> torch.Tensor:
        if i < len(ts) - 1 and getattr(s, "state_in_first_order", True):
            level.append(float((x - noised(s, x0, eps, ts[i + 1 : i + 2])).abs().max()))
        return x

    out = eps if family == "eps" else eps - x0
    loop = {"cond": None, "uncond": None, "guidance": 1.0, "generators": [], "after_step": after}
    y = run_steps(lambda *a: out, s, noised(s, x0, eps, ts[:1]), ts, **loop)
    return float((y - x0).abs().max()), max(level)


def test_an_exact_noise_prediction_returns_the_source_from_a_part_way_start():
    """The ε-oracle is exact only where the start's noise level is the one the scheduler steps from; after each
    complete step x = noised(x₀, ε, t_next), the level inpainting re-noises the known region to. Every deterministic
    sampler that starts part-way, at strength 0.5: within float32 error of its own full-schedule run (DEIS ends at
    ᾱ₀ < 1 either way). PLMS and LMS are refused there (an unrefused cut misses x₀ by 0.35 and 0.7)."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1, torch.randn(2, 1, 8, 8, generator=g)
    checked, refused = [], []
    for family in ("eps", "flow"):
        for name in samplers_for(family):
            if get_sampler(name).stochastic or (name == "native" and family == "eps"):  # eps native: DDPM
                continue
            full, _ = _oracle_run(name, family, 1.0, x0, eps)
            try:
                part, level = _oracle_run(name, family, 0.5, x0, eps)
            except ConfigError:
                refused.append(name)
                continue
            assert part <= full + 1e-4 and level <= 1e-4, (name, part, full, level)
            checked.append(f"{name} {part:.1e}")
    print(f"[agreement] ε-oracle, max |final − x₀| from strength 0.5: {', '.join(checked)}; refused: {refused}")
    assert refused == ["lms", "pndm"] and len(checked) == 13


def test_strength_trades_fidelity_to_the_source_for_the_requested_class(unet, digits):
    """Real held-out digits, each asked to become another class: as strength rises, PSNR to the source falls and
    mnist-net (the classifier class_accuracy reads) finds the requested class more often."""
    from evalkit.features.mnist_net import MnistNetExtractor

    images, labels = digits
    n = len(images)
    wanted = (labels + 1 + np.arange(n) % 9) % 10
    assert (wanted != labels).all()
    net = MnistNetExtractor()
    assert (net(images)["logits"].argmax(1) == labels).mean() >= 0.95
    psnr, accuracy = [], []
    for strength in (0.2, 0.5, 0.9):
        out, _ = _run(unet, _request("img2img", n, "ddim", 20, strength, guidance=3.0, labels=wanted, images=images))
        psnr.append(_psnr(out, images))
        accuracy.append(float((net(out)["logits"].argmax(1) == wanted).mean()))
    print(
        f"[trend] mnist-unet ddim 20 steps, guidance 3, N={n}, strength 0.2/0.5/0.9: PSNR to source {psnr} dB, "
        f"accuracy toward the requested class {accuracy}"
    )
    assert psnr[0] > psnr[1] + 5 and psnr[1] > psnr[2] + 1  # measured 25.8, 12.4, 10.0
    assert accuracy[0] <= 0.1 and accuracy[1] >= accuracy[0] + 0.5 and accuracy[2] >= accuracy[1]  # 0, 0.91, 1


@pytest.mark.parametrize(
    "model,sampler",
    [("mnist-unet", "ddim"), ("mnist-unet", "euler_a"), ("mnist-unet", "heun"), ("mnist-flow", "flow_euler_sde")],
)
def test_inpainting_keeps_the_unmasked_pixels_of_the_source(unet, flow, digits, model, sampler):
    adapter = unet if model == "mnist-unet" else flow
    images, labels = digits[0][:4], digits[1][:4]
    masks = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
    masks[:, :, 8:24, 8:24] = 1
    for strength in (0.6, 1.0):
        request = _request("inpaint", 4, sampler, 8, strength, labels=(labels + 5) % 10, images=images, masks=masks)
        out, _ = _run(adapter, request)
        diff = (out.int() - images.int()).abs()
        kept = int(diff[(masks == 0).expand_as(diff)].max())
        changed = float((diff[:, :1][masks == 1] > 8).float().mean())
        print(
            f"[agreement] inpaint {model} {sampler} strength {strength}: unmasked max |Δ| {kept}, "
            f"masked pixels changed by > 8: {changed:.2f}"
        )
        assert kept <= 1 and out.shape == images.shape
        assert changed > 0.1


def test_upscaling_a_half_resolution_digit_stays_consistent_with_it(unet, flow, digits):
    """×2 SDEdit super-resolution at strength 0.2: 32×32 output whose 2×2 average stays close to the 16×16 input,
    about as close to the original 32×32 digit as bicubic upsampling (measured: a little closer)."""
    images, labels = digits[0][:16], digits[1][:16]
    low = F.avg_pool2d(images.float(), 2).round().to(torch.uint8)
    bicubic = F.interpolate(low[:, :1].float() / 127.5 - 1, size=(32, 32), mode="bicubic", align_corners=False)
    bicubic = ((bicubic.clamp(-1, 1) + 1) * 127.5).round()
    for adapter, sampler in ((unet, "ddim"), (flow, "flow_euler")):
        out, _ = _run(adapter, _request("upscale", 16, sampler, 20, 0.2, labels=labels, images=images, control=low))
        assert out.shape == (16, 3, 32, 32) and out.dtype == torch.uint8
        consistency = _psnr(F.avg_pool2d(out[:, :1].float(), 2), low)
        sr, base = _psnr(out, images), _psnr(bicubic, images)
        print(
            f"[trend] upscale {adapter.model} {sampler} strength 0.2, N=16: PSNR to the 32×32 source {sr:.2f} dB "
            f"(bicubic {base:.2f}); PSNR of its 2×2 average to the 16×16 input {consistency:.2f} dB"
        )
        assert consistency >= 26 and sr >= base - 1.0  # measured 27.8 / 31.1 dB; 23.0 / 23.4 vs 22.3


@pytest.mark.parametrize("task,sampler", [("img2img", "ddim"), ("inpaint", "euler_a")])
def test_images_do_not_depend_on_the_batch_size(unet, digits, task, sampler):
    images = digits[0][:5]
    masks = torch.zeros(5, 1, 32, 32, dtype=torch.uint8)
    masks[:, :, :, 16:] = 1
    runs = [
        _run(unet, _request(task, 5, sampler, 8, 0.7, batch=b, guidance=2.0, images=images, masks=masks))[0]
        for b in (3, 5)
    ]
    assert torch.equal(runs[0], runs[1])


def test_refusals_name_what_is_missing(unet, digits):
    images = digits[0][:2]
    with pytest.raises(ConfigError, match="does not run task 'controlnet'; tasks it runs: img2img, inpaint, upscale"):
        check_task(unet, _request("controlnet", 2, images=images, control=images), "zoo")
    with pytest.raises(ConfigError, match="does not run task 'controlnet'"):
        _run(unet, _request("controlnet", 2, images=images, control=images))
    for task in ("img2img", "upscale"):
        with pytest.raises(ConfigError, match=f"task {task}: set strength"):
            _run(unet, _request(task, 2, strength=None, images=images, control=images[:, :, :16, :16]))
    with pytest.raises(ConfigError, match=r"strength: expected a number in \(0, 1\]; got 1.5"):
        _run(unet, _request("img2img", 2, strength=1.5, images=images))
    with pytest.raises(ConfigError, match="strength 0.01 × 20 steps runs no step"):
        planned_model_calls("zoo", {}, "ddim", 20, {}, strength=0.01)
    with pytest.raises(ConfigError, match="task inpaint: the request has no masks"):
        _run(unet, _request("inpaint", 2, images=images))
    with pytest.raises(ConfigError, match=r"images must be 32×32 for this model; got \(16, 16\)"):
        _run(unet, _request("img2img", 2, images=images[:, :, :16, :16]))
