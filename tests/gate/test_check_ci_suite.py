"""The committed quality gate: `evalkit check suites/ci.yaml --baseline baselines/ci.json` passes.

This is the check every pull request runs. It fails when the built-in model, a sampler, an extractor or
a metric changes the CI suite's numbers beyond the measured noise, or when suites/ci.yaml changed
without a new baseline (exit 2): then re-make it with
``evalkit baseline suites/ci.yaml --seeds 20 -o baselines/ci.json``.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from evalkit.cli import main
from evalkit.gate.baseline import Baseline
from evalkit.suite import load_suite
from evalkit.suite.identity import protocol_hash

ROOT = Path(__file__).resolve().parents[2]
SUITE, BASELINE = ROOT / "suites" / "ci.yaml", ROOT / "baselines" / "ci.json"


def test_committed_baseline_matches_the_ci_suite():
    b = Baseline.load(BASELINE)
    suite = load_suite(SUITE)
    assert b.protocol_hash == protocol_hash(suite.to_config()) and b.seed == suite.seed
    assert len(b.seeds) >= 10 and (BASELINE.parent / b.features_file).stat().st_size < 2_000_000
    assert {e.cell for e in b.entries} == {c.cell_id for c in suite.cells()}
    assert all(e.sigma > 0 for e in b.entries if e.metric in ("fd", "kid"))


def test_committed_ci_check_passes(tmp_path, capsys):
    junit = tmp_path / "ci.xml"
    t0 = time.perf_counter()
    rc = main(["check", str(SUITE), "--baseline", str(BASELINE), "--junit", str(junit), "-q"])
    seconds = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "paired on common seeds" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    n_entries = len(json.loads(BASELINE.read_text())["entries"])
    assert int(suite.get("tests")) == n_entries and suite.get("failures") == "0" and suite.get("errors") == "0"
    assert seconds < 300, f"the CI check must finish in 5 minutes on 2 cores; took {seconds:.0f} s"
