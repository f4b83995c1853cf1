"""``evalkit list metrics -v``: every option each metric takes, with its default and meaning, read off the metric's own
``MetricDef.options`` (no second table), and the defaults stated there equal the ones the metric code uses."""

from __future__ import annotations

import pytest

from evalkit.cli import main
from evalkit.metrics import fd_inf, inception_score, kid, lpips, prdc, resampling
from evalkit.metrics.base import MetricDef, option_help
from evalkit.registry import METRICS


def _listing(capsys) -> dict[str, dict[str, str]]:
    """metric → option → its line in ``evalkit list metrics -v``."""
    assert main(["list", "metrics", "-v"]) == 0
    out: dict[str, dict[str, str]] = {}
    current = ""
    for line in capsys.readouterr().out.splitlines()[2:]:
        indent = len(line) - len(line.lstrip())
        if indent == 2:  # a metric's first line
            current = line.split()[0]
            out[current] = {}
        elif indent == 4:  # one of its options; deeper lines are its description and "options: none"
            out[current][line.split()[0]] = line
    return out


def test_list_metrics_verbose_shows_every_option_with_its_default(capsys):
    listing = _listing(capsys)
    assert set(listing) == {*METRICS.names(), "throughput"}
    for name in METRICS.names():
        assert set(listing[name]) == set(METRICS.get(name).options or {}), name
    assert listing["kid"]["subset_size"].split()[1:4] == ["default", "1000", "samples"]
    assert listing["kid"]["kid_seed"].split()[1:5] == ["default", "the", "cell", "seed"]
    assert listing["is"]["splits"].split()[1:3] == ["default", "10"]
    assert listing["pr"]["k"].split()[1:3] == ["default", "3"]
    assert "default (not stated)" in listing["fd"]["bootstrap"]  # fd's default depends on the feature size


def test_plain_list_stays_short(capsys):
    assert main(["list", "metrics"]) == 0
    out = capsys.readouterr().out
    assert "subset_size" not in out and "kid " in out


@pytest.mark.parametrize(
    "metric,option,default",
    [
        ("kid", "subset_size", kid.DEFAULT_SUBSET_SIZE),
        ("kid", "subsets", kid.DEFAULT_SUBSETS),
        ("is", "splits", inception_score.DEFAULT_SPLITS),
        ("pr", "k", prdc.DEFAULT_K),
        ("fd_inf", "points", fd_inf.DEFAULT_POINTS),
        ("lpips_diversity", "max_per_condition", lpips.DEFAULT_MAX_PER_CONDITION),
        ("lpips_diversity", "bootstrap", resampling.DEFAULT_RESAMPLES),
        ("clip_score", "bootstrap", resampling.DEFAULT_RESAMPLES),
        ("clip_score", "confidence", resampling.DEFAULT_CONFIDENCE),
        ("fd", "confidence", resampling.DEFAULT_CONFIDENCE),
    ],
)
def test_the_stated_defaults_are_the_ones_the_code_uses(metric, option, default):
    stated = {name: d for name, d, _ in option_help(METRICS.get(metric))}[option]
    assert float(stated) == default


def test_option_help_splits_the_default_off_the_meaning():
    defn = MetricDef(
        "m",
        needs_reference=False,
        higher_is_better={"m": True},
        compute=lambda inputs: {},
        options={
            "a": "plain (default 3)",
            "b": "resamples (0: none; default 1000)",
            "c": "seed (default: the cell seed)",
            "d": "no default stated",
        },
    )
    assert option_help(defn) == [
        ("a", "3", "plain"),
        ("b", "1000", "resamples (0: none)"),
        ("c", "the cell seed", "seed"),
        ("d", None, "no default stated"),
    ]
    assert option_help(MetricDef("n", False, {}, lambda i: {}, options=None)) == []


def test_list_verbose_imports_no_heavy_library():
    from test_startup import _run_main

    code, out, loaded = _run_main(["list", "metrics", "-v"])
    assert code == 0 and loaded == [] and "subset_size" in out


def test_list_metrics_shows_direction_extractor_reference_and_paper(capsys):
    """Each metric's line: its rows with which way is better, its default extractor and its paper; the next line
    names the implementation its numbers are checked against (every built-in metric names one)."""
    assert main(["list", "metrics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fd = next(i for i, line in enumerate(lines) if line.split()[:1] == ["fd"])
    assert lines[fd].split()[1:3] == ["fd", "↓"] and "Heusel et al. 2017" in lines[fd]
    assert "Checked against: clean-fid" in lines[fd + 1]
    pr = next(line for line in lines if line.split()[:1] == ["pr"])
    assert "precision ↑ recall ↑ density ↑ coverage ↑" in pr
    clip = next(line for line in lines if line.split()[:1] == ["clip_score"])
    assert clip.split()[3] == "clip"
    builtin = [n for n in METRICS.names() if METRICS.get(n).__class__ is MetricDef]
    assert all(METRICS.get(n).reference for n in builtin), [n for n in builtin if not METRICS.get(n).reference]


def test_list_tasks_names_each_task_its_axis_and_inputs(capsys):
    from evalkit.cli import main
    from evalkit.imageops.detectors import DETECTORS
    from evalkit.suite.tasks import TASKS

    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.startswith("  ") and "axis" in line}
    assert set(lines) == set(TASKS)
    assert "axis strength" in lines["img2img"] and "conditions.masks" in lines["inpaint"]
    assert "axis controlnet_scale" in lines["controlnet"] and "conditions.control" in lines["upscale"]
    assert all(name in out for name in DETECTORS)
