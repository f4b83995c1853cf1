"""Grids as studies need them: per-sampler steps, zipped lists, only/exclude filters; timing validated; and
every suite that uses none of them keeps its cells and its config, cell and protocol hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evalkit.cli import main
from evalkit.gate.integrity import expected_cell_hashes
from evalkit.suite import SuiteError, TimingSpec, load_suite, parse_suite
from evalkit.suite.identity import protocol_hash

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load("""
name: g
models: [{name: m, adapter: noise}, {name: m2, adapter: noise}]
samplers: [ddim, {name: heun, steps: [4, 8]}]
steps: [2, 4, 16]
guidance: [1, 3, 5]
samples: 10
extractor: mnist-net
reference: {dataset: mnist-heldout}
metrics: [fd, throughput]
""")


def _ids(suite) -> list[str]:
    return [c.cell_id for c in suite.cells()]


def _error(**changes) -> SuiteError:
    with pytest.raises(SuiteError) as exc:
        parse_suite({**BASE, **changes}, file="g.yaml")
    assert str(exc.value).startswith("g.yaml: ")
    return exc.value


# -- existing suites: same cells, same hashes ------------------------------------------------------------------
def test_the_ci_suite_keeps_the_hashes_of_its_baseline():
    """baselines/ci.json was made before grids grew: its config and protocol hashes, and the cells' hashes
    recorded before the change, must still be what suites/ci.yaml gives."""
    base = json.loads((ROOT / "baselines" / "ci.json").read_text())
    suite = load_suite(ROOT / "suites" / "ci.yaml")
    assert suite.config_hash() == base["config_hash"] == "7217ea80eaca579d"
    assert protocol_hash(suite.to_config()) == base["protocol_hash"] == "48183beb24474ec9"
    assert {c.cell_id: suite.cell_hash(c) for c in suite.cells()} == {
        "mnist__ddim__s8__g3": "ec6531ad25000a40",
        "mnist__dpmpp_2m__s8__g3": "540c5d5e46cffb69",
    }
    assert suite.to_config() == base["config"]  # the recorded config, key for key: no new field shows up


def test_other_shipped_suites_keep_their_hashes_and_cell_order():
    """Recorded before the change (config hash, protocol hash, first and last cell with its hash)."""
    want = {
        "smoke": ("9dd8c4acfc224576", "1a1455e2208738bc", ("mnist__ddim__s2__g1", "597818503f875b98")),
        "quality": ("5918c1a2904d9370", "cd166b4a3882e865", ("mnist__ddim__s50__g3", "caab41b5a9a7a73c")),
        "sdxl_coco": ("f029aef561886765", "60c2cf527517f85d", ("sdxl__euler__s20__g5", "77b89581d0e6a3f5")),
    }
    for name, (config, protocol, (first, first_hash)) in want.items():
        suite = load_suite(name)
        cells = suite.cells()
        assert (suite.config_hash(), protocol_hash(suite.to_config())) == (config, protocol), name
        assert cells[0].cell_id == first and suite.cell_hash(cells[0]) == first_hash, name
        assert len(cells) == len(suite.models) * len(suite.samplers) * len(suite.steps) * len(suite.guidance)
        assert not {"zip", "only", "exclude", "timing"} & set(suite.to_config())
        assert all("steps" not in s for s in suite.to_config()["samplers"])


# -- per-sampler steps --------------------------------------------------------------------------------------
def test_a_sampler_with_its_own_steps_replaces_the_suites_steps():
    suite = parse_suite(BASE)
    cells = suite.cells()
    assert len(cells) == 2 * (3 + 2) * 3
    assert {c.steps for c in cells if c.sampler.label == "heun"} == {4, 8}
    assert {c.steps for c in cells if c.sampler.label == "ddim"} == {2, 4, 16}
    assert _ids(suite)[:4] == ["m__ddim__s2__g1", "m__ddim__s2__g3", "m__ddim__s2__g5", "m__ddim__s4__g1"]
    assert suite.to_config()["samplers"][1]["steps"] == [4, 8]


def test_a_samplers_step_list_is_in_the_config_but_not_in_its_cells_hashes():
    """Adding a step count to one sampler changes the grid (config hash) but not the finished cells'
    hashes: they are reused, not recomputed."""
    a = parse_suite(BASE)
    b = parse_suite({**BASE, "samplers": ["ddim", {"name": "heun", "steps": [4, 8, 12]}]})
    assert a.config_hash() != b.config_hash()
    ha = {c.cell_id: a.cell_hash(c) for c in a.cells()}
    hb = {c.cell_id: b.cell_hash(c) for c in b.cells()}
    assert set(hb) - set(ha) == {f"{m}__heun__s12__g{g}" for m in ("m", "m2") for g in (1, 3, 5)}
    assert all(hb[c] == h for c, h in ha.items())


def test_steps_may_be_left_out_only_when_every_sampler_has_its_own():
    doc = {k: v for k, v in BASE.items() if k != "steps"}
    with pytest.raises(SuiteError) as exc:
        parse_suite(doc, file="g.yaml")
    assert exc.value.field == "steps" and "required" in exc.value.message
    suite = parse_suite({**doc, "samplers": [{"name": "ddim", "steps": [2]}, {"name": "heun", "steps": [4, 8]}]})
    assert _ids(suite) == [
        f"{m}__{s}__s{n}__g{g}"
        for m in ("m", "m2")
        for s, ns in (("ddim", [2]), ("heun", [4, 8]))
        for n in ns
        for g in (1, 3, 5)
    ]
    assert _error(samplers=[{"name": "heun", "steps": [0]}]).field == "samplers[0].steps[0]"
    assert _error(samplers=[{"name": "heun", "steps": []}]).field == "samplers[0].steps"


# -- zip -----------------------------------------------------------------------------------------------------
def test_zipped_lists_are_paired_not_crossed():
    suite = parse_suite({**BASE, "models": BASE["models"][:1], "samplers": ["ddim"], "zip": ["steps", "guidance"]})
    assert _ids(suite) == ["m__ddim__s2__g1", "m__ddim__s4__g3", "m__ddim__s16__g5"]
    same = parse_suite({**BASE, "models": BASE["models"][:1], "samplers": ["ddim"], "zip": ["guidance", "steps"]})
    assert same.zip == suite.zip == ["steps", "guidance"] and same.config_hash() == suite.config_hash()
    pairs = parse_suite({**BASE, "samplers": ["ddim", "euler"], "zip": ["sampler", "model"]})
    assert pairs.zip == ["models", "samplers"]
    assert {(c.model.name, c.sampler.label) for c in pairs.cells()} == {("m", "ddim"), ("m2", "euler")}


def test_a_samplers_own_steps_zip_with_guidance():
    suite = parse_suite(
        {**BASE, "samplers": ["ddim", {"name": "heun", "steps": [4, 8, 12]}], "zip": ["steps", "guidance"]}
    )
    assert [c.cell_id for c in suite.cells() if c.model.name == "m"] == [
        "m__ddim__s2__g1", "m__ddim__s4__g3", "m__ddim__s16__g5",
        "m__heun__s4__g1", "m__heun__s8__g3", "m__heun__s12__g5",
    ]  # fmt: skip


def test_zipped_lists_of_unequal_length_are_an_error():
    e = _error(zip=["steps", "guidance"], guidance=[1, 2], samplers=["ddim"])
    assert e.field == "zip" and "equal lengths" in e.message and "steps has 3, guidance has 2" in e.message
    e = _error(zip=["steps", "guidance"])  # heun's own steps: 2 values against 3 guidance values
    assert e.field == "samplers[1].steps" and "expected 3 values; got 2" in e.message
    assert _error(zip=["samplers", "steps"]).field == "zip"  # heun's own steps cannot pair with samplers
    assert _error(zip=["steps"]).field == "zip"
    e = _error(zip=["steps", "guidanse"])
    assert e.field == "zip[1]" and "did you mean 'guidance'" in e.message


# -- only / exclude ------------------------------------------------------------------------------------------
def test_only_keeps_and_exclude_drops_the_matching_cells():
    suite = parse_suite({**BASE, "only": [{"sampler": "heun"}], "exclude": [{"steps": 8, "guidance": [3, 5]}]})
    assert _ids(suite) == [
        "m__heun__s4__g1", "m__heun__s4__g3", "m__heun__s4__g5", "m__heun__s8__g1",
        "m2__heun__s4__g1", "m2__heun__s4__g3", "m2__heun__s4__g5", "m2__heun__s8__g1",
    ]  # fmt: skip
    full = parse_suite(BASE)
    assert suite.config_hash() != full.config_hash()
    assert {c.cell_id: suite.cell_hash(c) for c in suite.cells()} == {
        c.cell_id: full.cell_hash(c) for c in full.cells() if c.cell_id in set(_ids(suite))
    }  # a filter changes which cells run, not what a cell is


@pytest.mark.parametrize(
    "changes,field,expected",
    [
        ({"exclude": [{"model": "m"}, {"sampler": "heun", "steps": 16}]}, "exclude[1]", "matches no cell of the grid"),
        ({"only": [{"steps": 3}]}, "only[0]", "matches no cell of the grid"),
        ({"only": [{"model": "m"}], "exclude": [{"model": "m2"}]}, "exclude[0]", "matches no cell left by 'only'"),
        ({"exclude": [{"model": ["m", "m2"]}]}, "exclude", "the grid is empty"),
        ({"exclude": [{"samplr": "heun"}]}, "exclude[0].samplr", "did you mean 'sampler'?"),
        ({"exclude": [{"sampler": "hune"}]}, "exclude[0].sampler", "did you mean 'heun'?"),
        ({"exclude": [{"steps": "four"}]}, "exclude[0].steps", "expected an integer ≥ 1"),
        ({"exclude": [{}]}, "exclude[0]", "expected a mapping with one or more of"),
        ({"only": []}, "only", "expected a non-empty list"),
        ({"exclude": {"model": "m"}}, "exclude", "expected a non-empty list"),
    ],
)
def test_a_filter_that_matches_nothing_or_does_not_validate_is_named(changes, field, expected):
    e = _error(**changes)
    assert e.field == field and expected in e.message, e


def test_a_bad_filter_exits_2_before_anything_runs(tmp_path, capsys):
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({**BASE, "exclude": [{"sampler": "heun", "steps": 16}]}))
    assert main(["run", str(p), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{p}: exclude[0]: {{sampler: heun, steps: 16}} matches no cell" in err and "heun" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_dry_run_lists_the_filtered_cells(tmp_path, capsys):
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({**BASE, "models": BASE["models"][:1], "exclude": [{"sampler": "ddim"}]}))
    assert main(["run", str(p), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 cells (of 15 in the grid: 9 dropped by only/exclude)" in out
    assert "m__heun__s8__g5" in out and "m__ddim__" not in out
    assert "total batched model calls (estimate): " in out


def test_the_gate_rebuilds_the_same_grid_from_a_recorded_config():
    """The gate recomputes cell hashes from run.json's config: every new field must survive the round trip."""
    suite = parse_suite(
        {**BASE, "zip": ["steps", "guidance"], "samplers": ["ddim", {"name": "heun", "steps": [4, 8, 12]}]}
        | {"exclude": [{"model": "m2", "steps": 16}], "timing": {"repeats": 5}}
    )
    recorded = json.loads(json.dumps(suite.to_config()))
    assert expected_cell_hashes(recorded) == {c.cell_id: suite.cell_hash(c) for c in suite.cells()}
    assert "m2__ddim__s16__g5" not in expected_cell_hashes(recorded)


