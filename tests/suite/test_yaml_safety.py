"""Suite YAML that cannot hang or mislead (issue 15): a key given twice is an error, not a silent last-one-wins;
aliases are refused before any work, so a few hundred bytes of nested aliases (a "billion laughs" bomb) fail in
milliseconds with exit 2 naming the file and line, instead of expanding to 9⁹ values during validation."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import deadline

from evalkit.cli import main
from evalkit.suite import SuiteError, load_suite, parse_suite

ROOT = Path(__file__).resolve().parents[2]
TAIL = "samplers: [ddim]\nsteps: [2]\nsamples: 4\nmetrics: [throughput]\n"
SUITE = "name: s\nmodels: [{name: m, adapter: noise}]\n" + TAIL


def bomb_lines(levels: int = 9, width: int = 9) -> list[str]:
    """``a0: &a0 [lol × width]``, then each level ``width`` aliases of the one before: width**levels values."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return lines


def options_bomb(levels: int = 9) -> str:
    """The bomb inside a model's options: the first alias is on line 7."""
    body = "".join(f"      {line}\n" for line in bomb_lines(levels))
    return "name: bomb\nmodels:\n  - name: m\n    adapter: noise\n    options:\n" + body + TAIL


def load_error(tmp_path: Path, text: str) -> SuiteError:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with deadline(10), pytest.raises(SuiteError) as e:
        load_suite(p)
    assert e.value.file == str(p)
    return e.value


# -- duplicate keys -------------------------------------------------------------------------------------------


def test_a_top_level_key_given_twice_is_an_error_naming_the_key_and_both_lines(tmp_path):
    e = load_error(tmp_path, SUITE + "steps: [4]\n")
    assert e.field == "yaml"
    assert e.message == (
        "not valid YAML at line 7, column 1: duplicate key 'steps' (first at line 4): each key may appear once "
        "in a mapping"
    )


def test_a_key_given_twice_inside_options_is_an_error(tmp_path):
    text = "name: s\nmodels:\n  - name: m\n    adapter: noise\n    options:\n      resolution: 32\n"
    e = load_error(tmp_path, text + "      resolution: 16\n" + TAIL)
    assert e.field == "yaml" and "line 7" in e.message and "duplicate key 'resolution' (first at line 6)" in e.message


def test_a_key_given_twice_in_a_flow_mapping_is_an_error(tmp_path):
    text = "name: s\nmodels: [{name: m, adapter: noise, name: n}]\n" + TAIL
    e = load_error(tmp_path, text)
    assert "line 2" in e.message and "duplicate key 'name'" in e.message


# -- aliases --------------------------------------------------------------------------------------------------


def test_alias_bomb_in_options_fails_in_milliseconds_with_little_memory(tmp_path):
    text = options_bomb()
    assert 550 < len(text.encode()) < 700  # a few hundred bytes that would expand to 9**9 = 387 million values
    p = tmp_path / "bomb.yaml"
    p.write_text(text)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with deadline(10), pytest.raises(SuiteError) as e:
            load_suite(p)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 5 * 2**20, (elapsed, peak)
    assert e.value.field == "yaml"
    assert e.value.message.startswith("not valid YAML at line 7, column 16: alias *a0 refused")


def test_nine_level_bomb_at_the_top_level_or_in_a_list_is_refused(tmp_path):
    top = "".join(f"{line}\n" for line in bomb_lines(9)) + "description: *a8\n" + SUITE
    e = load_error(tmp_path, top)
    assert e.field == "yaml" and e.message.startswith("not valid YAML at line 2, column 10: alias *a0 refused")
    in_list = "guidance:\n" + "".join(f"  - {line.split(': ', 1)[1]}\n" for line in bomb_lines(9)) + SUITE
    e = load_error(tmp_path, in_list)
    assert e.field == "yaml" and e.message.startswith("not valid YAML at line 3, column 10: alias *a0 refused")


def test_any_alias_is_refused_and_an_unused_anchor_is_harmless(tmp_path):
    e = load_error(tmp_path, SUITE.replace("steps: [2]", "steps: &s [2]\nguidance: *s"))
    assert "line 5" in e.message and "alias *s refused" in e.message
    p = tmp_path / "anchor.yaml"
    p.write_text(SUITE.replace("steps: [2]", "steps: &s [2]"))
    assert load_suite(p).steps == [2]


def test_cli_exits_2_on_an_alias_bomb_naming_file_and_line(tmp_path, capsys):
    p = tmp_path / "bomb.yaml"
    p.write_text(options_bomb())
    capsys.readouterr()
    t0 = time.perf_counter()
    with deadline(20):
        assert main(["run", str(p), "--dry-run", "--out", str(tmp_path / "run")]) == 2
    assert time.perf_counter() - t0 < 1.0
    err = capsys.readouterr().err
    assert err.startswith(f"evalkit: error: {p}: yaml: not valid YAML at line 7") and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_self_sharing_option_values_built_in_python_are_bounded():
    """``parse_suite`` called with data that shares sub-lists (what aliases would build) stops at a value budget."""
    x: list = ["lol"] * 9
    for _ in range(8):
        x = [x] * 9
    doc = {**load_dict(SUITE), "models": [{"name": "m", "adapter": "noise", "options": {"x": x}}]}
    with deadline(10), pytest.raises(SuiteError) as e:
        parse_suite(doc, file="s.yaml")
    assert e.value.field.startswith("models[0].options.x") and "at most 100000 values" in e.value.message


def load_dict(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


# -- what ships still loads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "suites").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.yaml")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_shipped_suites_still_load(path):
    assert load_suite(path).cells()
