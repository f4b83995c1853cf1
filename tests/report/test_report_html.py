"""The HTML report: the CLI, escaping, size, self-containment, and a real headless Chromium.

The browser test opens the report offline and checks what a reader gets: no console errors, no
request beyond the file itself, every section, every image decoded, sortable tables. It drives the
system's Chromium with Playwright (browser_helper.py) and skips only where no Chromium is installed
(Debian package ``chromium``) or Playwright is missing, with a warning.
Set EVALKIT_REPORT_ARTIFACTS=DIR to keep the report, its screenshots and PDF.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import browser_helper
import pytest
from test_report_data import EVIL, WORSE, fd_value, shared_run

from evalkit.cli import main
from evalkit.report import html as report_html
from evalkit.report.html import SECTIONS, render_report
from evalkit.store import RunStore

MAX_BYTES = 5 * 1024 * 1024
SMOKE_RUN = Path(os.environ.get("EVALKIT_SMOKE_RUN", "runs/smoke"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A synthetic run, a baselines JSON it regressed against, and the report written by the CLI."""
    root = tmp_path_factory.mktemp("report")
    run = shared_run(tmp_path_factory)
    base = root / "baseline.json"
    base.write_text(
        json.dumps(
            {
                "name": "ci <baseline>",
                "cells": {
                    f"mnist__heun__s{s}__g1": {
                        "fd": {"value": fd_value("heun", s, 1.0) - 3, "noise": 0.5, "direction": "lower"}
                    }
                    for s in (4, 8, 16)
                },
            }
        )
    )
    out = root / "reports" / "synthetic.html"
    rc = main(["report", str(run), "-o", str(out), "--baseline", str(base)])
    assert rc == 0
    return {"root": root, "run": run, "out": out, "html": out.read_text(encoding="utf-8")}


def test_cli_writes_one_small_file(built):
    assert built["out"].stat().st_size <= MAX_BYTES
    assert not [p for p in built["out"].parent.iterdir() if p != built["out"]]  # nothing else needed


def test_user_strings_are_escaped(built):
    html = built["html"]
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;boom&lt;/b&gt;" in html and "&lt;em&gt;study&lt;/em&gt;" in html
    assert "ci &lt;baseline&gt;" in html
    assert len(re.findall(r"<script", html)) == 1  # only the report's own sort script


def test_report_is_self_contained(built):
    html = built["html"]
    assert "Content-Security-Policy" in html and "default-src &#39;none&#39;" in html
    srcs = re.findall(r'\s(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith(("data:", "#")) for s in srcs), [s[:40] for s in srcs if not s.startswith("data:")]
    assert not re.search(r"https?://", html.split("<main>")[1].split("Suite configuration")[0])
    for section in SECTIONS:
        assert f'<section id="{section}"' in html


def test_cli_errors_exit_2(built, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            ["report", str(built["run"]), "-o", str(tmp_path / "r.html"), "--baseline", str(tmp_path / "missing.json")]
        )
        == 2
    )
    assert "baseline" in capsys.readouterr().err and not (tmp_path / "r.html").exists()
    (tmp_path / "bad.json").write_text("{not json")
    assert (
        main(["report", str(built["run"]), "-o", str(tmp_path / "r.html"), "--baseline", str(tmp_path / "bad.json")])
        == 2
    )


def test_two_runs_side_by_side(built, tmp_path_factory, monkeypatch):
    monkeypatch.setattr(report_html, "build_figures", lambda *a, **k: [])  # plots: see test_report_plots
    html, _ = render_report([built["run"], shared_run(tmp_path_factory, **WORSE)])
    assert "Runs: synthetic-20250101T000000Z, worse" in html
    assert "<h3>Run worse</h3>" in html and "<h3>Run synthetic-20250101T000000Z</h3>" in html
    assert '<td data-v="worse">worse</td>' in html  # pivot rows carry the run id


