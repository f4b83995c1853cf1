"""Fail early, fail small: what a run needs is checked before any model is built or image generated, and every
problem is reported at once (exit 2)."""

from __future__ import annotations

import os
import textwrap
import time

import numpy as np
import pytest

from evalkit.cli import main
from evalkit.features import clip, inception, lpips_net
from evalkit.features.weights import EXTRACTOR_WEIGHTS, REGISTRY, check_extractor_weights
from evalkit.generate.zoo_adapter import NoiseAdapter
from evalkit.metrics.base import MetricContext, MetricInputs
from evalkit.metrics.lpips import check_lpips_diversity, compute_lpips_diversity
from evalkit.run.preflight import preflight
from evalkit.suite import expand_conditions, parse_suite

CLIP_SHA = REGISTRY["clip-vit-b-32-openai"].sha256
BUILT: list[dict] = []  # what the spy adapter saw: a model built, a batch generated
GENERATED: list[int] = []


def spy_adapter(device="cpu", **options):
    """A plugin adapter that records being built and asked for images."""
    BUILT.append(options)

    class Spy(NoiseAdapter):
        def generate(self, request):
            GENERATED.append(len(request.indices))
            yield from super().generate(request)

    return Spy(device=device)


@pytest.fixture
def spy(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cache/clip of the developer's
    BUILT.clear()
    GENERATED.clear()
    return f"{__name__}:spy_adapter"


def _write(tmp_path, text: str):
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(text))
    return p


ACCEPTANCE = """\
    name: pre
    models: [{{name: m, adapter: "{adapter}"}}]
    samplers: [ddim]
    steps: [2]
    samples: 4
    conditions: {{prompts: [a red cube, a blue ball, a green cone, a cat], per_prompt: 1}}
    metrics:
      - {{name: clip_score, extractor: clip}}
      - lpips_diversity
"""


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_missing_clip_weights_and_lpips_without_repeats_exit_2_before_generating(tmp_path, spy, capsys, dry_run):
    suite, out = _write(tmp_path, ACCEPTANCE.format(adapter=spy)), tmp_path / "run"
    t0 = time.perf_counter()
    code = main(["run", str(suite), "--out", str(out), "-q", *(["--dry-run"] if dry_run else [])])
    seconds = time.perf_counter() - t0
    print(f"preflight ({'dry-run' if dry_run else 'run'}) took {seconds:.2f} s")
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert GENERATED == [] and BUILT == []  # no model built, no image generated
    assert seconds < 30  # loose sanity bound (the checks themselves take well under a second)
    assert f"evalkit: error: {suite}: 3 problems found before running anything (nothing was generated):" in err
    # CLIP: the file, where it goes and its sha256, as the loader says it
    assert "weights file 'ViT-B-32.pt' for clip" in err and CLIP_SHA in err and "EVALKIT_WEIGHTS_DIR" in err
    assert "extractor clip (needed by metrics[0] clip_score): weights file 'ViT-B-32.pt'" in err
    # lpips_diversity: what it needs and how to get it; and its own extractor's weights
    assert "metrics[1] lpips_diversity: needs a condition with 2 or more samples" in err
    assert "conditions.per_prompt ≥ 2 or samples > 4" in err
    assert "extractor lpips-alex (needed by metrics[1] lpips_diversity): weights file 'alexnet-owt-7be5be79.pth'" in err
    assert "Traceback" not in err
    if dry_run:
        assert "m__ddim__s2__g1" in captured.out  # the plan is still listed
        assert not out.exists()
    else:
        assert not (out / "cells").exists() and not (out / "run.json").exists()


