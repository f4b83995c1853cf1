"""Task suites: ``task`` with its own axes (``strength``, ``controlnet_scale``) crossed into the grid, the task inputs
under ``conditions`` validated with the field named, and suites without tasks unchanged (cells and hashes)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from evalkit.suite import SuiteError, expand_conditions, parse_suite
from evalkit.suite.tasks import TaskPoint, task_points

BASE = yaml.safe_load("""
name: t
models: [{name: m, adapter: zoo}]
samplers: [ddim, euler]
steps: [10]
guidance: [1]
samples: 6
task: [img2img, inpaint]
strength: [0.3, 0.6]
conditions:
  images: {dataset: mnist-heldout, samples: 4}
  classes: {offset: 1, count: 10}
  masks: {kind: centre, size: 0.5}
metrics: [{name: psnr, extractor: pixels}, throughput]
""")


def _suite(**changes):
    return parse_suite({**BASE, **changes}, file="t.yaml")


def _error(**changes) -> str:
    with pytest.raises(SuiteError) as exc:
        _suite(**changes)
    return str(exc.value)


def test_each_task_crosses_with_its_own_axis():
    suite = _suite()
    ids = [c.cell_id for c in suite.cells()]
    assert len(ids) == 2 * 2 * 2 == len(set(ids))  # samplers × tasks × strengths
    assert "m__ddim__s10__g1__inpaint_st0.6" in ids
    cell = suite.cells()[0]
    assert cell.describe()["task"] == "img2img" and cell.describe()["strength"] == 0.3
    # a task without a strength axis gets one point; controlnet gets its scales (default 1.0)
    points = task_points(["img2img", "controlnet", "edit"], [0.5], [])
    assert points == [TaskPoint("img2img", 0.5), TaskPoint("controlnet", None, 1.0), TaskPoint("edit")]
    # without a strength list each task takes its default (diffusers': img2img 0.8, inpaint 1.0)
    assert [p.strength for p in task_points(["img2img", "inpaint"], [], [])] == [0.8, 1.0]


def test_filters_name_task_axes():
    suite = _suite(exclude=[{"task": "inpaint", "strength": 0.3}])
    ids = [c.cell_id for c in suite.cells()]
    assert len(ids) == 6 and not any("inpaint_st0.3" in i for i in ids)
    assert "matches no cell" in _error(only=[{"strength": 0.9}])


def test_suites_without_tasks_keep_their_configs():
    plain = {k: v for k, v in BASE.items() if k not in ("task", "strength")}
    plain["conditions"] = {"classes": 10}
    plain["reference"] = {"dataset": "mnist-heldout"}  # without sources, psnr pairs with the reference
    a = parse_suite(plain, file="p.yaml")
    assert "task" not in a.to_config() and "strength" not in a.to_config()
    assert all(c.task is None and "__img2img" not in c.cell_id for c in a.cells())
    # a task cell's hash differs from the same cell without a task
    b = _suite()
    assert a.cell_hash(a.cells()[0]) != b.cell_hash(b.cells()[0])


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"task": "colorize"}, "task", "expected one of: img2img, inpaint"),
        ({"strength": [0]}, "strength[0]", "(0, 1]"),
        ({"strength": [1.5]}, "strength[0]", "(0, 1]"),
        ({"task": ["img2img", "img2img"]}, "task", "once"),
        ({"controlnet_scale": [1.0]}, "controlnet_scale", "only the controlnet task"),
        ({"task": "edit", "strength": [0.5]}, "strength", "no task of the suite takes a strength"),
        ({"task": "controlnet", "strength": None}, "conditions.control", "needs conditions.control"),
        ({"conditions": {"images": {"dataset": "mnist-heldout"}, "classes": 10}}, "conditions.masks", "inpaint"),
        ({"task": None, "strength": None}, "task", "no 'task' says what to do with it"),
        ({"conditions": {"classes": 10, "masks": {"kind": "centre"}}}, "conditions.masks", "needs 'conditions.images'"),
        (
            {"conditions": {**BASE["conditions"], "images": {"dataset": "x", "path": "y"}}},
            "conditions.images",
            "one of",
        ),
        ({"conditions": {**BASE["conditions"], "masks": {"kind": "blob"}}}, "conditions.masks", "blob"),
        ({"conditions": {**BASE["conditions"], "control": {"detector": "depth"}}}, "conditions.control", "depth"),
        ({"conditions": {**BASE["conditions"], "classes": {"offset": 1}}}, "conditions.classes", "count"),
    ],
)
def test_bad_task_fields_name_the_field(changes, field, says):
    raw = {**BASE, **changes}
    for key in [k for k, v in changes.items() if v is None]:
        raw.pop(key)
    with pytest.raises(SuiteError) as exc:
        parse_suite(raw, file="t.yaml")
    text = str(exc.value)
    assert text.startswith(f"t.yaml: {field}"), text
    assert says in text, text


def test_requested_classes_relative_to_the_sources():
    labels = np.array([3, 9, 0])
    cond = expand_conditions({"classes": {"offset": 1, "count": 10}}, 7, source_labels=labels)
    assert cond.labels.tolist() == [4, 0, 1, 4, 0, 1, 4]  # sample i: source i mod 3, next class
    captions = expand_conditions({"images": {}}, 4, source_prompts=["a", "b"])
    assert captions.prompts == ["a", "b", "a", "b"] and captions.labels is None
