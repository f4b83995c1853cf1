"""Each metric's preflight check (``MetricDef.check``) refuses a suite exactly when the metric itself would fail
(raise) or give a meaningless number (NaN, a fit over mislabelled subset sizes) on the samples that suite makes —
shown by running the metric's ``compute`` on inputs of the refused size and on the smallest accepted one."""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest

from evalkit.cli import main
from evalkit.metrics.base import MetricContext, MetricInputs, get_metric
from evalkit.run.scoring import add_text_embeddings
from evalkit.suite import expand_conditions

REF = np.random.default_rng(1).normal(size=(40, 3))  # a reference larger than any k used here


def _ctx(samples: int, conditions: dict | None = None) -> MetricContext:
    c = expand_conditions(conditions, samples)
    return MetricContext(samples, labels=c.labels, prompts=c.prompts, conditions=conditions, reference=True)


def _fails(name: str, inputs: MetricInputs) -> bool:
    """The metric raises, or gives a non-finite value."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # a mean of nothing
            values = get_metric(name).compute(inputs)
    except Exception:
        return True
    return not all(np.isfinite(v.value) for v in values.values())


def _agree(name: str, options: dict, ctx: MetricContext, inputs: MetricInputs) -> list[str]:
    problems = get_metric(name).check(options, ctx)
    assert bool(problems) == _fails(name, inputs), problems
    return problems


def _gen(n: int, d: int = 3) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, d))


# -- pr: k nearest neighbours need more than k generated samples; k ≥ 1 ------------------------------------------
@pytest.mark.parametrize(
    "options,n,refused",
    [({}, 3, True), ({}, 4, False), ({"k": 5}, 5, True), ({"k": 5}, 6, False), ({"k": 0}, 10, True)],
)
def test_pr_check_agrees_with_the_metric(options, n, refused):
    inputs = MetricInputs(gen={"features": _gen(n)}, ref={"features": REF}, options=options)
    problems = _agree("pr", options, _ctx(n), inputs)
    assert bool(problems) == refused
    if n == 5:
        assert problems == [
            "k=5 needs samples > 5 (each sample's radius is the distance to its k-th nearest other "
            "generated sample); the suite has samples: 5; set samples ≥ 6 or options.k ≤ 4"
        ]
    if options.get("k") == 0:
        assert problems == ["option k: expected an integer ≥ 1 (the k-th nearest neighbour sets each radius); got 0"]


# -- is: splits ≥ 1, samples ≥ splits ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options,n,refused",
    [({}, 9, True), ({}, 10, False), ({"splits": 1}, 1, False), ({"splits": 4}, 3, True), ({"splits": 0}, 8, True)],
)
def test_is_check_agrees_with_the_metric(options, n, refused):
    inputs = MetricInputs(gen={"logits": _gen(n, 10)}, options=options)
    problems = _agree("is", options, _ctx(n), inputs)
    assert bool(problems) == refused
    if n == 9:
        assert problems[0].startswith("splits=10 needs samples ≥ 10") and "the suite has samples: 9" in problems[0]
        assert problems[0].endswith("set samples ≥ 10 or options.splits ≤ 9")


# -- kid: subsets ≥ 1, subsets of ≥ 2 samples (subset_size ≥ 2, samples ≥ 2); subset_size > samples is fine ----------
@pytest.mark.parametrize(
    "options,n,refused",
    [
        ({}, 1, True),
        ({}, 2, False),  # subset_size 1000 > 2 samples: subsets take both
        ({"subset_size": 1}, 10, True),
        ({"subset_size": 2}, 10, False),
        ({"subsets": 0}, 10, True),
        ({"subsets": 1}, 10, False),
    ],
)
def test_kid_check_agrees_with_the_metric(options, n, refused):
    opts = {"subsets": 3, **options}  # few subsets: fast
    inputs = MetricInputs(gen={"features": _gen(n)}, ref={"features": REF}, options=opts)
    problems = _agree("kid", opts, _ctx(n), inputs)
    assert bool(problems) == refused
    if n == 1:
        assert problems == [
            "needs samples ≥ 2 (the unbiased MMD² needs two distinct samples in a subset); "
            "the suite has samples: 1; set samples ≥ 2"
        ]


# -- fd: a covariance needs 2 samples -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2])
def test_fd_check_agrees_with_the_metric(n):
    inputs = MetricInputs(gen={"features": _gen(n)}, ref={"features": REF}, options={"bootstrap": 5})
    problems = _agree("fd", {}, _ctx(n), inputs)
    assert bool(problems) == (n < 2)


# -- fd_inf: two subset sizes, each ≥ 2 samples, none larger than the set ------------------------------------------
@pytest.mark.parametrize(
    "options,n,refused",
    [
        ({}, 3, True),  # default min_n: one size for any feature dimension
        ({}, 4, False),  # (with 1-d features; samples ≤ dim + 2 still fails at scoring, see check_fd_inf)
        ({"min_n": 2}, 2, True),
        ({"min_n": 2}, 3, False),
        ({"min_n": 1}, 6, True),
        ({"min_n": 6}, 6, True),
        ({"min_n": 8}, 6, True),  # subsets "of 8" from 6 samples: a fit over wrong sizes
        ({"points": 1}, 8, True),
        ({"points": 2}, 8, False),
    ],
)
def test_fd_inf_check_agrees_with_the_metric(options, n, refused):
    problems = get_metric("fd_inf").check(options, _ctx(n))
    inputs = MetricInputs(gen={"features": _gen(n, 1)}, ref={"features": REF[:, :1]}, options=options)
    try:
        sizes = get_metric("fd_inf").compute(inputs)["fd_inf"].extra["sizes"]
        meaningless = max(sizes) > n  # the FD "at" that size was computed on all n samples
    except ValueError:
        meaningless = True
    assert bool(problems) == meaningless == refused, problems
    if options == {"min_n": 8}:
        assert problems == [
            "min_n=8 needs samples > 8 (subsets from min_n up to samples, two sizes at least); "
            "the suite has samples: 6; set samples ≥ 9 or options.min_n ≤ 5"
        ]


# -- class_acc needs class labels, clip_score prompts -----------------------------------------------------------
CONDITIONS = [None, {"classes": [0, 1, 2]}, {"prompts": ["a cat", "a dog"]}]


@pytest.mark.parametrize("conditions", CONDITIONS, ids=["none", "classes", "prompts"])
def test_class_acc_check_agrees_with_the_metric(conditions):
    ctx = _ctx(6, conditions)
    inputs = MetricInputs(gen={"logits": _gen(6)}, labels=ctx.labels, prompts=ctx.prompts)
    problems = _agree("class_acc", {}, ctx, inputs)
    assert bool(problems) == (conditions is None or "prompts" in conditions)
    if conditions and "prompts" in conditions:
        assert "the suite has prompts, not classes; set conditions.classes" in problems[0]


class _TextEncoder:  # an extractor that encodes text, as clip does
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        return np.random.default_rng(len(prompts)).normal(size=(len(prompts), 4))


@pytest.mark.parametrize("conditions", CONDITIONS, ids=["none", "classes", "prompts"])
def test_clip_score_check_agrees_with_the_metric(conditions):
    ctx = _ctx(6, conditions)
    gen = {"clip/image_embeds": _gen(6, 4)}
    add_text_embeddings(gen, {"clip": _TextEncoder()}, ctx.prompts)  # the runner's path: text_embeds from prompts
    inputs = MetricInputs(gen={k.split("/")[1]: v for k, v in gen.items()}, options={"bootstrap": 0})
    problems = _agree("clip_score", {}, ctx, inputs)
    assert bool(problems) == (conditions is None or "classes" in conditions)
    if conditions is None:
        assert "the suite has no conditions; set conditions.prompts" in problems[0]


# -- end to end: `evalkit run --dry-run` stops in seconds with exit 2 --------------------------------------------
SUITE = """\
    name: tiny
    models: [{{name: mnist, adapter: zoo}}]
    samplers: [ddim]
    steps: [2]
    samples: 4
    conditions: {{classes: 10}}
    reference: {{dataset: mnist-heldout}}
    extractor: mnist-net
    metrics: [{metrics}]
"""


@pytest.mark.parametrize("k", [5, None], ids=["k=5", "default k=3"])
def test_dry_run_refuses_pr_with_too_few_samples(tmp_path, capsys, k):
    metric = "pr" if k is None else f"{{name: pr, options: {{k: {k}}}}}"
    suite = tmp_path / "tiny.yaml"
    suite.write_text(textwrap.dedent(SUITE.format(metrics=metric)))
    code = main(["run", str(suite), "--out", str(tmp_path / "run"), "--dry-run"])
    err = capsys.readouterr().err
    if k is None:  # 4 samples > k=3: nothing to refuse
        assert code == 0, err
        return
    assert code == 2, err
    assert "1 problem found before running anything (nothing was generated)" in err
    assert "metrics[0] pr: k=5 needs samples > 5" in err and "the suite has samples: 4" in err
    assert "set samples ≥ 6 or options.k ≤ 3" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
