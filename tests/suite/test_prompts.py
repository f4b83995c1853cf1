"""Prompt sets: lists, .txt / .jsonl / .csv / COCO .json files, the built-in set, and errors that name the place."""

from __future__ import annotations

import json
import textwrap

import pytest

from evalkit.cli import main
from evalkit.suite import SuiteError, load_suite
from evalkit.suite.conditions import expand_conditions
from evalkit.suite.prompts import PromptFileError, builtin_prompt_sets, read_prompt_file


def test_every_file_kind_gives_the_same_prompts(tmp_path):
    prompts = ["a cat, on a mat", 'a dog "running"', "a bus"]
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n\n")
    (tmp_path / "p.jsonl").write_text(
        "\n".join(json.dumps({"image_id": i, "caption": p}) for i, p in enumerate(prompts))
    )
    (tmp_path / "p.csv").write_text('id,prompt\n1,"a cat, on a mat"\n2,"a dog ""running"""\n3,a bus\n')
    (tmp_path / "p.json").write_text(
        json.dumps(
            {"images": [], "annotations": [{"image_id": i, "id": i, "caption": p} for i, p in enumerate(prompts)]}
        )
    )
    for suffix in ("txt", "jsonl", "csv", "json"):
        assert read_prompt_file(tmp_path / f"p.{suffix}") == prompts, suffix


def test_per_prompt_repeats_and_cycles(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    cond = expand_conditions({"prompts": "p.jsonl", "per_prompt": 2}, 6, base_dir=tmp_path)
    assert cond.prompts == ["a", "a", "b", "b", "a", "a"] and cond.labels is None


@pytest.mark.parametrize(
    "name,content,where",
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "ok"\n', r"bad\.jsonl: line 2: not valid JSON"),
        (
            "nokey.jsonl",
            '{"prompt": "ok"}\n\n{"text": "x"}\n',
            r"nokey\.jsonl: line 3: expected a 'prompt' or 'caption' key; got keys \['text'\]",
        ),
        ("empty.jsonl", '{"caption": "  "}\n', r"empty\.jsonl: line 1, field 'caption': expected a non-empty string"),
        ("list.jsonl", '["a prompt"]\n', r"list\.jsonl: line 1: expected a JSON object"),
        (
            "nocol.csv",
            "id,text\n1,a cat\n",
            r"nocol\.csv: header: expected a 'prompt' or 'caption' column; got columns \['id', 'text'\]",
        ),
        ("gap.csv", "caption,id\na cat,1\n,2\n", r"gap\.csv: line 3, column 'caption': expected a non-empty prompt"),
        ("blank.txt", "\n  \n", r"blank\.txt: conditions\.prompts: the file holds no prompts"),
    ],
)
def test_bad_prompt_files_name_the_file_and_line(tmp_path, name, content, where):
    (tmp_path / name).write_text(content)
    with pytest.raises(PromptFileError, match=where):
        read_prompt_file(tmp_path / name)


def test_builtin_set_ships_200_distinct_captions():
    assert "evalkit-200" in builtin_prompt_sets()
    prompts = expand_conditions({"prompts": "builtin:evalkit-200"}, 200).prompts
    assert len(set(prompts)) == 200 and all(5 <= len(p.split()) <= 20 for p in prompts)


SUITE = """\
name: p
models: [{{name: m, adapter: noise}}]
samplers: [ddim]
steps: [1]
samples: 4
conditions: {{prompts: {prompts}}}
metrics: [throughput]
"""


def test_suite_validation_of_prompt_sources(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(SUITE.format(prompts="builtin:evalkit-200"))
    assert load_suite(f).conditions == {"prompts": "builtin:evalkit-200"}
    f.write_text(SUITE.format(prompts="builtin:coco-30k"))
    with pytest.raises(
        SuiteError,
        match=r"conditions\.prompts: unknown value 'builtin:coco-30k'; expected one of: "
        r"builtin:evalkit-200",
    ):
        load_suite(f)
    f.write_text(SUITE.format(prompts="captions.parquet"))
    with pytest.raises(
        SuiteError,
        match=r"conditions\.prompts: expected a list of prompts, a prompt file ending in "
        r"\.txt, \.jsonl, \.csv, \.json, or 'builtin:<name>'",
    ):
        load_suite(f)
    # a broken file is found when the run starts: message and exit 2, no traceback
    (tmp_path / "caps.jsonl").write_text('{"caption": "a"}\n{"capton": "b"}\n')
    f.write_text(SUITE.format(prompts="caps.jsonl"))
    assert main(["run", str(f), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "caps.jsonl: line 2: expected a 'prompt' or 'caption' key" in err and "Traceback" not in err


def test_prompts_reach_the_adapter_and_the_stored_samples(tmp_path):
    from evalkit.run.runner import Runner
    from evalkit.store import RunStore

    (tmp_path / "caps.csv").write_text(
        textwrap.dedent("""\
        caption
        a red square
        a blue circle
    """)
    )
    f = tmp_path / "s.yaml"
    f.write_text(SUITE.format(prompts="caps.csv") + "grid_samples: 4\n")
    assert Runner(load_suite(f), tmp_path / "run", device="cpu").run().exit_code == 0
    stored = RunStore(tmp_path / "run").load_samples("m__ddim__s1__g1")
    assert list(stored["prompts"]) == ["a red square", "a blue circle"] * 2
