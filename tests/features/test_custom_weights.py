"""Custom feature weights (issue 18 item 4): ``extractor: {name, weights: FILE}`` in a suite loads that file, its
results say ``weights_id = custom:<sha256>`` (never taken for standard-weights numbers), the suite's hashes and the
gate's protocol change with the file's content; a clean-fid TorchScript whose hash is not the published one is not
labelled standard either, wherever it was found."""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pytest
import torch

from evalkit.cli import main
from evalkit.errors import ConfigError
from evalkit.features import weights as W
from evalkit.features.weights import REGISTRY, file_sha256, resolve_weights, weights_comparable
from evalkit.suite import SuiteError, load_suite, parse_suite
from evalkit.suite.extractor_spec import parse_extractor_spec
from evalkit.suite.identity import protocol_hash

SUITE = """\
name: custom
models: [{{name: mnist, adapter: zoo}}]
samplers: [ddim]
steps: [2]
guidance: [1]
samples: 10
batch_size: 10
grid_samples: 10
conditions: {{classes: 10}}
reference: {{dataset: mnist-heldout, samples: 20}}
extractor: {extractor}
metrics: [fd]
timing: {{repeats: 1, warmup: 0}}
"""


def _suite(tmp_path, extractor: str, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(SUITE.format(extractor=extractor))
    return path


# -- clean-fid's TorchScript: only the published file is standard ----------------------------------------------
def test_a_clean_torchscript_with_another_hash_is_custom_wherever_it_is_found(random_inception, monkeypatch):
    path = random_inception["clean"]
    digest = file_sha256(path)
    assert REGISTRY["inception-clean"].sha256 == W.CLEAN_INCEPTION_SHA256 != digest
    explicit = resolve_weights("inception-clean", path)
    assert not explicit.standard and explicit.weights_id == f"custom:{digest}"
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(random_inception["dir"]))  # found implicitly: loaded, not standard
    found = resolve_weights("inception-clean")
    assert found.path == path and found.weights_id == f"custom:{digest}" and not weights_comparable(found.weights_id)
    assert W.status("inception-clean")["status"] == "custom"
    assert W.check_extractor_weights("inception-clean") == []  # usable, and marked
    # the file whose hash is the registered one is standard: its id is the bare sha256
    monkeypatch.setitem(REGISTRY, "inception-clean", dataclasses.replace(REGISTRY["inception-clean"], sha256=digest))
    assert resolve_weights("inception-clean").weights_id == digest and weights_comparable(digest)


# -- the suite field ------------------------------------------------------------------------------------------
def test_parse_extractor_spec_reads_names_command_line_and_mappings():
    assert parse_extractor_spec("inception-clean") == ("inception-clean", None)
    assert parse_extractor_spec("inception-clean=w/my.pt") == ("inception-clean", "w/my.pt")
    assert parse_extractor_spec({"name": "clip", "weights": "c.pt"}) == ("clip", "c.pt")
    assert parse_extractor_spec({"name": "clip"}) == ("clip", None)
    for bad in ("inception-clean=", {"name": "clip", "weight": "x"}, {"weights": "x"}, 3):
        with pytest.raises(ValueError):
            parse_extractor_spec(bad)


