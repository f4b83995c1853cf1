"""pytest plugin: the ``evalkit_check`` fixture runs a quality check inside a test.

    def test_quality(evalkit_check):
        evalkit_check("suites/ci.yaml", "baselines/ci.json")

The test fails with the markdown table on a regression (or with the list of problems when the run
cannot be judged against the baseline); on a pass the table is attached to the test's report
(``pytest -rA`` shows it). Registered through the ``pytest11`` entry point ``evalkit``; it imports
nothing heavy until the fixture is called, so installing evalkit does not slow other test sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from evalkit.gate.compare import CheckReport


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("evalkit")
    group.addoption("--evalkit-device", default=None, help="device for evalkit_check runs (default: auto)")
    group.addoption(
        "--evalkit-junit-dir",
        default=None,
        help="write each evalkit_check's JUnit XML into this folder (one file per test)",
    )


@pytest.fixture
def evalkit_check(request: pytest.FixtureRequest) -> Callable[..., CheckReport]:
    """Call as ``evalkit_check(suite_or_run, baseline, **options)``; returns the CheckReport on a pass.

    Options are those of :func:`evalkit.gate.commands.run_check` (``k``, ``seed``, ``out``, ``device``,
    ``batch_size``, ``n_resamples``, ``confidence``). Relative paths resolve against the rootdir.
    """
    root = Path(request.config.rootpath)

    def _resolve(p: str | Path) -> Path:
        p = Path(p)
        return p if p.is_absolute() or p.exists() else root / p

    def check(target: str | Path, baseline: str | Path, **options: Any) -> CheckReport:
        from evalkit.errors import EvalkitError
        from evalkit.gate.commands import run_check
        from evalkit.gate.render import config_error_markdown, junit_xml, markdown_report

        device = options.pop("device", None) or request.config.getoption("--evalkit-device") or "auto"
        try:
            report = run_check(_resolve(target), _resolve(baseline), device=device, **options)
        except EvalkitError as e:  # nothing judged (CheckConfigError, an unreadable run folder, ...)
            pytest.fail(config_error_markdown(getattr(e, "problems", None) or [str(e)], baseline), pytrace=False)
        table = markdown_report(report)
        request.node.add_report_section("call", "evalkit check", table)
        junit_dir = request.config.getoption("--evalkit-junit-dir")
        if junit_dir:
            Path(junit_dir).mkdir(parents=True, exist_ok=True)
            name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in request.node.nodeid)
            (Path(junit_dir) / f"{name}.xml").write_text(junit_xml(report))
        if report.exit_code:
            pytest.fail(table, pytrace=False)
        return report

    return check
