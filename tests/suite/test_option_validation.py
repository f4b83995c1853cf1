"""Options are checked against what receives them, before any work (issue 15): a sampler's against its diffusers
scheduler (names and, where the default tells it, value types), a metric's against its declared options, an
adapter's against its factory's signature; a misspelled name is a SuiteError with a did-you-mean, never a value
recorded in run.json and silently ignored."""

from __future__ import annotations

import copy
import inspect
import sys

import diffusers
import numpy as np
import pytest
import torch

from evalkit.cli import main
from evalkit.metrics.base import MetricDef, MetricInputs, MetricValue
from evalkit.registry import ADAPTERS, METRICS, SAMPLERS
from evalkit.suite import SuiteError, parse_suite

BASE = {
    "name": "opts",
    "models": [{"name": "m", "adapter": "noise", "options": {"resolution": 32}}],
    "samplers": ["ddim", {"name": "dpmpp_2m", "label": "dpm-k", "options": {"use_karras_sigmas": True}}],
    "steps": [2],
    "samples": 8,
    "batch_size": 4,
    "conditions": {"classes": 10},
    "reference": {"dataset": "mnist-heldout", "samples": 100},
    "extractor": "mnist-net",
    "metrics": ["fd", {"name": "kid", "options": {"subsets": 3, "subset_size": 4}}, "throughput"],
}


def refused(**changes) -> SuiteError:
    doc = {**copy.deepcopy(BASE), **changes}
    with pytest.raises(SuiteError) as e:
        parse_suite(doc, file="opts.yaml")
    return e.value


def test_the_base_suite_with_real_options_validates():
    suite = parse_suite(copy.deepcopy(BASE), file="opts.yaml")
    assert suite.samplers[1].options == {"use_karras_sigmas": True}
    assert suite.metrics[1].options == {"subsets": 3, "subset_size": 4}


# -- samplers -------------------------------------------------------------------------------------------------


def test_misspelled_sampler_option_names_the_field_and_suggests_the_real_name():
    e = refused(samplers=[{"name": "dpmpp_2m", "options": {"use_karas_sigmas": True}}])
    assert e.file == "opts.yaml" and e.field == "samplers[0].options.use_karas_sigmas"
    assert e.message == (
        "unknown option 'use_karas_sigmas' for sampler dpmpp_2m (DPMSolverMultistepScheduler); "
        "did you mean 'use_karras_sigmas'?"
    )


def test_sampler_option_with_nothing_close_lists_the_accepted_names():
    e = refused(samplers=[{"name": "euler", "options": {"zzzz": 1}}])
    assert e.field == "samplers[0].options.zzzz"
    assert "expected one of:" in e.message and "use_karras_sigmas" in e.message and "s_churn" in e.message


@pytest.mark.parametrize(
    "sampler, options, field, expected",
    [
        ("ddim", {"eta": "abc"}, "eta", "expected a number (the default is 0.0); got str 'abc'"),
        ("ddim", {"eta": True}, "eta", "expected a number"),
        ("dpmpp_2m", {"use_karras_sigmas": "yes"}, "use_karras_sigmas", "expected true or false"),
        ("dpmpp_2m", {"solver_order": 2.5}, "solver_order", "expected an integer"),
        ("euler", {"timestep_spacing": 3}, "timestep_spacing", "expected a string"),
    ],
)
def test_sampler_option_values_must_have_the_type_of_the_default(sampler, options, field, expected):
    e = refused(samplers=[{"name": sampler, "options": options}])
    assert e.field == f"samplers[0].options.{field}" and expected in e.message