def test_a_missing_weights_file_is_exit_2_naming_the_field_and_the_path(tmp_path, capsys):
    suite = _suite(tmp_path, "{name: inception-clean, weights: nowhere/w.pt}")
    assert main(["run", str(suite), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "extractor.weights" in err and str(tmp_path / "nowhere" / "w.pt") in err
    raw = {**_raw(tmp_path, "mnist-net"), "metrics": [{"name": "fd", "extractor": {"name": "mnist-net", "weights": 1}}]}
    with pytest.raises(SuiteError, match=r"metrics\[0\]\.extractor\.weights: expected the path"):
        parse_suite(raw)
    with pytest.raises(SuiteError, match=r"extractor\.name: unknown value 'nope'"):
        parse_suite({**raw, "extractor": {"name": "nope"}, "metrics": ["fd"]})


def _raw(tmp_path, extractor):
    import yaml

    return yaml.safe_load(SUITE.format(extractor=extractor))


def test_custom_weights_change_cell_and_protocol_hashes_but_not_the_paths_identity(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.pt").write_bytes(b"network one")
    (tmp_path / "b.pt").write_bytes(b"network one")
    (tmp_path / "c.pt").write_bytes(b"network two")
    standard = load_suite(_suite(tmp_path, "inception-clean", "std.yaml"))
    assert "extractor_weights" not in standard.to_config() and standard.extractor_options("inception-clean") == {}
    one = load_suite(_suite(tmp_path, "{name: inception-clean, weights: a/w.pt}", "one.yaml"))
    moved = load_suite(_suite(tmp_path, "{name: inception-clean, weights: b.pt}", "moved.yaml"))
    two = load_suite(_suite(tmp_path, "{name: inception-clean, weights: c.pt}", "two.yaml"))
    assert one.extractor_options("inception-clean") == {"weights": str(tmp_path / "a" / "w.pt")}
    assert [m.extractor for m in one.metrics] == ["inception-clean"]
    cell = standard.cells()[0]
    hashes = [s.cell_hash(cell) for s in (standard, one, moved, two)]
    assert hashes[0] != hashes[1] == hashes[2] != hashes[3]  # by content: the same file elsewhere is the same cell
    protocols = [protocol_hash(s.to_config()) for s in (standard, one, moved, two)]
    assert protocols[0] != protocols[1] == protocols[2] != protocols[3]
    two_files = {**_raw(tmp_path, "{name: inception-clean, weights: b.pt}")}
    two_files["metrics"] = ["fd", {"name": "kid", "extractor": {"name": "inception-clean", "weights": "c.pt"}}]
    with pytest.raises(SuiteError, match="already has weights"):
        parse_suite(two_files, file=tmp_path / "x.yaml")


def test_an_extractor_without_a_weights_option_refuses_a_file(monkeypatch, tmp_path):
    from evalkit.features.base import build_extractor
    from evalkit.registry import EXTRACTORS

    monkeypatch.setitem(EXTRACTORS._items, "no-weights", lambda device="cpu": object())
    assert build_extractor("no-weights", weights=None) is not None  # None: the same as not given
    with pytest.raises(ConfigError, match="takes no weights file"):
        build_extractor("no-weights", weights=tmp_path / "w.pt")


# -- a run with a random-weight Inception given as custom weights -------------------------------------------------
@pytest.mark.slow  # Inception on 10 generated + 20 reference images, twice (the run, then directly), on the CPU
def test_a_suite_run_with_custom_inception_weights_is_marked_and_equals_the_network_given_directly(
    random_inception, tmp_path
):
    from evalkit.features.inception import InceptionExtractor
    from evalkit.metrics import MetricInputs, get_metric
    from evalkit.references import open_reference, reference_features
    from evalkit.store import read_run

    file = random_inception["clean"]
    custom = f"custom:{file_sha256(file)}"
    suite = _suite(tmp_path, f"{{name: inception-clean, weights: {file}}}")
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 0
    run = read_run(tmp_path / "run")
    fd = run.results[run.results.metric == "fd"].iloc[0]
    assert fd.extractor == "inception-clean" and fd.weights_id == custom and not weights_comparable(fd.weights_id)
    assert run.manifest["extractors"]["inception-clean"]["weights_id"] == custom
    assert run.config["extractor_weights"]["inception-clean"]["path"] == str(file)

    direct = InceptionExtractor("clean", weights=file)  # the same network, injected directly
    assert direct.weights_id == custom
    images = run.samples(fd.cell_id)["images"]
    gen = direct(torch.from_numpy(images))
    stored = run.features(fd.cell_id)["inception-clean"]
    assert np.allclose(stored["features"], gen["features"], rtol=1e-5, atol=1e-6)
    ref = reference_features(
        open_reference({"dataset": "mnist-heldout", "samples": 20}), [direct], use_cache=False, batch_size=10
    )["inception-clean"]
    value = get_metric("fd").compute(MetricInputs(gen=gen, ref=ref))["fd"].value
    assert value == pytest.approx(fd.value, rel=1e-5)
    print(textwrap.shorten(f"[custom weights] fd {fd.value:.6g} (direct {value:.6g}), {custom}", 200))
