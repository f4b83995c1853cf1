"""Equal N: a report of cells at N=50 and N=100 ranks, bests and draws frontiers only within one N, says so in
a visible note, and shows N (as an integer) in every table index and plot key."""

from __future__ import annotations

import re

import pytest
from study_helpers import suite, write_run

from evalkit.report.data import load_study
from evalkit.report.frontier import best_per_steps, headline, summary_sentences
from evalkit.report.html import render_report
from evalkit.report.plots import pareto_plot, steps_plot
from evalkit.report.tables import pivot


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("equal-n")
    s = dict(samplers=["ddim", "heun"], steps=[4, 8], metrics=["fd", "pr", "throughput"])
    small = write_run(tmp / "small", suite(samples=50, **s), shifts={"ddim": 0.0, "heun": 2.0}, run_id="small")
    big = write_run(tmp / "big", suite(samples=100, **s), shifts={"ddim": 2.0, "heun": 0.0}, run_id="big")
    return [small, big]


def test_no_statement_crosses_n(runs):
    study = load_study(runs, n_resamples=20)
    cells = study.cells
    assert sorted(cells["n"].unique()) == [50, 100] and str(cells["n"].dtype) == "Int64"
    assert any("mix cells of N = 50, 100" in note for note in study.notes)
    facets = summary_sentences(cells, "fd", study.pairs)
    assert {(f["n"], f["guidance"]) for f in facets} == {(50, 1.0), (100, 1.0)}
    for f in facets:
        mine, other = ("small", "big") if f["n"] == 50 else ("big", "small")
        text = " ".join(f["sentences"] + [line for b in f["budgets"] for line in b["lines"]])
        assert f"{mine} / " in text and f"{other} / " not in text
    best = best_per_steps(cells, "fd", study.pairs)
    assert {(r.n, r.run_id) for r in best.itertuples()} <= {(50, "small"), (100, "big")} and len(best) == 4
    words = headline(cells, "fd", study.pairs)
    per_n = re.split(r"(?=Best FD overall at N=|No single best FD at N=)", words)
    assert [p for p in per_n if "N=50" in p and "big /" in p] == []
    assert [p for p in per_n if "N=100" in p and "small /" in p] == []


def test_n_is_in_every_table_index_and_plot_key(runs):
    study = load_study(runs, n_resamples=20)
    p = pivot(study.results, "fd")
    assert p.index.names == ["run_id", "sampler", "n"] and {k[-1] for k in p.index} == {50, 100}
    plot = pareto_plot(study.cells, "fd", "nfe", study.pairs, study.floors)
    assert set(plot.data["panels"]) == {"guidance 1 · N=50", "guidance 1 · N=100"}
    for title, panel in plot.data["panels"].items():
        want = "small" if "N=50" in title else "big"
        assert all(point.startswith(f"{want} / ") for point in panel["frontier"]["points"])
        assert all(key.endswith(f"N={50 if want == 'small' else 100}") for key in panel["lines"])
    lines = steps_plot(study.cells, ["fd"]).data["panels"]["FD"]["lines"]
    assert set(lines) == {f"{r} / {s} · N={n}" for r, n in (("small", 50), ("big", 100)) for s in ("ddim", "heun")}


def test_the_report_says_so(runs, monkeypatch):
    from evalkit.report import html as report_html

    monkeypatch.setattr(report_html, "build_figures", lambda *a, **k: [])
    html, _ = render_report(runs)
    assert "mix cells of N = 50, 100 samples" in html and 'class="note"' in html
    assert "Guidance 1 · N=50" in html and "Guidance 1 · N=100" in html
    assert "50.0" not in html.split('id="tables"')[1].split("All ")[0]  # N shown as an integer in the tables