def test_every_problem_is_collected_into_one_report(tmp_path, spy, capsys):
    suite = _write(
        tmp_path,
        """\
        name: many
        models:
          - {name: a, adapter: noise, options: {resolution: big}}
        samplers: [ddim]
        steps: [2]
        samples: 8
        conditions: {prompts: no-such-prompts.txt}
        reference: {path: no-such-images}
        extractor: mnist-net
        metrics: [fd, {name: lpips_diversity, extractor: mnist-net, options: {read: features, max_per_condition: 1}}]
        """,
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "3 problems found before running anything" in err, err
    assert "no-such-prompts.txt" in err and "prompt file does not exist" in err
    assert f"reference.path: no reference images at {tmp_path / 'no-such-images'}" in err
    assert "models[0] a (adapter noise): options.resolution:" in err and "expected an integer" in err
    assert not (tmp_path / "run").exists()


def test_a_suite_that_can_run_has_no_problems_and_runs(tmp_path, spy):
    suite = _write(
        tmp_path,
        f"""\
        name: fine
        models: [{{name: m, adapter: "{spy}"}}]
        samplers: [ddim]
        steps: [2]
        samples: 6
        conditions: {{classes: 3}}
        extractor: mnist-net
        metrics: [{{name: lpips_diversity, options: {{read: features, bootstrap: 0}}}}]
        """,
    )
    assert preflight(parse_suite_file(suite)) == []
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 0
    assert BUILT and GENERATED


def parse_suite_file(path):
    from evalkit.suite import load_suite

    return load_suite(path)


# -- the lpips_diversity check says exactly when the metric would fail -------------------------------------------
CASES = [
    ({"classes": list(range(10))}, 10),  # one sample per class (validated suites hold the list)
    ({"classes": list(range(10))}, 11),  # class 0 twice
    ({"classes": [3, 3]}, 2),  # one class listed twice: two samples share it
    ({"prompts": ["a", "b", "c"]}, 3),
    ({"prompts": ["a", "b", "c"]}, 4),  # cycles: "a" twice
    ({"prompts": ["a", "b", "c"], "per_prompt": 2}, 3),
    ({"prompts": ["a", "a", "b"]}, 3),  # the same prompt text twice
    (None, 1),
    (None, 2),
]


@pytest.mark.parametrize("conditions,n", CASES)
def test_the_lpips_diversity_check_agrees_with_the_metric(conditions, n):
    c = expand_conditions(conditions, n)
    ctx = MetricContext(samples=n, labels=c.labels, prompts=c.prompts, conditions=conditions)
    problems = check_lpips_diversity({}, ctx)
    feats = np.random.default_rng(0).normal(size=(n, 5))
    inputs = MetricInputs(gen={"lpips": feats}, labels=c.labels, prompts=c.prompts, options={"bootstrap": 0})
    try:
        compute_lpips_diversity(inputs)
        fails = False
    except ValueError:
        fails = True
    assert bool(problems) == fails, problems


def test_lpips_diversity_options_are_checked():
    ctx = MetricContext(samples=10)
    assert check_lpips_diversity({}, ctx) == []
    problems = check_lpips_diversity({"max_per_condition": 1, "bootstrap": -1, "confidence": 95}, ctx)
    assert [p.split(":")[0] for p in problems] == ["option bootstrap", "option confidence", "option max_per_condition"]


def test_a_metric_check_runs_through_preflight():
    suite = parse_suite(
        {
            "name": "t",
            "models": [{"name": "m", "adapter": "noise"}],
            "samplers": ["ddim"],
            "steps": [2],
            "samples": 5,
            "conditions": {"classes": 5},
            "extractor": "mnist-net",
            "metrics": [{"name": "lpips_diversity", "options": {"read": "features"}}],
        }
    )
    (problem,) = preflight(suite)
    assert problem.startswith("metrics[0] lpips_diversity: needs a condition with 2 or more samples")
    assert "5 samples over 5 classes" in problem and "set samples > 5" in problem


# -- weights, checked without loading a network ----------------------------------------------------------------
def test_the_extractor_weights_table_matches_the_extractors_own():
    assert {f"inception-{m}": e for m, e in inception.WEIGHTS_ENTRY.items()} | {
        "inception": inception.WEIGHTS_ENTRY["clean"]
    } == {k: v for k, v in EXTRACTOR_WEIGHTS.items() if k.startswith("inception")}
    assert {f"lpips-{n}": e for n, e in lpips_net.NETS.items()} == {
        k: v for k, v in EXTRACTOR_WEIGHTS.items() if k.startswith("lpips")
    }
    assert EXTRACTOR_WEIGHTS["clip"] == clip.REGISTERED[("ViT-B-32", "openai")][0]
    assert all(v in REGISTRY for v in EXTRACTOR_WEIGHTS.values())


def test_check_extractor_weights_finds_missing_mismatched_and_present_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    (missing,) = check_extractor_weights("clip")
    assert missing.startswith("weights file 'ViT-B-32.pt' for clip") and CLIP_SHA in missing
    assert str(tmp_path / "w" / "ViT-B-32.pt") in missing  # where it was looked for (and goes)
    (tmp_path / "w" / "ViT-B-32.pt").write_bytes(b"not the CLIP weights")
    (mismatch,) = check_extractor_weights("clip")
    assert "has sha256" in mismatch and f"expected {CLIP_SHA}" in mismatch
    (tmp_path / "w" / "inception-2015-12-05.pt").write_bytes(b"any file: no published sha256")
    assert check_extractor_weights("inception-clean") == []
    assert check_extractor_weights("mnist-net") == [] and check_extractor_weights("my-plugin") == []


def hooked_adapter(device="cpu", **options):
    BUILT.append(options)
    return NoiseAdapter(device=device)


hooked_adapter.preflight = lambda options: [f"options.path: no pipeline at {options.get('path')}"]


def test_an_adapters_own_preflight_hook_is_asked_but_plugins_are_not_imported_by_a_dry_run(tmp_path, spy, capsys):
    suite = parse_suite(
        {
            "name": "h",
            "models": [{"name": "m", "adapter": f"{__name__}:hooked_adapter", "options": {"path": "/nowhere"}}],
            "samplers": ["ddim"],
            "steps": [2],
            "samples": 4,
            "metrics": ["throughput"],
        }
    )
    assert preflight(suite) == [
        f"models[0] m (adapter {__name__}:hooked_adapter): options.path: no pipeline at /nowhere"
    ]
    assert preflight(suite, import_plugins=False) == []  # --dry-run never runs a plugin's code
    assert BUILT == []
