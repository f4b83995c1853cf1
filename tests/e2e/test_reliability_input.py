"""Bad input (issue 7): fuzzed suites give only SuiteError (CLI: exit 2 and a message, no traceback);
image folders with non-images or corrupt files give a count of skipped files and a warning, or an
error with ``strict: true``. Issue 15: alias bombs, duplicate keys and misspelled option names are
SuiteErrors naming the line or the field."""

from __future__ import annotations

import copy
import datetime
import io
import json
import string
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import deadline as _deadline
from conftest import smooth_images, write_pngs
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from evalkit.cli import main
from evalkit.references import ReferenceSetError, open_reference
from evalkit.registry import ADAPTERS, METRICS, SAMPLERS
from evalkit.suite import Suite, SuiteError, load_suite, parse_suite
from evalkit.suite.validate import _TOP_KEYS

BASE = {
    "name": "fuzz",
    "models": [{"name": "m", "adapter": "noise", "options": {"resolution": 32}}],
    "samplers": ["ddim", {"name": "dpmpp_2m", "label": "dpm-k", "options": {"use_karras_sigmas": True}}],
    "steps": [2, 4],
    "guidance": [1.0, 3.0],
    "samples": 10,
    "batch_size": 5,
    "seed": 0,
    "conditions": {"classes": 10},
    "reference": {"dataset": "mnist-heldout", "samples": 100},
    "metrics": ["fd", {"name": "kid", "options": {"subsets": 3}}, "throughput"],
    "extractor": "mnist-net",
    "grid_samples": 8,
    "description": "base",
}
NESTED = {
    "models": ["name", "adapter", "options"],
    "samplers": ["name", "label", "options"],
    "metrics": ["name", "extractor", "options"],
    "reference": ["dataset", "path", "stats", "samples", "strict", "name"],
    "conditions": ["classes", "prompts", "per_prompt"],
}

# Values a YAML document can hold (safe_load also makes dates, timestamps, bytes and sets), plus edge cases.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**15, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "..",
            "../../evil",
            "/etc/passwd",
            "a/b",
            "x\x00y",
            "ddim",
            "fd",
            "noise",
            "mnist-net",
            "mnist-heldout",
            "os:system",
            "builtin:x",
            "-1",
            "1e400",
            "nan",
        ]
    ),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=4),
    st.frozensets(st.integers(), max_size=2),
)
values = st.recursive(
    scalars,
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.one_of(
                st.text(max_size=8), st.integers(), st.sampled_from(sorted({k for ks in NESTED.values() for k in ks}))
            ),
            c,
            max_size=4,
        )
    ),
    max_leaves=8,
)


@st.composite
def mutated_suites(draw):
    """A valid suite with random top-level and nested keys replaced, removed or added."""
    doc = copy.deepcopy(BASE)
    for key in draw(st.lists(st.sampled_from(sorted(_TOP_KEYS) + ["bogus", 3]), max_size=4, unique=True)):
        action = draw(st.sampled_from(["set", "delete", "nested"]))
        if action == "delete":
            doc.pop(key, None)
        elif action == "nested" and key in NESTED:
            sub = draw(st.dictionaries(st.sampled_from(NESTED[key] + ["zzz"]), values, max_size=3))
            if isinstance(doc.get(key), list):
                doc[key] = [*doc[key][:1], {**(doc[key][0] if isinstance(doc[key][0], dict) else {}), **sub}]
            else:
                doc[key] = {**(doc.get(key) or {}), **sub}
        else:
            doc[key] = draw(values)
    return doc


def _check_parse(doc) -> Suite | None:
    try:
        suite = parse_suite(doc, file="fuzz.yaml")
    except SuiteError as e:
        assert e.file == "fuzz.yaml" and e.field and e.message
        assert str(e).startswith("fuzz.yaml: ")
        return None
    # a suite that validates is usable: the grid, the hashes and the recorded config all work
    cells = suite.cells()
    assert len({c.cell_id for c in cells}) == len(cells)
    suite.config_hash()
    for c in cells:
        suite.cell_hash(c)
    json.dumps(suite.to_config())
    return suite


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_suites())
def test_fuzzed_suite_documents_give_only_suite_errors(doc):
    _check_parse(doc)


