"""The report shows the noise floors: a band in the plots, a column in the tables, "at floor" on the cells
within it, and the floors in the summary."""

from __future__ import annotations

import pytest
from study_helpers import suite, write_floors, write_run

from evalkit.report import html as report_html
from evalkit.report.data import load_study
from evalkit.report.htmltables import pivot_table
from evalkit.report.plots import pareto_plot, steps_plot


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    s = suite(samplers=["ddim", "heun"], steps=[4, 8], metrics=["fd", "throughput"])
    root = write_run(tmp_path_factory.mktemp("floors") / "run", s, shifts={"ddim": 0.0, "heun": 1.5}, jitter=0.05)
    write_floors(root, s)
    return root


def test_floors_in_tables_and_plots(run):
    study = load_study([run], n_resamples=20)
    floor = study.floors.iloc[0]
    table = pivot_table(study.results, "fd", study.pairs, study.floors)
    assert [h.text for h in table.head[0]][-1] == "real-vs-real floor"
    rows = {r[0].text: r for r in table.body}
    assert rows["ddim"][-1].sub == f"{floor.low:.4g}–{floor.high:.4g}"
    assert all("at floor" in c.sub and "floor" in c.cls for c in rows["ddim"][2:-1])  # FD ≈ 0.3: real-like
    assert not any("at floor" in c.sub for c in rows["heun"][2:-1])  # FD ≈ 19: far above
    band = pareto_plot(study.cells, "fd", "nfe", study.pairs, study.floors).data["panels"]["guidance 1"]["floor"]
    assert band == pytest.approx({"n": 100, "low": floor.low, "high": floor.high, "median": floor["median"]})
    assert steps_plot(study.cells, ["fd"], study.floors).data["panels"]["FD"]["floors"] == [band]


def test_floors_in_the_summary(run, monkeypatch):
    monkeypatch.setattr(report_html, "build_figures", lambda *a, **k: [])
    html, _ = report_html.render_report([run])
    assert "Noise floors" in html and "FD at N=100: " in html
    assert "is at the real-vs-real floor" in html  # the best cell's sentence says so
