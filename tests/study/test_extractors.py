"""One metric on two extractors (fd on inception and on clip) is two measurements: each keeps its own column,
comparisons, ranking and floor; none is collapsed into the other, and a bare "fd" claims nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from evalkit.report.htmltables import pivot_table
from evalkit.report.tables import quality_metrics
from evalkit.store import RunData, tidy_frame
from evalkit.study.cells import cell_frame
from evalkit.study.floors import floor_for
from evalkit.study.rank import PairTable, rank, separate_ci_pairs
from evalkit.study.summary import summary_text
from evalkit.study.words import label

# (extractor, sampler) → FD value; the two feature spaces rank the samplers oppositely, CIs ±1 (no overlap).
FD = {("inception", "ddim"): 10.0, ("inception", "heun"): 20.0, ("clip", "ddim"): 30.0, ("clip", "heun"): 5.0}


def results() -> pd.DataFrame:
    rows = []
    for (ex, sampler), v in FD.items():
        cell = {"run_id": "r", "cell_id": f"m__{sampler}__s4__g1", "model": "m", "sampler": sampler, "steps": 4}
        cell |= {"guidance": 1.0, "n": 100, "seed": 0, "nfe": 4.0, "s_per_image": 0.04, "model_calls": 4.0}
        rows.append(cell | {"metric": "fd", "extractor": ex, "value": v, "ci_low": v - 1, "ci_high": v + 1})
    return tidy_frame(rows)


def best_by(ex: str) -> str:
    """The sampler with the lower FD on extractor ``ex``, straight from FD."""
    return min(("ddim", "heun"), key=lambda s: FD[(ex, s)])


def test_each_extractor_keeps_its_column_pairs_and_ranking():
    cells = cell_frame(results())
    assert "fd" not in cells and {"fd@inception", "fd@clip"} <= set(cells.columns)
    for ex in ("inception", "clip"):
        got = cells.set_index("sampler")[f"fd@{ex}"]
        assert got.to_dict() == {s: FD[(ex, s)] for s in ("ddim", "heun")}
        assert cells.set_index("sampler")[f"fd@{ex}_lo"].to_dict() == {s: FD[(ex, s)] - 1 for s in ("ddim", "heun")}
    pairs = pd.concat([separate_ci_pairs(cells, "fd@inception"), separate_ci_pairs(cells, "fd@clip")])
    assert sorted(pairs.extractor) == ["clip", "inception"] and set(pairs.metric) == {"fd"}
    table = PairTable(pairs)
    assert len(table) == 2  # one comparison per extractor, neither dropped
    assert best_by("inception") != best_by("clip")  # the data disagree between the feature spaces
    for ex in ("inception", "clip"):
        r = rank(cells, f"fd@{ex}", table)
        assert r.best["sampler"] == best_by(ex) and r.confident
    assert table.get("fd", ("r", "m__ddim__s4__g1"), ("r", "m__heun__s4__g1")) is None  # ambiguous: no claim
    assert label("fd@clip") == "FD (clip)" and label("fd") == "FD"


def test_floor_for_matches_the_extractor_and_the_run():
    floors = pd.DataFrame(
        [
            {"run_id": "r", "metric": "fd", "extractor": ex, "n": 100, "median": m, "low": m - 1, "high": m + 1}
            | {"draws": 3, "available": True}
            for ex, m in (("inception", 2.0), ("clip", 7.0))
        ]
    )
    assert floor_for(floors, "fd@inception", 100, "r")["median"] == 2.0
    assert floor_for(floors, "fd@clip", 100, "r")["median"] == 7.0
    assert floor_for(floors, "fd", 100, "r") is None  # two extractors: which one is not said
    assert floor_for(floors, "fd@clip", 100, "other-run") is None  # never another run's floor
    one = floors[floors.extractor == "clip"]
    assert floor_for(one, "fd", 100, "r")["median"] == 7.0  # one extractor: the bare name is unambiguous
    assert floor_for(one, "fd", 100, "other-run") is None


def test_summary_and_report_show_both_extractors(tmp_path):
    df = results()
    text = summary_text(RunData(tmp_path, {}, df), n_resamples=10)
    lines = text.splitlines()
    for ex in ("inception", "clip"):
        block = lines[lines.index(f"FD ({ex}) (lower is better)") :]
        rows = {line.split()[0]: line for line in block[3:5]}
        assert rows[best_by(ex)].endswith("] *") and not rows[({"ddim", "heun"} - {best_by(ex)}).pop()].endswith("*")
    assert quality_metrics(df) == ["fd@inception", "fd@clip"]
    for ex in ("inception", "clip"):
        table = pivot_table(df, f"fd@{ex}")
        values = {r[0].text: float(r[2].text) for r in table.body}
        assert table.title == f"FD ({ex})" and values == pytest.approx({s: FD[(ex, s)] for s in ("ddim", "heun")})
