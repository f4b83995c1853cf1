"""The report of a task suite (img2img, inpaint): the task view's images, the task axis kept apart in plots,
tables, grids and the summary, and the strength plot.

The runs are real: ``evalkit run`` on tiny suites with the test adapter ``blend_adapter:make``, whose
output is a known blend of the source and seeded noise — ``(1 - strength)·source + strength·amp·noise``, inside the
mask only for inpaint — so that PSNR against the source falls as strength rises. The report is then read back:
the task view's inline images decoded and compared with the run's stored sources, masks and samples, the plots'
data checked line by line, PSNR recomputed by a loop from the stored images.
"""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from evalkit.cli import main
from evalkit.report.data import load_study
from evalkit.report.html import render_report
from evalkit.report.task_view import strength_plot
from evalkit.store import read_run

STRENGTHS = (0.3, 0.7)
N = 8
EVIL = "<script>alert(1)</script> & <b>bold</b>"


ADAPTER = "blend_adapter:make"  # tests/blend_adapter.py

TASK_SUITE = f"""\
name: tasks-tiny
models: [{{name: blend, adapter: "{ADAPTER}"}}]
samplers: [ddim, euler]
steps: [2]
guidance: [1.0]
task: [img2img, inpaint]
strength: [{STRENGTHS[0]}, {STRENGTHS[1]}]
samples: {N}
batch_size: {N}
seed: 0
conditions:
  images: {{dataset: mnist-heldout, samples: {N}}}
  prompts: ["{EVIL}", "a plain digit"]
  masks: {{kind: centre, size: 0.5}}
metrics:
  - {{name: psnr, extractor: pixels, options: {{region: whole}}}}
  - throughput
grid_samples: {N}
timing: {{repeats: 3, warmup: 0}}
"""
PLAIN_SUITE = f"""\
name: plain-tiny
models: [{{name: blend, adapter: "{ADAPTER}"}}]
samplers: [ddim]
steps: [2]
guidance: [1.0]
samples: {N}
batch_size: {N}
seed: 0
conditions: {{classes: 10}}
reference: {{dataset: mnist-heldout, samples: {N}}}
metrics:
  - {{name: psnr, extractor: pixels}}
  - throughput
grid_samples: {N}
timing: {{repeats: 3, warmup: 0}}
"""


