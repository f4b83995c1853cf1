"""Fixtures shared by the gate tests (imported by name: a second conftest.py would shadow tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_check import reference, suite, write_run

from evalkit.gate.baseline import build_baseline
from evalkit.store import read_run

SETS = 3  # seed sets of the shared baseline: few, the tests judge the gate's inputs, not its noise model


@pytest.fixture(scope="session")
def good(tmp_path_factory) -> tuple[Path, Path]:
    """(a synthetic run folder that passes, its baseline over SETS seed sets with the feature sidecar)."""
    tmp = tmp_path_factory.mktemp("good")
    runs = [read_run(write_run(tmp / f"seed-{i}", suite(seed=i))) for i in range(SETS)]
    b, side = build_baseline(runs, reference_features={"mnist-net": reference()})
    return tmp / "seed-0", b.save(tmp / "b.json", side)
