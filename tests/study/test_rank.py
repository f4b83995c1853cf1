"""Rankings and frontiers claim only what a CI backs, and never across N."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest

from evalkit.study.rank import PairTable, pareto_front, rank, separate_ci_pairs
from evalkit.study.words import column_sentences, headline

NAN = math.nan


def cells(rows: list[tuple]) -> pd.DataFrame:
    """(cell_id, sampler, steps, n, nfe, fd, fd_lo, fd_hi[, s, s_lo, s_hi]) → a cell frame."""
    out = []
    for r in rows:
        d = dict(zip(["cell_id", "sampler", "steps", "n", "nfe", "fd", "fd_lo", "fd_hi"], r[:8]))
        s = r[8:] or (0.01 * d["nfe"], NAN, NAN)
        out.append(d | {"s_per_image": s[0], "s_per_image_lo": s[1], "s_per_image_hi": s[2]})
    return pd.DataFrame(out).assign(run_id="r", model="m", guidance=1.0)


def dominated(p: pd.Series, frame: pd.DataFrame, cost: str) -> bool:
    """The rule written out: some cell costs at most p's and its CI lies wholly below p's (lower FD is better)."""
    return any(q.cell_id != p.cell_id and q[cost] <= p[cost] and q.fd_hi < p.fd_lo for _, q in frame.iterrows())


def test_frontier_keeps_ties_and_drops_only_confidently_beaten_cells():
    frame = cells(
        [
            ("a", "ddim", 4, 200, 4, 30.0, 28.0, 32.0),
            ("b", "euler", 8, 200, 8, 29.0, 27.0, 31.0),  # ties with a: more costly, not confidently better
            ("c", "heun", 8, 200, 8, 20.0, 19.0, 21.0),  # confidently better than a and b
            ("d", "ddim", 16, 200, 16, 19.5, 18.0, 21.0),  # ties with c: stays
            ("e", "euler", 16, 200, 16, 25.0, 24.0, 26.0),  # beaten by c (cheaper, confidently better)
        ]
    )
    front = pareto_front(frame, "nfe", "fd")
    assert list(front.cell_id) == ["a", "c", "d"]
    assert set(front.cell_id) == {r.cell_id for _, r in frame.iterrows() if not dominated(r, frame, "nfe")}


def test_measured_cost_must_be_confidently_cheaper_to_dominate():
    base = [("a", "ddim", 4, 200, 4, 30.0, 29.0, 31.0), ("b", "heun", 4, 200, 4, 20.0, 19.0, 21.0)]
    spread = cells([(*base[0], 0.040, 0.030, 0.050), (*base[1], 0.041, 0.035, 0.047)])
    assert list(pareto_front(spread, "s_per_image", "fd").cell_id) == ["a", "b"]  # b is not surely as cheap
    clear = cells([(*base[0], 0.040, 0.039, 0.041), (*base[1], 0.030, 0.029, 0.031)])
    assert list(pareto_front(clear, "s_per_image", "fd").cell_id) == ["b"]  # b confidently cheaper and better
    no_spread = cells([(*base[0], 0.040, NAN, NAN), (*base[1], 0.040, NAN, NAN)])
    assert list(pareto_front(no_spread, "s_per_image", "fd").cell_id) == ["b"]  # plain comparison: as cheap


def test_no_ranking_or_frontier_across_n():
    frame = cells(
        [
            ("a50", "ddim", 4, 50, 4, 10.0, 9.0, 11.0),
            ("b50", "euler", 4, 50, 4, 40.0, 39.0, 41.0),
            ("a200", "ddim", 4, 200, 4, 30.0, 29.0, 31.0),
            ("b200", "euler", 4, 200, 4, 20.0, 19.0, 21.0),
        ]
    )
    with pytest.raises(ValueError, match="several N"):
        pareto_front(frame, "nfe", "fd")
    pairs = separate_ci_pairs(frame, "fd")
    assert len(pairs) == 2 and (pairs.n.tolist() == [50, 200])  # one pair per N, none across
    for n, best in ((50, "a50"), (200, "b200")):
        r = rank(frame[frame.n == n], "fd", PairTable(pairs))
        assert r.best.cell_id == best and r.confident
    with pytest.raises(ValueError, match="several N"):
        rank(frame, "fd", PairTable(pairs))
    text = headline(frame, "fd", PairTable(pairs))
    assert "at N=50: ddim" in text and "at N=200: euler" in text


def test_sentences_say_tie_unless_the_ci_excludes_zero():
    frame = cells([("a", "ddim", 8, 200, 8, 20.77, 10.0, 31.0), ("b", "dpmpp_2m", 8, 200, 8, 22.88, 12.0, 33.0)])
    comparisons = pd.DataFrame(
        [
            {"metric": "fd", "run_a": "r", "cell_a": "b", "run_b": "r", "cell_b": "a", "diff": 2.11}
            | {"ci_low": -2.0, "ci_high": 6.3, "confidence": 0.95, "verdict": "tie", "basis": "paired bootstrap"}
            | {"value_a": 22.88, "value_b": 20.77}
            | {f"{c}_{s}": None for c, s in itertools.product(("model", "sampler", "steps", "guidance"), "ab")}
        ]
    )
    (sentence,) = column_sentences(frame, "fd", PairTable(comparisons))
    assert sentence == "At 8 steps, ddim ≈ dpmpp_2m by FD (20.77 vs 22.88): ΔFD −2.11, 95 % CI [−6.3, 2], a tie."
    comparisons.loc[0, ["ci_low", "ci_high", "verdict"]] = [0.4, 6.3, "worse"]  # b − a > 0: b confidently worse
    (sentence,) = column_sentences(frame, "fd", PairTable(comparisons))
    assert sentence.startswith("At 8 steps, ddim has the best FD: 20.77, ahead of dpmpp_2m (22.88; ΔFD −2.11")
    assert not column_sentences(frame, "fd", PairTable(None))[0].count("best")  # no comparison: no claim


def test_budget_lines_name_ties_at_one_cost_together_and_say_what_a_step_up_buys():
    from evalkit.study.words import budget_lines

    frame = cells(
        [
            ("a", "ddim", 4, 200, 4, 30.0, 28.0, 32.0),
            ("b", "euler", 4, 200, 4, 31.0, 29.0, 33.0),  # ties with a at the same cost: both on the frontier
            ("c", "heun", 8, 200, 8, 20.0, 19.0, 21.0),  # confidently better than a, at a higher cost
        ]
    )
    lines = budget_lines(frame, "fd", "nfe", "NFE per image", PairTable(separate_ci_pairs(frame, "fd")))
    assert lines == [
        "≤ 4 NFE per image: ddim at 4 steps (FD 30) ≈ euler at 4 steps (FD 31) "
        "(ΔFD −1; their separate 95 % CIs overlap: a tie)",
        "≤ 8 NFE per image: heun at 8 steps (FD 20), better than ddim at 4 steps "
        "(ΔFD −10; their separate 95 % CIs do not overlap)",
    ]