@pytest.mark.parametrize(
    "sampler, options",
    [
        ("ddim", {"eta": 1}),  # an int where the default is a float
        ("ddim", {"eta": 0.5, "timestep_spacing": "trailing"}),
        ("euler", {"s_churn": 0.5, "use_karras_sigmas": None}),  # Optional[bool]: null is fine
        ("dpmpp_sde", {"noise_sampler_seed": 3}),
        ("unipc", {"disable_corrector": [0]}),
    ],
)
def test_sampler_options_of_the_right_type_pass(sampler, options):
    suite = parse_suite({**copy.deepcopy(BASE), "samplers": [{"name": sampler, "options": options}]})
    assert suite.samplers[0].options == options


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", [n for n in SAMPLERS.names() if n != "native"])  # native: the model's own class
def test_each_sampler_takes_its_schedulers_config_keys_and_its_own_fixed_options(name):
    defn = SAMPLERS.get(name)
    cls = getattr(diffusers, defn.scheduler)
    config_keys = {k for k in cls().config if not k.startswith("_")}
    assert config_keys <= set(defn.option_names())
    defn.check_options(defn.options)  # the built-in definitions use real option names


def test_step_options_such_as_ddim_eta_are_applied_not_dropped():
    """``eta`` is a ``step()`` argument, not a config key: ``from_config`` alone would ignore it, and run.json
    would record an eta that was never used."""
    from evalkit.generate.samplers import make_scheduler

    def one_step(options, **step_kwargs):
        s = make_scheduler("ddim", {"num_train_timesteps": 1000}, options)
        s.set_timesteps(4)
        x, eps = torch.ones(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.1)
        gen = torch.Generator().manual_seed(0)
        return s.step(eps, s.timesteps[0], x, generator=gen, **step_kwargs).prev_sample

    assert torch.equal(one_step({}), one_step({"eta": 0.0}))
    assert not torch.equal(one_step({"eta": 1.0}), one_step({"eta": 0.0}))
    # a pipeline's own loop passes eta=0.0 explicitly: the sampler's option still wins
    assert torch.equal(one_step({"eta": 1.0}, eta=0.0), one_step({"eta": 1.0}))
    assert "generator" in inspect.signature(make_scheduler("ddim", {}, {"eta": 1.0}).step).parameters


# -- metrics --------------------------------------------------------------------------------------------------


def test_misspelled_metric_option_suggests_the_close_names():
    e = refused(metrics=["fd", {"name": "kid", "options": {"subset": 5}}])
    assert e.field == "metrics[1].options.subset"
    assert e.message == "unknown option 'subset' for metric kid; did you mean 'subsets' or 'subset_size'?"


def test_throughput_and_class_acc_take_no_options():
    e = refused(metrics=[{"name": "throughput", "options": {"warmup": 1}}])
    assert e.field == "metrics[0].options.warmup" and "takes no options" in e.message
    e = refused(metrics=[{"name": "class_acc", "options": {"read": "logits"}}])
    assert e.field == "metrics[0].options.read" and "takes no options" in e.message


def _metric_inputs(name: str, options: dict) -> MetricInputs:
    rng = np.random.default_rng(0)
    n, d = (120 if name == "ct" else 24), 6  # C_T's k-means cells need ≥ 20 samples each
    feats = {"features": rng.normal(size=(n, d)), "logits": rng.normal(size=(n, 10)), "lpips": rng.normal(size=(n, 5))}
    emb = {"image_embeds": rng.normal(size=(n, d)), "text_embeds": rng.normal(size=(n, d))}
    images = {"images": rng.random((n, 3, 176, 176))} if name in ("psnr", "ssim", "ms_ssim") else {}  # ≥ 176 px
    if name == "control_fidelity":  # a task's control map beside each image (a gray control)
        images = {"images": np.round(rng.random((n, 3, 12, 12)) * 255) / 255}
        control = {
            "control": rng.integers(0, 256, (n, 3, 12, 12), dtype=np.uint8),
            "control_spec": {"detector": "gray"},
        }
    else:
        control = {}
    scores = {k: rng.normal(size=n) for k in ("aesthetic", "hpsv2", "image_reward", "pick_score")}
    gen = {**feats, **emb, **images, **scores}
    ref = {k: v + 0.5 for k, v in gen.items()}
    train = {k: v - 0.5 for k, v in feats.items()}
    labels = np.arange(n) % 3
    prompts = [f"prompt {i % 4}" for i in range(n)]
    return MetricInputs(
        gen=gen, ref=ref, labels=labels, prompts=prompts, seed=0, options=options, train=train, **control
    )


