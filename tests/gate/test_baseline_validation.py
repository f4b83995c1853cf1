"""Baselines are validated when loaded: every field's type and range, unique entries, a plain-npz sidecar.

Each case edits a copy of the committed CI baseline (valid as it is) and expects a CheckConfigError naming
the field — exit 2 from ``evalkit check``, before any run — never a traceback, a NaN tolerance or a pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from evalkit.cli import main
from evalkit.gate.baseline import Baseline, CheckConfigError

CI = Path(__file__).resolve().parents[2] / "baselines" / "ci.json"


def copied(tmp: Path, edit: Callable[[dict], object] | None = None) -> Path:
    shutil.copy(CI.with_suffix(".npz"), tmp / "ci.npz")
    doc = json.loads(CI.read_text())
    if edit:
        edit(doc)
    (tmp / "ci.json").write_text(json.dumps(doc))
    return tmp / "ci.json"


def entry(field: str, value) -> Callable[[dict], None]:
    def edit(doc):
        target = doc["entries"][0]
        *parents, last = field.split(".")
        for part in parents:
            target = target[part]
        target[last] = value

    return edit


CASES = {
    "value is text": (entry("value", "abc"), "entries[0].value: expected a finite number, got 'abc'"),
    "mean is null": (entry("mean", None), "entries[0].mean: expected a finite number"),
    "value is true": (entry("value", True), "entries[0].value: expected a finite number"),
    "sigma is NaN": (entry("sigma", math.nan), "entries[0].sigma: expected a finite non-negative number"),
    "sigma is infinite": (entry("sigma", math.inf), "entries[0].sigma: expected a finite non-negative number"),
    "sigma is negative": (entry("sigma", -1.0), "entries[0].sigma: expected a finite non-negative number"),
    "sampling sigma is NaN": (entry("sigma_sampling", math.nan), "entries[0].sigma_sampling"),
    "k is NaN": (entry("tolerance.k", math.nan), "entries[0].tolerance.k: expected a finite non-negative number"),
    "rel is infinite": (entry("tolerance.rel", math.inf), "entries[0].tolerance.rel"),
    "abs is negative": (entry("tolerance.abs", -0.5), "entries[0].tolerance.abs"),
    "k is text": (entry("tolerance.k", "3"), "entries[0].tolerance.k"),
    "direction sideways": (entry("direction", "sideways"), "entries[0].direction: expected 'higher' or 'lower'"),
    "direction missing": (lambda d: d["entries"][0].pop("direction"), "entries[0]: missing 'direction'"),
    "steps is text": (entry("steps", "8"), "entries[0].steps: expected an integer"),
    "values empty": (entry("values", []), "entries[0].values: expected a non-empty list of finite numbers"),
    "values with NaN": (entry("values", [1.0, math.nan]), "entries[0].values"),
    "values not one per seed set": (entry("values", [1.0, 2.0]), "entries[0].values: 2 values for 20 seed sets"),
    "unknown entry field": (entry("wat", 1), "entries[0]: unknown field 'wat'"),
    "entry not a mapping": (lambda d: d["entries"].__setitem__(0, 7), "entries[0]: expected a mapping"),
    "duplicate entry": (lambda d: d["entries"].append(dict(d["entries"][3])), "entries[14]: duplicate of entries[3]"),
    "no entries": (lambda d: d.update(entries=[]), "entries: empty"),
    "entries missing": (lambda d: d.pop("entries"), "missing 'entries'"),
    "entries not a list": (lambda d: d.update(entries={"a": 1}), "baseline.entries: expected a list"),
    "n is zero": (lambda d: d.update(n=0), "baseline.n: expected a positive integer"),
    "seed is text": (lambda d: d.update(seed="0"), "baseline.seed: expected an integer"),
    "seeds empty": (lambda d: d.update(seeds=[]), "baseline.seeds"),
    "unknown top-level field": (lambda d: d.update(extra=1), "unknown field 'extra'"),
    "sidecar without sha256": (lambda d: d.update(features_sha256=None), "features_sha256"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_malformed_baseline_is_refused_with_the_field_named(tmp_path, capsys, name):
    edit, named = CASES[name]
    path = copied(tmp_path, edit)
    with pytest.raises(CheckConfigError, match="is malformed") as info:
        Baseline.load(path)
    assert named in str(info.value), str(info.value)
    assert main(["check", str(tmp_path / "no-run"), "--baseline", str(path), "-q"]) == 2
    assert named in capsys.readouterr().err


def test_the_committed_baseline_is_valid_and_many_problems_are_listed_together(tmp_path):
    assert len(Baseline.load(copied(tmp_path)).entries) == 14

    def break_all(doc):
        for e in doc["entries"]:
            e["value"] = "x"

    with pytest.raises(CheckConfigError) as info:
        Baseline.load(copied(tmp_path, break_all))
    problems = info.value.problems
    assert len(problems) == 9 and problems[-1] == "and 6 more"  # 8 shown, the rest counted


def _sidecar(tmp: Path, data: bytes) -> Baseline:
    path = copied(tmp, lambda d: d.update(features_sha256=hashlib.sha256(data).hexdigest()))
    path.with_suffix(".npz").write_bytes(data)
    return Baseline.load(path)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_npz(x=np.array([{"a": 1}], dtype=object)), id="object array (pickled in the npz)"),
        pytest.param(pickle.dumps({"x": np.zeros(3)}), id="a pickle"),
        pytest.param(_npy(), id="a bare npy"),
        pytest.param(b"not a zip at all", id="garbage"),
        pytest.param(_npz(x=np.array(["a", "b"])), id="strings"),
    ],
)
def test_a_sidecar_that_is_not_a_plain_npz_is_a_config_error(tmp_path, data):
    baseline = _sidecar(tmp_path, data)
    with pytest.raises(CheckConfigError, match="baseline features .*(not a plain npz|not numbers)"):
        baseline.features()


def test_a_baseline_path_that_is_a_directory_or_unreadable_is_exit_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "no-run"), "--baseline", str(tmp_path), "-q"]) == 2
    assert "is a directory" in capsys.readouterr().err
    with pytest.raises(CheckConfigError, match="is a directory"):
        Baseline.load(tmp_path)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CheckConfigError, match="not valid JSON"):
        Baseline.load(tmp_path / "bin.json")