@settings(max_examples=100, deadline=None)
@given(st.one_of(values, st.dictionaries(st.sampled_from(sorted(_TOP_KEYS)), values, max_size=8)))
def test_random_documents_give_only_suite_errors(doc):
    _check_parse(doc)


yaml_texts = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda d: yaml.safe_dump(d, default_flow_style=None, allow_unicode=True),
        st.dictionaries(
            st.sampled_from(sorted(_TOP_KEYS)),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False),
                lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                max_leaves=6,
            ),
            max_size=8,
        ),
    ),
    st.sampled_from(
        [
            "steps: [1\n",
            "a: b: c",
            "? [a, b]\n: 1\n",
            "x: 2020-13-45\n",
            "- !!python/object:os.system x\n",
            "name: !!binary aGVsbG8=\n",
            "&a [*a]\n",
            "[" * 2000,
            "\t\tname: x",
            "name: x\x00\n",
            "\ufeffname: 1\n",
            "samples: 1e400\n",
        ]
    ),
)


@settings(max_examples=120, deadline=None)
@given(yaml_texts)
def test_random_yaml_text_gives_only_suite_errors(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.yaml"
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_suite(p)
        except SuiteError as e:
            assert e.file == str(p) and e.field and e.message


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(yaml_texts, mutated_suites().map(lambda d: yaml.safe_dump(json.loads(json.dumps(d, default=str)))))
)
def test_cli_run_on_bad_suite_exits_2_with_a_message(text, capsys):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.yaml"
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_suite(p)
            valid = True
        except SuiteError:
            valid = False
        assume(not valid)  # only bad suites here (a valid one would start a run)
        capsys.readouterr()
        assert main(["run", str(p), "--out", str(Path(d) / "run"), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"evalkit: error: {p}: ") and "Traceback" not in err
        assert not (Path(d) / "run").exists()


# -- issue 15: aliases, duplicate keys, misspelled option names ---------------------------------------------


@st.composite
def alias_bombs(draw):
    """A suite whose text nests aliases ``levels`` deep, ``width`` wide, at the top level or inside options."""
    levels, width = draw(st.integers(1, 9)), draw(st.integers(2, 9))
    chain = [f"b0: &b0 [{', '.join(['lol'] * width)}]"]
    chain += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels)]
    chain.append(f"last: *b{levels - 1}")
    where = draw(st.sampled_from(["top", "model", "sampler", "metric"]))
    head = "name: bomb\nsteps: [2]\nsamples: 4\n"
    model, sampler, metric = "models: [{name: m, adapter: noise}]\n", "samplers: [ddim]\n", "metrics: [throughput]\n"
    nested = "".join(f"      {line}\n" for line in chain)
    if where == "top":
        return head + "".join(f"{line}\n" for line in chain) + model + sampler + metric
    if where == "model":
        return head + "models:\n  - name: m\n    adapter: noise\n    options:\n" + nested + sampler + metric
    if where == "sampler":
        return head + model + "samplers:\n  - name: ddim\n    options:\n" + nested + metric
    return head + model + sampler + "metrics:\n  - name: throughput\n    options:\n" + nested


