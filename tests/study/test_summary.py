"""The end-of-run summary: every metric with its CI and N, ties, the floor, and claims only where a CI backs them."""

from __future__ import annotations

import pandas as pd
from study_helpers import EX, reference, suite, write_floors, write_run

from evalkit.run.commands import summary_table
from evalkit.store import RunData, read_run
from evalkit.study.summary import summary_text
from evalkit.study.words import fmt


def test_summary_shows_cis_ties_floors_and_n(tmp_path, monkeypatch):
    s = suite(samplers=["ddim", "euler", "heun"], steps=[4])
    root = write_run(tmp_path / "run", s, shifts={"ddim": 0.0, "euler": 0.0, "heun": 1.5}, jitter=0.05)
    write_floors(root, s)
    monkeypatch.setattr(RunData, "warnings", property(lambda self: ["timing: the machine was busy"]))
    text = summary_text(read_run(root), n_resamples=50, reference={EX: reference()})
    lines = text.splitlines()
    assert lines[0].startswith("N=100 samples per cell · seed 0 · 95 % CIs")
    assert "note: timing: the machine was busy" in lines
    assert "timing rows bracket the fastest and slowest of their repeats instead, not a CI" in lines[0]
    assert "s/image (lower is better; brackets: fastest and slowest timing repeat, not a CI)" in lines
    for name in ("FD", "KID", "precision", "recall", "density", "coverage", "s/image", "NFE/image"):
        assert any(line.startswith(f"{name} (") for line in lines), name
    fd = lines[lines.index("FD (lower is better)") : lines.index("KID (lower is better)")]
    assert fd[1].startswith("  N=100 · the real-vs-real floor of FD at N=100 is")
    row = {line.split()[0]: line for line in fd[3:6]}
    # ddim and euler share one distribution: a tie, both at the floor; heun is far off and neither tie nor floor
    assert row["ddim"].endswith("] ≈f") and row["euler"].endswith("] ≈f") and row["heun"].endswith("]")
    # the tie is named best first: the cell with the lower FD, read from the stored results
    fd_of = read_run(root).results.query("metric == 'fd' and steps == 4").set_index("sampler")["value"]
    best, other = sorted(["ddim", "euler"], key=lambda k: fd_of[k])
    assert f"At 4 steps, {best} ≈ {other} by FD ({fmt(fd_of[best])} vs {fmt(fd_of[other])})" in text
    assert "has the best" not in text  # nothing is confidently best here


def test_confident_best_is_starred_and_the_command_prints_the_summary(tmp_path):
    s = suite(samplers=["ddim", "heun"], steps=[4], metrics=["fd", "throughput"])
    root = write_run(tmp_path / "run", s, shifts={"ddim": 0.2, "heun": 1.5})
    text = summary_text(read_run(root), n_resamples=50, reference={EX: reference()})
    ddim = next(line for line in text.splitlines() if line.strip().startswith("ddim"))
    assert ddim.endswith("] *")
    assert "At 4 steps, ddim has the best FD" in text and "95 % CI [" in text
    assert summary_table(read_run(root)).startswith("N=100 samples per cell")  # what `evalkit run` prints
    assert summary_text(RunData(tmp_path, {}, pd.DataFrame())) == "(no results)"
