"""Per-image score metrics (aesthetic, hpsv2, image_reward, pick_score): mean, bootstrap CI, per-prompt means
(checked against a pandas groupby), per-sample terms and replicates, and the preflight refusing prompt-less suites."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evalkit.errors import ConfigError
from evalkit.metrics import MetricInputs, get_metric
from evalkit.metrics.base import MetricContext
from evalkit.metrics.resampling import bootstrap_indices, metric_replicates
from evalkit.metrics.scores import per_prompt_means

SCORES = {"aesthetic": "clip-vit-l14", "hpsv2": "hpsv2", "image_reward": "image_reward", "pick_score": "pick_score"}
PROMPTED = ("hpsv2", "image_reward", "pick_score")


def _inputs(name: str, n: int = 60, *, prompts: bool = True, seed: int = 0, **options) -> MetricInputs:
    rng = np.random.default_rng(seed)
    words = ["a cat", "a red cube", "two dogs", "soup"]
    return MetricInputs(
        gen={name: rng.normal(5.0, 1.5, size=n).astype(np.float32)},
        prompts=[words[i % 4] for i in range(n)] if prompts else None,
        seed=3,
        options=options,
    )


@pytest.mark.parametrize("name", sorted(SCORES))
def test_value_is_the_mean_with_a_bootstrap_ci_and_per_prompt_means(name):
    inputs = _inputs(name)
    out = get_metric(name).compute(inputs)[name]
    scores = inputs.gen[name].astype(np.float64)
    assert out.value == pytest.approx(scores.mean(), rel=1e-12)
    assert out.ci_low < out.value < out.ci_high
    se = scores.std(ddof=1) / np.sqrt(scores.size)  # the normal-theory interval: the bootstrap's is about as wide
    assert out.ci_high - out.ci_low == pytest.approx(2 * 1.959964 * se, rel=0.2)
    assert out.extra == {"n": 60}  # per-prompt means are the report's (they grow with the prompts)
    expected = pd.DataFrame({"p": inputs.prompts, "s": scores}).groupby("p")["s"].agg(["mean", "size"])
    table = per_prompt_means(scores, inputs.prompts)
    assert set(table) == set(expected.index)
    for prompt, row in expected.iterrows():
        assert table[prompt][0] == pytest.approx(row["mean"], rel=1e-12) and table[prompt][1] == row["size"]
    assert json.loads(json.dumps(table)) == {p: list(v) for p, v in table.items()}  # plain floats and strings
    narrow = get_metric(name).compute(_inputs(name, confidence=0.5))[name]
    assert out.ci_low < narrow.ci_low < narrow.ci_high < out.ci_high


def test_without_prompts_or_bootstrap():
    out = get_metric("aesthetic").compute(_inputs("aesthetic", prompts=False, bootstrap=0))["aesthetic"]
    assert out.ci_low is None and out.ci_high is None
    one = get_metric("aesthetic").compute(MetricInputs(gen={"aesthetic": np.array([[4.0]])}))["aesthetic"]
    assert (one.value, one.ci_low, one.ci_high) == (4.0, 4.0, 4.0)  # an (N, 1) column is one score per image


def test_per_sample_terms_and_replicates_equal_the_recomputed_metric():
    inputs = _inputs("pick_score", n=30)
    defn = get_metric("pick_score")
    np.testing.assert_array_equal(defn.per_sample(inputs)["pick_score"], inputs.gen["pick_score"].astype(np.float64))
    idx = bootstrap_indices(30, 20, seed=1)
    fast = metric_replicates(defn, inputs, idx)["pick_score"]
    slow = [
        defn.compute(MetricInputs(gen={"pick_score": inputs.gen["pick_score"][ix]}))["pick_score"].value for ix in idx
    ]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_definitions_direction_extractors_and_sources():
    for name, extractor in SCORES.items():
        defn = get_metric(name)
        assert defn.higher_is_better == {name: True} and not defn.needs_reference
        assert defn.default_extractor == extractor and defn.reference and defn.paper
        assert set(defn.options) == {"bootstrap", "confidence"}
    assert get_metric("aesthetic").extractor_outputs == ("aesthetic",)
    assert all(get_metric(n).extractor_outputs == () for n in PROMPTED)
    with pytest.raises(ConfigError, match="'hpsv2'"):  # an extractor that gave no scores: the output is named
        get_metric("hpsv2").compute(MetricInputs(gen={"image_embeds": np.zeros((3, 4))}))
    with pytest.raises(ValueError, match="one score per image"):
        get_metric("hpsv2").compute(MetricInputs(gen={"hpsv2": np.zeros((3, 4))}))


@pytest.mark.parametrize("name", PROMPTED)
def test_prompt_scorers_refuse_a_suite_without_prompts(name):
    check = get_metric(name).check
    assert check({}, MetricContext(samples=4, prompts=["a", "b", "c", "d"])) == []
    (problem,) = check({}, MetricContext(samples=4))
    assert "needs a prompt per sample" in problem and "no conditions" in problem and "conditions.prompts" in problem
    (problem,) = check({}, MetricContext(samples=4, labels=np.arange(4)))
    assert "class labels, not prompts" in problem
    assert get_metric("aesthetic").check is None  # an image-only score


def test_a_suite_scoring_aesthetic_asks_clip_vit_l14_for_the_head():
    from evalkit.suite import parse_suite

    raw = {
        "name": "s",
        "models": [{"name": "m", "adapter": "zoo"}],
        "samplers": ["ddim"],
        "steps": [2],
        "samples": 4,
        "metrics": ["aesthetic", "clip_score", {"name": "fd", "extractor": "clip-vit-l14"}],
        "conditions": {"prompts": ["a", "b", "c", "d"]},
        "reference": {"dataset": "mnist-heldout", "samples": 20},
    }
    suite = parse_suite(raw)
    assert [(m.name, m.extractor) for m in suite.metrics] == [
        ("aesthetic", "clip-vit-l14"),
        ("clip_score", "clip"),
        ("fd", "clip-vit-l14"),
    ]
    assert suite.extractor_options("clip-vit-l14") == {"heads": ("aesthetic",)}
    assert suite.extractor_options("clip") == {}
