"""Suite loading: grid expansion, and bad files that exit 2 naming the field and what was expected."""

from __future__ import annotations

import textwrap

import pytest

from evalkit.cli import main
from evalkit.suite import SuiteError, load_suite, parse_suite

GOOD = textwrap.dedent("""\
    name: t
    models: [{name: m, adapter: noise}]
    samplers: [ddim, {name: dpmpp_2m, label: dpm-karras, options: {use_karras_sigmas: true}}]
    steps: [2, 4, 8]
    guidance: [1, 3.5]
    samples: 10
    conditions: {classes: 3}
    reference: {dataset: mnist-heldout}
    extractor: mnist-net
    metrics: [fd, throughput]
""")


def _write(tmp_path, text):
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return p


def test_grid_expands_to_every_combination(tmp_path):
    suite = load_suite(_write(tmp_path, GOOD))
    cells = suite.cells()
    assert len(cells) == 1 * 2 * 3 * 2
    assert len({c.cell_id for c in cells}) == len(cells)
    assert {c.sampler.label for c in cells} == {"ddim", "dpm-karras"}
    assert suite.samplers[1].options == {"use_karras_sigmas": True}
    assert suite.conditions == {"classes": [0, 1, 2]}
    assert all(c.n == 10 and c.seed == 0 for c in cells)


def test_config_hash_ignores_batch_size_but_not_seed():
    import yaml

    raw = yaml.safe_load(GOOD)
    base = parse_suite(raw).config_hash()
    assert parse_suite({**raw, "batch_size": 7}).config_hash() == base
    assert parse_suite({**raw, "seed": 1}).config_hash() != base
    assert parse_suite({**raw, "steps": [2, 4]}).config_hash() != base


BAD = {
    "unknown key": (GOOD + "sampels: 3\n", "sampels", "unknown key; expected one of"),
    "wrong type": (GOOD.replace("steps: [2, 4, 8]", "steps: [2, four]"), "steps[1]", "expected an integer"),
    "unknown sampler": (GOOD.replace("[ddim,", "[dddim,"), "samplers[0]", "expected one of: cm, ddim, ddpm"),
    "unknown metric": (GOOD.replace("[fd, throughput]", "[fid2, throughput]"), "metrics[0].name", "expected one of"),
    "unknown model adapter": (GOOD.replace("adapter: noise", "adapter: nosie"), "models[0].adapter", "expected one of"),
    "missing required": (GOOD.replace("samples: 10\n", ""), "samples", "required"),
    "negative number": (GOOD.replace("samples: 10", "samples: -5"), "samples", "expected an integer ≥ 1"),
    "invalid yaml": (GOOD + "steps: [1\n", "yaml", "not valid YAML at line"),
    "missing reference": (
        GOOD.replace("reference: {dataset: mnist-heldout}\n", ""),
        "reference",
        "compares with a reference set",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_suite_exits_2_naming_field_and_expected(kind, tmp_path, capsys):
    text, field, expected = BAD[kind]
    path = _write(tmp_path, text)
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    assert exc.value.field == field
    assert expected in exc.value.message
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and field in err and expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unknown_embedded_suite_lists_the_known_ones(capsys):
    assert main(["run", "no-such-suite"]) == 2
    assert "embedded suites: " in capsys.readouterr().err