@settings(max_examples=40, deadline=None)
@given(alias_bombs())
def test_alias_bombs_are_refused_at_once(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.yaml"
        p.write_text(text)
        t0 = time.perf_counter()
        with _deadline(10), pytest.raises(SuiteError) as e:
            load_suite(p)
        assert time.perf_counter() - t0 < 1.0
    assert e.value.field == "yaml" and "alias *b" in e.value.message and "refused" in e.value.message


@settings(max_examples=40, deadline=None)
@given(
    key=st.sampled_from(sorted(BASE)),
    value=st.one_of(st.none(), st.booleans(), st.integers(), st.text(string.ascii_letters, max_size=6)),
    nested=st.booleans(),
)
def test_duplicate_keys_are_errors_naming_key_and_lines(key, value, nested):
    base = yaml.safe_dump(BASE, sort_keys=False, default_flow_style=False)
    lines = base.splitlines()
    if nested:  # a key repeated inside the first model's options
        at = lines.index("    resolution: 32")
        lines.insert(at + 1, f"    resolution: {json.dumps(value)}")
        key, first, line = "resolution", at + 1, at + 2
    else:
        first = lines.index(next(x for x in lines if x.startswith(f"{key}:"))) + 1
        lines.append(f"{key}: {json.dumps(value)}")
        line = len(lines)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.yaml"
        p.write_text("\n".join(lines) + "\n")
        with pytest.raises(SuiteError) as e:
            load_suite(p)
    assert e.value.field == "yaml"
    assert f"at line {line}," in e.value.message and f"duplicate key {key!r} (first at line {first})" in e.value.message


def _accepted_options(kind: str, name: str) -> list[str]:
    if kind == "samplers":
        return SAMPLERS.get(name).option_names()
    if kind == "metrics":
        return sorted(METRICS.get(name).options)
    import inspect

    return sorted(p for p in inspect.signature(ADAPTERS.get(name)).parameters if p != "device")


RECEIVERS = [
    ("samplers", "dpmpp_2m"),
    ("samplers", "ddim"),
    ("samplers", "euler"),
    ("metrics", "kid"),
    ("metrics", "fd"),
    ("metrics", "pr"),
    ("models", "noise"),
    ("models", "zoo"),
]


@st.composite
def misspelled_options(draw):
    """A real option name of a sampler, metric or adapter with one character replaced, deleted, inserted or two
    swapped; returns (doc, field, the real name)."""
    kind, name = draw(st.sampled_from(RECEIVERS))
    accepted = _accepted_options(kind, name)
    real = draw(st.sampled_from(accepted))
    i = draw(st.integers(0, len(real) - 1))
    c = draw(st.sampled_from(string.ascii_lowercase + string.digits + "_"))
    how = draw(st.sampled_from(["replace", "delete", "insert", "swap"]))
    typo = {
        "replace": real[:i] + c + real[i + 1 :],
        "delete": real[:i] + real[i + 1 :],
        "insert": real[:i] + c + real[i:],
        "swap": real[:i] + real[i + 1 : i + 2] + real[i : i + 1] + real[i + 2 :],
    }[how]
    assume(typo and typo not in accepted)
    doc = copy.deepcopy(BASE)
    entry = {"name": name, "options": {typo: draw(st.one_of(st.integers(), st.booleans(), st.text(max_size=4)))}}
    if kind == "models":
        entry["adapter"] = entry.pop("name")
    doc[kind] = [entry]
    return doc, f"{kind}[0].options.{typo}", real


@settings(max_examples=150, deadline=None)
@given(misspelled_options())
def test_misspelled_option_names_are_suite_errors_naming_the_field(case):
    doc, field, real = case
    with pytest.raises(SuiteError) as e:
        parse_suite(doc, file="fuzz.yaml")
    assert e.value.field == field and "unknown option" in e.value.message
    assert repr(real) in e.value.message or f" {real}," in e.value.message or e.value.message.endswith(f" {real}")


def test_binary_and_unreadable_suite_files_are_suite_errors(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(SuiteError, match="not a UTF-8 text file"):
        load_suite(p)
    huge = tmp_path / "huge.yaml"
    huge.write_text(
        "name: x\nmodels: [{name: m, adapter: noise}]\nsamplers: [ddim]\nsteps: [2]\n"
        "guidance: [" + "9" * 400 + "]\nsamples: 5\nmetrics: [throughput]\n"
    )
    with pytest.raises(SuiteError) as e:
        load_suite(huge)
    assert e.value.field == "guidance[0]" and "finite number" in e.value.message


@pytest.mark.parametrize(
    "doc, field, text",
    [
        ({"name": "../../evil"}, "name", "plain suite name"),
        ({"samples": 10**12}, "samples", "≤ 10000000"),
        ({"conditions": {"classes": 10**15}}, "conditions.classes", "≤ 1000000"),
        ({"seed": 2**80}, "seed", "≤"),
        ({"guidance": [1, 1.0000001]}, "models/samplers/steps/guidance/guidance_method", "share the cell id"),
        (
            {
                "models": [{"name": "a__ddim", "adapter": "noise"}, {"name": "a", "adapter": "noise"}],
                "samplers": ["ddim", {"name": "ddim", "label": "ddim__ddim"}],
            },
            "models/samplers/steps/guidance/guidance_method",
            "share",
        ),
        (
            {"models": [{"name": "m", "adapter": "noise", "options": {"when": datetime.date(2020, 1, 2)}}]},
            "models[0].options.when",
            "expected a string, number",
        ),
        ({"reference": {"path": "a\x00b"}}, "reference.path", "NUL"),
        ({"reference": {"dataset": "mnist-heldout", "name": ["x"]}}, "reference.name", "non-empty string"),
    ],
)
def test_gaps_found_by_fuzzing_are_clean_errors(doc, field, text):
    with pytest.raises(SuiteError) as e:
        parse_suite({**BASE, **doc})
    assert e.value.field == field and text in e.value.message


# -- image folders -------------------------------------------------------------------------------------------


def _jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    imgs = smooth_images(8, 32, seed=3)
    d = write_pngs(imgs[:6], tmp_path / "ref")
    good_jpeg = _jpeg(imgs[6])
    (d / "good.jpg").write_bytes(good_jpeg)
    cut = _jpeg(imgs[7])
    (d / "truncated.jpg").write_bytes(cut[: len(cut) * 2 // 3])  # passes the header check, fails to decode
    png = (d / "0000.png").read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("I am not a JPEG")
    (d / "README.md").write_text("notes")
    (d / "data.csv").write_text("1,2,3")
    return d


def test_folder_with_corrupt_and_non_image_files_counts_and_warns(messy_folder):
    with pytest.warns(UserWarning) as rec:
        ref = open_reference({"path": str(messy_folder)})
        batches = list(ref.iter_batches(4))
    text = " | ".join(str(w.message) for w in rec)
    assert "ignored 2 non-image file(s)" in text
    assert "skipped 3 unreadable image file(s)" in text  # truncated.png, empty.png, text.jpg (header check)
    assert "skipped 1 image file(s) that cannot be decoded, e.g. 'truncated.jpg'" in text
    assert sum(len(b) for b in batches) == 7  # 6 png + good.jpg
    assert len(ref) == 7 and sorted(ref.skipped) == ["empty.png", "text.jpg", "truncated.jpg", "truncated.png"]


def test_strict_folder_errors_name_the_file(messy_folder, tmp_path):
    with pytest.raises(ReferenceSetError, match=r"'empty.png'"):
        len(open_reference({"path": str(messy_folder), "strict": True}))
    # only the decode-time failure left: strict makes it an error too
    for name in ("truncated.png", "empty.png", "text.jpg"):
        (messy_folder / name).unlink()
    ref = open_reference({"path": str(messy_folder), "strict": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ReferenceSetError, match=r"'truncated.jpg'.*cannot be decoded"):
            list(ref.iter_batches(4))


def test_cli_run_with_corrupt_reference_folder(messy_folder, tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    body = (
        "name: folder\nmodels: [{name: n, adapter: noise}]\nsamplers: [ddim]\nsteps: [2]\nsamples: 12\n"
        "batch_size: 6\nconditions: {classes: 10}\nextractor: mnist-net\nmetrics: [fd]\n"
    )
    suite.write_text(body + f"reference: {{path: {messy_folder}}}\n")
    with pytest.warns(UserWarning, match="skipped"):
        assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 0
    suite.write_text(body + f"reference: {{path: {messy_folder}, strict: true}}\n")
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(tmp_path / "run2"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "corrupt or unreadable image" in err and "empty.png" in err and "Traceback" not in err
