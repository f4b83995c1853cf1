"""The plots draw the expected lines: read from each plot's data, not its pixels."""

from __future__ import annotations

import pytest
from test_report_data import GUIDANCE, SAMPLERS, STEPS, WORSE, cost, fd_value, shared_run

from evalkit.report import cell_table, load_results
from evalkit.report.plots import guidance_plot, pareto_plot, save_figure, steps_plot, throughput_plot


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return cell_table(load_results(shared_run(tmp_path_factory)))


def test_pareto_has_a_line_per_sampler_labelled_by_steps(cells):
    plot = pareto_plot(cells, "fd", "nfe")
    assert set(plot.data["panels"]) == {f"guidance {g:g}" for g in GUIDANCE}
    for g in GUIDANCE:
        panel = plot.data["panels"][f"guidance {g:g}"]
        assert list(panel["lines"]) == list(SAMPLERS)
        for sampler, line in panel["lines"].items():
            assert line["x"] == [cost(sampler, s, g)[1] for s in STEPS]  # NFE, sorted by cost
            assert line["y"] == pytest.approx([fd_value(sampler, s, g) for s in STEPS])
            assert line["points"] == [str(s) for s in STEPS]
            assert line["err"] is not None  # the run has FD confidence intervals
            assert line["err"][0] == pytest.approx([1.0] * 3) and line["err"][1] == pytest.approx([1.5] * 3)
    front = plot.data["panels"]["guidance 1"]["frontier"]
    # dpmpp_2m is cheapest at 4 NFE; heun at 16 steps is the best FD overall
    assert front["points"][0] == "dpmpp_2m @ 4" and front["points"][-1] == "heun @ 16"
    assert front["x"] == sorted(front["x"]) and front["y"] == sorted(front["y"], reverse=True)
    assert plot.figure.axes[0].get_xlabel() == "NFE/image"


def test_pareto_against_seconds_per_image(cells):
    plot = pareto_plot(cells, "fd", "s_per_image")
    line = plot.data["panels"]["guidance 3"]["lines"]["heun"]
    assert line["x"] == pytest.approx([cost("heun", s, 3.0)[2] for s in STEPS])


def test_guidance_sweep_labels_guidance(cells):
    plot = guidance_plot(cells, "fd", "is")
    assert set(plot.data["panels"]) == {f"{s} steps" for s in STEPS}
    line = plot.data["panels"]["8 steps"]["lines"]["euler"]
    assert line["points"] == ["g=1", "g=3"]
    assert line["x"] == pytest.approx([fd_value("euler", 8, g) for g in GUIDANCE])
    assert line["y"][1] > line["y"][0]  # IS rises with guidance in the synthetic run
    assert guidance_plot(cells[cells.guidance == 1.0], "fd", "is") is None  # one scale: no sweep


def test_metrics_vs_steps_and_throughput(cells, tmp_path):
    plot = steps_plot(cells, ["fd", "kid", "is", "precision", "recall"])
    assert list(plot.data["panels"]) == ["FD", "KID", "IS", "precision", "recall"]
    fd_lines = plot.data["panels"]["FD"]["lines"]
    assert len(fd_lines) == len(SAMPLERS) * len(GUIDANCE)
    assert fd_lines["ddim · g=1"]["x"] == [float(s) for s in STEPS]
    assert fd_lines["ddim · g=1"]["y"] == sorted(fd_lines["ddim · g=1"]["y"], reverse=True)  # FD falls with steps
    assert plot.data["panels"]["KID"]["lines"]["heun · g=3"]["err"] is not None  # KID ± std
    bars = throughput_plot(cells)
    heun = bars.data["panels"]["guidance 1"]["lines"]["heun"]
    assert heun["x"] == STEPS and heun["y"] == pytest.approx([1 / cost("heun", s, 1.0)[2] for s in STEPS])
    png, svg = save_figure(bars.figure, tmp_path / "throughput")
    assert png.read_bytes()[:4] == b"\x89PNG" and b"<svg" in svg.read_bytes()[:500]


def test_lines_of_two_runs_are_told_apart(cells, tmp_path_factory):
    both = cell_table(load_results([shared_run(tmp_path_factory), shared_run(tmp_path_factory, **WORSE)]))
    lines = pareto_plot(both, "fd", "nfe").data["panels"]["guidance 1"]["lines"]
    assert set(lines) == {f"{run} / {s}" for run in ("synthetic-20250101T000000Z", "worse") for s in SAMPLERS}
    assert lines["worse / heun"]["y"] == pytest.approx([fd_value("heun", s, 1.0) + 5 for s in STEPS])


def test_user_labels_are_drawn_as_plain_text_not_mathtext(tmp_path, monkeypatch, capsys):
    """A sampler label like ``$\\foo{$`` is user data: it used to be parsed as mathtext and stopped the report."""
    import test_report_data

    from evalkit.cli import main
    from evalkit.report.plots import figure_bytes

    evil = r"$\foo{$"
    monkeypatch.setattr(test_report_data, "SAMPLERS", {**SAMPLERS, evil: (40.0, 1)})
    run = test_report_data.make_run(tmp_path / "run", failed=False)
    cells = cell_table(load_results(run))
    plots = [pareto_plot(cells, "fd", "nfe"), guidance_plot(cells, "fd", "is"), steps_plot(cells, ["fd", "kid"])]
    for plot in [*plots, throughput_plot(cells)]:
        assert figure_bytes(plot.figure, "png")[:4] == b"\x89PNG" and b"<svg" in figure_bytes(plot.figure, "svg")
        legend = [t.get_text() for t in plot.figure.legends[0].get_texts()]
        assert any(evil in t for t in legend), legend
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 0, capsys.readouterr().err