# -- timing ----------------------------------------------------------------------------------------------------
def test_timing_is_validated_and_outside_every_hash():
    plain = parse_suite(BASE)
    timed = parse_suite({**BASE, "timing": {"repeats": 7, "warmup": 0, "threads": 2}})
    assert timed.timing == TimingSpec(repeats=7, warmup=0, threads=2) and plain.timing == TimingSpec()
    assert timed.config_hash() == plain.config_hash()
    assert protocol_hash(timed.to_config()) == protocol_hash(plain.to_config())
    assert [timed.cell_hash(c) for c in timed.cells()] == [plain.cell_hash(c) for c in plain.cells()]
    assert "timing" not in plain.to_config() and timed.to_config()["timing"]["repeats"] == 7
    assert parse_suite({**BASE, "timing": {"threads": None}}).timing.threads is None


@pytest.mark.parametrize(
    "timing,field,expected",
    [
        ({"repeats": 0}, "timing.repeats", "expected an integer ≥ 1"),
        ({"warmup": -1}, "timing.warmup", "expected an integer ≥ 0"),
        ({"threads": 0}, "timing.threads", "expected an integer ≥ 1"),
        ({"threads": "all"}, "timing.threads", "expected an integer ≥ 1"),
        ({"repeat": 3}, "timing.repeat", "unknown key; expected one of: repeats, warmup, threads"),
        ([3], "timing", "expected a mapping"),
    ],
)
def test_bad_timing_is_named(timing, field, expected):
    e = _error(timing=timing)
    assert e.field == field and expected in e.message, e


def test_unknown_top_level_keys_suggest_the_close_one():
    e = _error(exlude=[{"model": "m"}])
    assert (
        e.field == "exlude" and "unknown key; expected one of" in e.message and "did you mean 'exclude'?" in e.message
    )