class _Recording(dict):
    def __init__(self):
        super().__init__()
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("name", METRICS.names())
def test_each_metric_declares_every_option_it_reads(name):
    defn = METRICS.get(name)
    assert isinstance(defn.options, dict), f"metric {name} declares no options"
    assert all(isinstance(v, str) and v for v in defn.options.values())
    opts = _Recording()
    defn.compute(_metric_inputs(name, opts))
    assert opts.read <= set(defn.options), f"{name} reads undeclared options {opts.read - set(defn.options)}"


def test_a_metric_that_declares_no_options_is_not_checked(monkeypatch):
    def compute(inputs):
        return {"free": MetricValue(1.0)}

    monkeypatch.setitem(METRICS._items, "free", MetricDef("free", False, {"free": True}, compute))
    suite = parse_suite({**copy.deepcopy(BASE), "metrics": [{"name": "free", "options": {"anything": 1}}]})
    assert suite.metrics[0].options == {"anything": 1}


# -- adapters -------------------------------------------------------------------------------------------------


def test_builtin_adapter_factories_expose_the_real_signature():
    assert list(inspect.signature(ADAPTERS.get("zoo")).parameters) == ["weights", "device", "model"]
    assert {"resolution", "grayscale"} <= set(inspect.signature(ADAPTERS.get("noise")).parameters)
    assert {"path", "dtype", "negative_prompt"} <= set(inspect.signature(ADAPTERS.get("diffusers")).parameters)


def test_adapter_options_are_checked_against_the_factory():
    suite = parse_suite(
        {**copy.deepcopy(BASE), "models": [{"name": "z", "adapter": "zoo", "options": {"weights": "untrained"}}]}
    )
    assert suite.models[0].options == {"weights": "untrained"}
    e = refused(models=[{"name": "z", "adapter": "zoo", "options": {"weigths": "untrained"}}])
    assert e.field == "models[0].options.weigths"
    assert e.message == "unknown option 'weigths' for adapter zoo; did you mean 'weights'?"
    e = refused(models=[{"name": "d", "adapter": "diffusers", "options": {"path": "x", "negativ_prompt": "blurry"}}])
    assert e.field == "models[0].options.negativ_prompt" and "did you mean 'negative_prompt'?" in e.message
    e = refused(models=[{"name": "n", "adapter": "noise", "options": {"resolutoin": 32}}])
    assert e.field == "models[0].options.resolutoin" and "did you mean 'resolution'?" in e.message


def test_device_is_not_an_adapter_option():
    e = refused(models=[{"name": "n", "adapter": "noise", "options": {"device": "cuda"}}])
    assert e.field == "models[0].options.device" and "--device" in e.message


def test_factories_taking_kwargs_and_module_function_adapters_are_not_checked(monkeypatch):
    monkeypatch.setitem(ADAPTERS._items, "loose", lambda device="cpu", **kw: None)
    suite = parse_suite({**copy.deepcopy(BASE), "models": [{"name": "l", "adapter": "loose", "options": {"x": 1}}]})
    assert suite.models[0].options == {"x": 1}
    ref = "evalkit_no_such_plugin_module:make"
    suite = parse_suite({**copy.deepcopy(BASE), "models": [{"name": "r", "adapter": ref, "options": {"x": 1}}]})
    assert suite.models[0].options == {"x": 1}
    assert "evalkit_no_such_plugin_module" not in sys.modules  # validation never imports a module:function


# -- before any work ------------------------------------------------------------------------------------------


def test_cli_refuses_a_misspelled_option_before_any_work(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: typo\nmodels: [{name: m, adapter: noise}]\n"
        "samplers: [{name: dpmpp_2m, options: {use_karas_sigmas: true}}]\nsteps: [2]\nsamples: 4\n"
        "metrics: [throughput]\n"
    )
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{suite}: samplers[0].options.use_karas_sigmas: unknown option" in err
    assert "did you mean 'use_karras_sigmas'?" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing recorded