def test_run_with_only_failed_cells(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_failed_cell(
        "m__ddim__s4__g1",
        {"cell_id": "m__ddim__s4__g1", "model": "m", "sampler": "ddim", "steps": 4, "guidance": 1.0},
        "Traceback\nValueError: <nope>",
    )
    html, figures = render_report([tmp_path / "run"])
    assert figures == [] and "No finished cells" in html and "ValueError: &lt;nope&gt;" in html


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for this module's browser tests; skips loudly where there is none."""
    msg = browser_helper.why_no_browser()
    if msg:
        warnings.warn(msg, stacklevel=1)
        pytest.skip(msg)
    with browser_helper.chromium() as browser:
        yield browser


PAGE_FACTS = """(async () => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const th = document.querySelector('#table-fd th[data-col="1"]');
  const col = () => [...document.querySelectorAll('#table-fd tbody tr')].map(r => Number(r.cells[1].dataset.v));
  th.click();
  const asc = col();
  th.click();
  const desc = col();
  return {
    sections: [...document.querySelectorAll('main > section')].map(s => s.id),
    images: imgs.map(i => ({w: i.naturalWidth, h: i.naturalHeight, ok: i.complete, alt: i.alt})),
    prompts: [...document.querySelectorAll('.prompt')].map(p => p.textContent),
    scripts: document.scripts.length,
    moved: [...document.querySelectorAll('#table-deltas-moved tbody tr')]
      .map(r => r.cells[r.cells.length - 1].textContent),
    asc, desc,
    bodyWidth: document.documentElement.scrollWidth,
  };
})()"""


def _report_in_browser(browser, report: Path, shots: Path) -> dict:
    with browser_helper.open_offline(browser, report) as (page, log):
        facts = page.evaluate(PAGE_FACTS)
        facts["screenshot"] = browser_helper.screenshot(page, shots / f"{report.stem}.png")
        if os.environ.get("EVALKIT_REPORT_ARTIFACTS"):
            browser_helper.screenshot(page, shots / f"{report.stem}-full.png", full_page=True)
        facts["pdf"] = browser_helper.pdf(page, shots / f"{report.stem}.pdf")
        facts["log"] = log
        facts["url"] = report.resolve().as_uri()
    artifacts = os.environ.get("EVALKIT_REPORT_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for f in [report, *shots.iterdir()]:
            shutil.copy(f, artifacts)
    return facts


def _check_page(facts: dict, expect_sections: list[str]) -> None:
    log = facts["log"]
    assert log.console_errors == []
    assert log.network_requests() == [facts["url"]]  # the file itself, nothing else
    assert log.blocked == []  # nothing tried to leave the machine (the route aborts it if it does)
    assert log.dialogs == []  # no alert() ran
    assert facts["sections"] == expect_sections
    assert len(facts["images"]) >= 5
    bad = [i["alt"] for i in facts["images"] if not (i["ok"] and i["w"] > 0 and i["h"] > 0)]
    assert bad == [], f"images not decoded: {bad}"
    assert facts["asc"] == sorted(facts["asc"]) and facts["desc"] == sorted(facts["desc"], reverse=True)
    assert facts["scripts"] == 1
    assert facts["bodyWidth"] <= 1366  # no horizontal scrolling of the page on a laptop screen
    assert facts["screenshot"].stat().st_size > 10_000
    assert facts["pdf"].read_bytes()[:5] == b"%PDF-"


def test_report_in_headless_chromium(chromium, built, tmp_path):
    facts = _report_in_browser(chromium, built["out"], tmp_path)
    _check_page(facts, SECTIONS)
    assert EVIL in facts["prompts"]  # shown as text
    assert facts["moved"] == ["worse"] * 3  # the baseline section lists the three regressed cells


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke run: ``runs/smoke`` (or $EVALKIT_SMOKE_RUN) when one exists, else the embedded smoke
    suite run here with fewer samples per cell: the same cells, samplers, steps and guidance."""
    if (SMOKE_RUN / "run.json").is_file() and (SMOKE_RUN / "results.parquet").is_file():
        return SMOKE_RUN
    import dataclasses

    from evalkit.run.runner import Runner
    from evalkit.suite import load_suite

    suite = dataclasses.replace(load_suite("smoke"), samples=10, grid_samples=10)
    out = tmp_path_factory.mktemp("smoke") / "smoke"
    assert Runner(suite, out, device="cpu").run().exit_code == 0
    return out


def test_smoke_report_in_headless_chromium(chromium, smoke_run, tmp_path):
    out = tmp_path / "smoke.html"
    assert main(["report", str(smoke_run), "-o", str(out)]) == 0
    assert out.stat().st_size <= MAX_BYTES
    facts = _report_in_browser(chromium, out, tmp_path / "shots")
    _check_page(facts, [s for s in SECTIONS if s != "baseline"])