def _run(root, name: str, text: str):
    suite = root / f"{name}.yaml"
    suite.write_text(text)
    out = root / name
    assert main(["run", str(suite), "--out", str(out), "--device", "cpu", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def task_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    out = _run(root, "task-run", TASK_SUITE)
    html, figures = render_report([out])  # what `evalkit report` writes (the CLI: the run without tasks below)
    figures = {f.name: f.plot.data for f in figures}
    return {"run": read_run(out), "html": html, "study": load_study([out]), "figures": figures}


# -- reading the task view back ------------------------------------------------------------------------------------
class TaskTables(HTMLParser):
    """The task view's tables: caption text, header texts, and per row (row header text, [(td class, img attrs)])."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._where: str | None = None
        self._td: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "task" in (a.get("class") or "").split():
            self.tables.append({"caption": "", "head": [], "rows": []})
        elif not self.tables or self._where == "done":
            return
        elif tag in ("caption", "thead", "tbody"):
            self._where = tag
        elif tag == "tr" and self._where == "tbody":
            self.tables[-1]["rows"].append({"th": "", "cells": []})
        elif tag == "th" and self._where == "thead":
            self.tables[-1]["head"].append("")
        elif tag == "td":
            self._td = a.get("class")
        elif tag == "img" and self._td:
            self.tables[-1]["rows"][-1]["cells"].append((self._td, a))

    def handle_endtag(self, tag):
        if tag == "table" and self.tables:
            self._where = "done"
        elif tag == "td":
            self._td = None

    def handle_data(self, data):
        if not self.tables or self._where == "done":
            return
        t = self.tables[-1]
        if self._where == "caption":
            t["caption"] += data
        elif self._where == "thead" and t["head"]:
            t["head"][-1] += data
        elif self._where == "tbody" and t["rows"] and self._td is None:
            t["rows"][-1]["th"] += data


def _task_tables(html: str) -> list[dict]:
    section = html.split('<section id="tasks">')[1].split("</section>")[0]
    out = []
    for chunk in section.split('<table class="grid task">')[1:]:
        p = TaskTables()
        p.feed('<table class="grid task">' + chunk.split("</table>")[0] + "</table>")
        out += p.tables
    return out


def _decode(src: str) -> np.ndarray:
    """A data URI's image as (3, H, W) uint8 (a grey PNG repeated to 3 channels)."""
    mime, _, data = src.partition(";base64,")
    assert mime == "data:image/png"  # 32 px digits: lossless
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
    return np.repeat(img[None], 3, axis=0) if img.ndim == 2 else img.transpose(2, 0, 1)


def _index(row: dict) -> int:
    """The sample index a row header names (``#3`` and its note)."""
    return int(re.match(r"\s*#(\d+)", row["th"]).group(1))


def _cell(run, sampler: str, task: str, strength: float) -> dict:
    (rec,) = [
        c
        for c in run.cells.values()
        if c["sampler"] == sampler and c["task"] == task and math.isclose(c["strength"], strength)
    ]
    return rec


# -- the task view -------------------------------------------------------------------------------------------------
def test_task_view_shows_sources_masks_and_each_cells_outputs(task_run):
    run, html = task_run["run"], task_run["html"]
    inputs = run.task_inputs()
    tables = _task_tables(html)
    assert '<a href="#tasks">Tasks</a>' in html
    titles = [t["caption"].split(" — ")[0] for t in tables]
    assert titles == [f"blend · {t} st{s:g} · N={N} · seed 0" for t in ("img2img", "inpaint") for s in STRENGTHS]
    checked = 0
    for t, title in zip(tables, titles):
        task, strength = title.split(" · ")[1].split(" st")
        side = ["mask (white: generated)"] if task == "inpaint" else []  # img2img: no mask column
        assert [h.strip() for h in t["head"]] == ["sample", "source", *side, "ddim", "euler"]
        assert [_index(r) for r in t["rows"]] == list(range(6))  # the first 6 indices every cell kept
        cells = {s: _cell(run, s, task, float(strength)) for s in ("ddim", "euler")}
        kept = {s: run.samples(c["cell_id"]) for s, c in cells.items()}
        for r in t["rows"]:
            i = _index(r)
            by_class = r["cells"]
            assert [c for c, _ in by_class] == ["source", *(["side"] if side else []), "output", "output"]
            src = _decode(by_class[0][1]["src"])
            np.testing.assert_array_equal(src, inputs["images"][i % len(inputs["images"])])
            if side:
                mask = inputs["masks"][i % len(inputs["masks"])][0]
                np.testing.assert_array_equal(_decode(by_class[1][1]["src"]), np.repeat((mask > 0)[None] * 255, 3, 0))
            for sampler, (_, img) in zip(("ddim", "euler"), by_class[-2:]):
                assert img["title"] == f"{cells[sampler]['cell_id']}: sample {i}"
                pos = list(kept[sampler]["indices"]).index(i)
                np.testing.assert_array_equal(_decode(img["src"]), kept[sampler]["images"][pos])
                checked += 1
    print(f"[agreement] task view: {checked} output images and {6 * len(tables)} sources decoded equal to the store")


def test_task_view_text_is_escaped(task_run):
    html = task_run["html"]
    section = html.split('<section id="tasks">')[1].split("</section>")[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in section  # sample 0's prompt
    assert "<script" not in section and "<b>bold" not in html
    assert len(re.findall(r"<script", html)) == 1  # only the report's own sort script


def test_a_run_without_tasks_has_no_task_view_nor_strength_plot(tmp_path):
    out = _run(tmp_path, "plain-run", PLAIN_SUITE)
    assert main(["report", str(out), "-o", str(tmp_path / "plain.html")]) == 0
    html = (tmp_path / "plain.html").read_text(encoding="utf-8")
    assert read_run(out).task_inputs() is None
    assert 'id="tasks"' not in html and 'href="#tasks"' not in html
    figures = re.findall(r'<figure id="plot-([a-z_]+)">', html)
    assert "pareto_nfe" in figures and "strength" not in figures
    table = html.split('id="table-psnr"')[1].split("</table>")[0]
    assert re.findall(r"<th[^>]*>([^<]*)</th>", table)[:2] == ["sampler", "n"]  # no task columns without tasks


# -- the task axis in plots, tables and the summary ----------------------------------------------------------------
def _psnr_loop(gen: np.ndarray, src: np.ndarray) -> float:
    """Mean over samples of 10·log10(1 / MSE) on [0, 1] images, pixel by pixel in plain Python."""
    values = []
    for g, s in zip(gen.astype(float) / 255, src.astype(float) / 255):
        se = sum((a - b) ** 2 for a, b in zip(g.ravel().tolist(), s.ravel().tolist()))
        values.append(10 * math.log10(g.size / se))
    return sum(values) / len(values)


def test_strength_plot_one_line_per_sampler_through_both_strengths(task_run):
    run, data = task_run["run"], task_run["figures"]["strength"]
    inputs = run.task_inputs()
    assert data["xlabel"] == "strength" and data["ylabel"].startswith("PSNR")
    assert list(data["panels"]) == ["img2img", "inpaint"]
    worst = 0.0
    for task, panel in data["panels"].items():
        assert list(panel["lines"]) == ["ddim", "euler"]
        for sampler, line in panel["lines"].items():
            assert line["x"] == list(STRENGTHS) and line["err"] is not None
            want = []
            for s in STRENGTHS:
                kept = run.samples(_cell(run, sampler, task, s)["cell_id"])
                src = inputs["images"][kept["indices"] % len(inputs["images"])]
                want.append(_psnr_loop(kept["images"], src))
            worst = max(worst, *(abs(a - b) for a, b in zip(line["y"], want)))
            assert line["y"] == pytest.approx(want, rel=1e-6)  # torchmetrics' PSNR in float32
            assert line["y"][0] > line["y"][1]  # more strength, further from the source
    print(f"[agreement] strength plot PSNR vs a float64 loop over the stored images: max |diff| {worst:.2e} dB")


def test_plots_keep_task_points_apart(task_run):
    figs = task_run["figures"]
    points = [f"{t} st{s:g}" for t in ("img2img", "inpaint") for s in STRENGTHS]
    pareto = figs["pareto_nfe"]["panels"]
    assert list(pareto) == [f"guidance 1 · {p}" for p in points]  # a panel (and a frontier) per task point
    for p in points:
        lines = pareto[f"guidance 1 · {p}"]["lines"]
        assert list(lines) == [f"ddim · {p}", f"euler · {p}"] and all(len(v["x"]) == 1 for v in lines.values())
    steps = figs["steps"]["panels"]["PSNR"]["lines"]
    assert sorted(steps) == sorted(f"{s} · {p}" for s in ("ddim", "euler") for p in points)
    assert len(figs["throughput"]["panels"]["guidance 1"]["lines"]) == 2 * len(points)
    cells = task_run["study"].cells
    assert len(cells) == 8 and cells.groupby(["sampler", "task", "strength"]).ngroups == 8


def test_one_strength_draws_no_strength_plot(task_run):
    cells = task_run["study"].cells
    assert strength_plot(cells, "psnr") is not None
    assert strength_plot(cells[cells["strength"] == STRENGTHS[0]], "psnr") is None
    assert strength_plot(cells.drop(columns=["task", "strength", "controlnet_scale"]), "psnr") is None


def test_tables_and_summary_show_the_task_point(task_run):
    html = task_run["html"]
    table = html.split('id="table-psnr"')[1].split("</table>")[0]
    head = re.findall(r"<th[^>]*>([^<]*)</th>", table)
    assert head[:4] == ["task", "strength", "sampler", "n"]
    rows = re.findall(r"<tr><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>", table)
    want = [(t, f"{s:g}", sampler) for t in ("img2img", "inpaint") for s in STRENGTHS for sampler in ("ddim", "euler")]
    assert rows == want  # one row per task point and sampler, each task point's samplers together
    tidy = html.split('id="table-tidy"')[1].split("</thead>")[0]
    assert ">task<" in tidy and ">strength<" in tidy and "controlnet_scale" not in tidy  # an axis no task has
    facets = re.findall(r"<h3>([^<]*) · Guidance 1</h3>", html)
    assert facets == [f"{t} st{s:g}" for t in ("img2img", "inpaint") for s in STRENGTHS]
    grids = re.findall(r"<caption><strong>(blend · guidance 1 · [^<]*): samplers × steps", html)
    assert grids == [f"blend · guidance 1 · {t} st{s:g}" for t in ("img2img", "inpaint") for s in STRENGTHS]


def test_report_deltas_match_each_task_cell_with_its_own_baseline(task_run):
    from evalkit.report.baseline import deltas, load_baseline

    run = task_run["run"]
    base = load_baseline(run.path)  # the run as its own baseline: every cell must meet itself, not a sibling
    d = deltas(run.results, base[0])
    psnr = d[d["metric"] == "psnr"]
    assert len(psnr) == len(run.results[run.results.metric == "psnr"]) == 8  # 2 samplers × 2 tasks × 2 strengths
    assert sorted(psnr["task_point"].unique()) == ["img2img st0.3", "img2img st0.7", "inpaint st0.3", "inpaint st0.7"]
    assert (psnr["delta"] == 0).all() and (psnr["baseline"] == psnr["now"]).all()
