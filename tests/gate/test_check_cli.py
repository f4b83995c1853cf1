"""`evalkit baseline` and `evalkit check` end to end on the built-in model (a tiny suite, seconds)."""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from test_check import table

from evalkit.cli import main

TINY = """\
name: tiny
models: [{{name: mnist, adapter: "{adapter}"}}]
samplers: [ddim]
steps: [{steps}]
guidance: [1]
samples: 40
batch_size: 40
seed: 0
conditions: {{classes: 10}}
reference: {{dataset: mnist-heldout, samples: 200}}
extractor: mnist-net
metrics: [fd, is, pr, throughput]
grid_samples: 4
"""


def noisy_digits(device="cpu"):
    """A "model" that regressed all the way: uniform noise images (plugin adapter)."""
    from evalkit.generate.zoo_adapter import NoiseAdapter

    return NoiseAdapter(device=device)


def write_suite(path, adapter="zoo", steps=3):
    path.write_text(TINY.format(adapter=adapter, steps=steps))
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    suite = write_suite(tmp / "tiny.yaml")
    rc = main(
        ["baseline", str(suite), "--seeds", "3", "-o", str(tmp / "b" / "tiny.json"), "--work-dir", str(tmp / "w"), "-q"]
    )
    return tmp, suite, rc


def test_baseline_command_measures_seed_sets_and_resumes(made, capsys):
    tmp, suite, rc = made
    assert rc == 0
    doc = json.loads((tmp / "b" / "tiny.json").read_text())
    assert doc["seeds"] == [0, 1, 2] and doc["n"] == 40 and doc["features_file"] == "tiny.npz"
    assert sorted(p.name for p in (tmp / "w").iterdir()) == ["seed-0", "seed-1", "seed-2"]
    fd = next(e for e in doc["entries"] if e["metric"] == "fd")
    assert fd["direction"] == "lower" and len(set(fd["values"])) == 3 and fd["sigma"] > 0
    assert {e["metric"] for e in doc["entries"]} == {"fd", "is", "precision", "recall", "density", "coverage"}
    stamps = {p: p.stat().st_mtime_ns for p in (tmp / "w").glob("*/cells/*/cell.json")}
    again_args = ["baseline", str(suite), "--seeds", "3", "-o", str(tmp / "again.json"), "--work-dir", str(tmp / "w")]
    assert main([*again_args, "-q"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished seed sets are not recomputed
    again = json.loads((tmp / "again.json").read_text())
    assert [e["values"] for e in again["entries"]] == [e["values"] for e in doc["entries"]]


def test_check_of_the_same_model_passes_and_a_broken_one_fails(made, tmp_path, capsys):
    tmp, suite, _ = made
    baseline = str(tmp / "b" / "tiny.json")
    junit = tmp_path / "j.xml"
    assert main(["check", str(suite), "--baseline", baseline, "--junit", str(junit), "-q", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    deltas = [float(r["delta"]) for r in table(out)]
    assert len(deltas) == 6 and np.allclose(deltas, 0.0, atol=1e-9)  # same model, same seeds: same numbers
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert len(cases) == 6 and not ET.parse(junit).getroot().findall(".//failure")

    sys.path.insert(0, os.path.dirname(__file__))
    broken = write_suite(tmp_path / "broken.yaml", adapter=f"{__name__}:noisy_digits")
    assert main(["check", str(broken), "--baseline", baseline, "--junit", str(junit), "-q", "--bootstrap", "50"]) == 1
    failures = ET.parse(junit).getroot().findall(".//failure")
    assert any("fd" in f.get("message") for f in failures)


def test_a_changed_protocol_is_refused_before_running(made, tmp_path, capsys):
    tmp, _, _ = made
    changed = write_suite(tmp_path / "changed.yaml", steps=6)
    out = tmp_path / "run"
    assert main(["check", str(changed), "--baseline", str(tmp / "b" / "tiny.json"), "--out", str(out), "-q"]) == 2
    assert "steps: baseline [3] != run [6]" in capsys.readouterr().err
    assert not out.exists()  # refused before spending time on a run
    assert main(["check", str(changed), "--baseline", str(tmp_path / "nope.json"), "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["baseline", str(changed), "--seeds", "1", "-o", str(tmp_path / "x.json"), "-q"]) == 2
