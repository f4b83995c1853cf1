"""``guidance_method`` as a grid axis: crossing, ids, filters, zip, validation, and unchanged hashes at its default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evalkit.gate.integrity import expected_cell_hashes
from evalkit.suite import SuiteError, load_suite, parse_suite
from evalkit.suite.identity import protocol_hash

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load("""
name: g
models: [{name: m, adapter: noise}]
samplers: [ddim]
steps: [8]
guidance: [1, 3]
samples: 10
extractor: mnist-net
reference: {dataset: mnist-heldout}
metrics: [fd, throughput]
""")
METHODS = ["cfg", {"name": "cfg_rescale", "phi": 0.7}, {"name": "interval", "sigma_lo": 0.28, "sigma_hi": 5.42}, "apg"]


def _error(**changes) -> SuiteError:
    with pytest.raises(SuiteError) as exc:
        parse_suite({**BASE, **changes}, file="g.yaml")
    return exc.value


def test_default_cfg_keeps_ci_ids_and_hashes():
    base = json.loads((ROOT / "baselines" / "ci.json").read_text())
    raw = yaml.safe_load((ROOT / "suites" / "ci.yaml").read_text())
    for suite in (load_suite(ROOT / "suites" / "ci.yaml"), parse_suite({**raw, "guidance_method": ["cfg"]})):
        assert suite.config_hash() == base["config_hash"]
        assert protocol_hash(suite.to_config()) == base["protocol_hash"]
        assert suite.to_config() == base["config"]  # no guidance_method key at its default
        assert {c.cell_id: suite.cell_hash(c) for c in suite.cells()} == expected_cell_hashes(base["config"])
        assert all("guidance_method" not in c.describe() for c in suite.cells())


def test_methods_cross_with_the_grid_and_suffix_ids():
    suite = parse_suite({**BASE, "guidance_method": METHODS})
    ids = [c.cell_id for c in suite.cells()]
    assert ids[:4] == [
        "m__ddim__s8__g1",
        "m__ddim__s8__g1__cfg_rescale",
        "m__ddim__s8__g1__interval",
        "m__ddim__s8__g1__apg",
    ]
    assert len(ids) == 8 and len(set(ids)) == 8
    apg = suite.cells()[3].guidance_method
    assert (apg.name, apg.options) == ("apg", {"eta": 0.0, "norm_threshold": 0.0, "momentum": 0.0})
    assert suite.cells()[3].describe()["guidance_method"] == "apg"
    hashes = {suite.cell_hash(c) for c in suite.cells()}
    assert len(hashes) == 8  # the method is part of what a cell's numbers depend on
    cfg = suite.to_config()
    assert [g["label"] for g in cfg["guidance_method"]] == ["cfg", "cfg_rescale", "interval", "apg"]
    assert expected_cell_hashes(cfg) == {c.cell_id: suite.cell_hash(c) for c in suite.cells()}  # rebuilt from run.json


def test_options_away_from_defaults_name_the_cell():
    suite = parse_suite(
        {**BASE, "guidance": [3], "guidance_method": [{"name": "cfg_rescale", "phi": 0.5}, "cfg_rescale"]}
    )
    assert [c.cell_id for c in suite.cells()] == ["m__ddim__s8__g3__cfg_rescale-phi0.5", "m__ddim__s8__g3__cfg_rescale"]
    labelled = parse_suite({**BASE, "guidance_method": [{"name": "apg", "eta": 0.2, "label": "apg_soft"}]})
    assert labelled.cells()[0].cell_id.endswith("__apg_soft")


def test_filters_and_zip_take_guidance_method():
    suite = parse_suite({**BASE, "guidance_method": METHODS, "only": [{"guidance_method": ["apg", "cfg"]}]})
    assert [c.cell_id for c in suite.cells()] == [
        "m__ddim__s8__g1",
        "m__ddim__s8__g1__apg",
        "m__ddim__s8__g3",
        "m__ddim__s8__g3__apg",
    ]
    dropped = parse_suite(
        {**BASE, "guidance_method": METHODS, "exclude": [{"guidance": 1, "guidance_method": "interval"}]}
    )
    assert len(dropped.cells()) == 7
    zipped = parse_suite({**BASE, "guidance_method": ["cfg", "none"], "zip": ["guidance", "guidance_method"]})
    assert [c.cell_id for c in zipped.cells()] == ["m__ddim__s8__g1", "m__ddim__s8__g3__none"]
    e = _error(guidance_method=["cfg"], only=[{"guidance_method": "apgg"}])
    assert e.field == "only[0].guidance_method" and "unknown guidance method 'apgg'" in e.message


@pytest.mark.parametrize(
    ("value", "field", "needle"),
    [
        (["cfg_rescal"], "guidance_method[0].name", "did you mean 'cfg_rescale'?"),
        ([{"name": "cfg_rescale", "phii": 0.5}], "guidance_method[0].phii", "did you mean 'phi'?"),
        ([{"name": "interval", "sigma_lo": 6, "sigma_hi": 5}], "guidance_method[0].sigma_lo", "≤ sigma_hi"),
        ([{"name": "apg", "eta": "x"}], "guidance_method[0].eta", "finite number"),
        ([{"name": "cfg_rescale", "phi": 2}], "guidance_method[0].phi", "[0, 1]"),
        ([{"name": "cfg", "w": 1}], "guidance_method[0].w", "takes no options"),
        (["apg", "apg"], "guidance_method[1]", "used twice"),
        ([], "guidance_method", "non-empty list"),
        ([{"phi": 1}], "guidance_method[0]", "'name'"),
    ],
)
def test_validation_names_the_field(value, field, needle):
    e = _error(guidance_method=value)
    assert e.field == field and needle in e.message
    assert str(e).startswith(f"g.yaml: {field}: ")


def test_unknown_top_key_suggests_guidance_method():
    e = _error(guidance_methods=["cfg"])
    assert "did you mean 'guidance_method'?" in e.message
