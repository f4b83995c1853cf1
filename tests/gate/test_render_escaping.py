"""Names in check's markdown are escaped: no broken table, no HTML in ``$GITHUB_STEP_SUMMARY``, valid JUnit.

A cell id, model/sampler/metric name, note or problem may hold ``|``, backticks, ``<img …>``, newlines or
control characters (they come from suite files and tracebacks); each must stay literal text in its cell.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from evalkit.gate.baseline import Baseline, BaselineEntry
from evalkit.gate.compare import ERROR, PASS, CheckReport, Comparison
from evalkit.gate.render import config_error_markdown, junit_config_error, junit_xml, markdown_report

EVIL = "a|b`c`<img src=x onerror=alert(1)>\n| x | y |\r\n![t](http://e.example/p.png)\x00\x1b[31m"


def _report(name: str) -> CheckReport:
    def entry(metric: str) -> BaselineEntry:
        return BaselineEntry(name, name, name, 4, 3.0, metric, metric, name, False, 1.0, 1.0, 0.1, [1.0, 1.1])

    baseline = Baseline(
        suite=name,
        protocol_hash=name,
        protocol={},
        config={},
        seed=0,
        seeds=[0, 1],
        n=10,
        extractors={},
        reference=None,
        models={},
        entries=[entry(name), entry("fd")],
        path=Path(f"/tmp/{name}.json"),
    )
    a, b = baseline.entries
    return CheckReport(
        baseline,
        Path(f"/runs/{name}"),
        paired=True,
        comparisons=[
            Comparison(a, 1.0, 1.0, 0.0, 0.1, (-0.1, 0.1), PASS, k=3.0),
            Comparison(b, float("nan"), float("nan"), float("nan"), float("nan"), None, ERROR, f"cell failed: {name}"),
        ],
        run_seed=0,
    )


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_names_cannot_break_the_table_or_inject_html():
    md = markdown_report(_report(EVIL))
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| cell |"))
    rows = lines[header + 2 : header + 4]
    assert all(_unescaped_pipes(line) == 10 for line in [lines[header], *rows]), rows  # 9 columns, intact
    assert lines[header + 4] == ""  # the two rows, then the table ends: no row was split by a newline
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    outside_code = re.sub(r"`[^`\n]*`", "", md)  # in a code span nothing is a link
    assert "](" not in outside_code.replace("]\\(", "")  # no link or image is formed
    assert "\x00" not in md and "\x1b" not in md and "\r" not in md
    heading = lines[0]
    assert heading.count("`") == 2 and "<img" not in heading  # the suite name stays inside its code span


def test_problems_in_a_config_error_are_escaped_one_bullet_each():
    md = config_error_markdown([f"cell {EVIL} is stale", "second"], f"/b/{EVIL}.json")
    bullets = [line for line in md.splitlines() if line.startswith("- ")]
    assert len(bullets) == 2 and "<img" not in md and "\x00" not in md
    assert md.splitlines()[2].count("`") == 2


@pytest.mark.parametrize("make", [lambda: junit_xml(_report(EVIL)), lambda: junit_config_error([EVIL], EVIL)])
def test_junit_stays_valid_xml(make):
    root = ET.fromstring(make().split("?>", 1)[1])
    assert root.tag == "testsuites"


def test_plain_names_are_unchanged():
    from evalkit.gate.render import md_text

    for name in ("mnist__ddim__s8__g3", "fd", "precision", "m__euler__s4__g3", "clip-score", "dpm++ 2m"):
        assert md_text(name) == name
