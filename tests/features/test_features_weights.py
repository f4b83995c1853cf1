"""The weights registry: lookup order, clear errors for missing / mismatched files, weights_id marking,
the `evalkit weights` / `evalkit stats` commands, and real-weights checks (skipped without the files)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from evalkit.features import weights as W
from evalkit.features.weights import (
    REGISTRY,
    WeightsMismatchError,
    WeightsNotFoundError,
    resolve_weights,
    weights_comparable,
)


def test_missing_weights_error_names_file_sha_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path / "wdir"))
    with pytest.raises(WeightsNotFoundError) as e:
        resolve_weights("inception-torch-fidelity")
    msg = str(e.value)
    entry = REGISTRY["inception-torch-fidelity"]
    assert entry.filename in msg and entry.sha256 in msg
    assert str(tmp_path / "wdir" / entry.filename) in msg  # EVALKIT_WEIGHTS_DIR
    assert "hub" in msg and "checkpoints" in msg  # the library's own cache


def test_mismatched_weights_in_weights_dir_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / REGISTRY["inception-torch-fidelity"].filename).write_bytes(b"not the real weights")
    with pytest.raises(WeightsMismatchError, match="expected 6726825d0af5"):
        resolve_weights("inception-torch-fidelity")


def test_lookup_order_explicit_then_env_then_library_cache(tmp_path, monkeypatch):
    entry = W.WeightsFile(
        "t", "t.bin", "https://example.invalid/t.bin", None, None, None, "test", (lambda: tmp_path / "libcache",)
    )
    monkeypatch.setitem(REGISTRY, "t", entry)
    (tmp_path / "libcache").mkdir()
    (tmp_path / "libcache" / "t.bin").write_bytes(b"lib")
    assert resolve_weights("t").path == tmp_path / "libcache" / "t.bin"
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.bin").write_bytes(b"env")
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path / "env"))
    assert resolve_weights("t").path == tmp_path / "env" / "t.bin"
    (tmp_path / "mine.bin").write_bytes(b"mine")
    assert resolve_weights("t", tmp_path / "mine.bin").path == tmp_path / "mine.bin"
    with pytest.raises(WeightsNotFoundError, match="given path"):
        resolve_weights("t", tmp_path / "absent.bin")


def test_explicit_nonstandard_weights_are_marked(tmp_path):
    f = tmp_path / "custom.pth"
    f.write_bytes(b"my own fine-tuned inception")
    r = resolve_weights("inception-torch-fidelity", f)
    assert not r.standard and r.weights_id.startswith("custom:")
    assert not weights_comparable(r.weights_id) and not weights_comparable("random:3")
    assert weights_comparable(REGISTRY["inception-torch-fidelity"].sha256)


def test_extractor_surfaces_missing_weights(monkeypatch, tmp_path):
    from evalkit.features import build_extractor

    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        build_extractor("inception-legacy_pytorch")


def _run_cli(func, **kw) -> int:
    return func(argparse.Namespace(**kw))


def test_weights_command_lists_status(capsys, tmp_path, monkeypatch):
    from evalkit.features.commands import cmd_weights_list, register

    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / REGISTRY["inception-torch-fidelity"].filename).write_bytes(b"bad")
    assert _run_cli(cmd_weights_list) == 2  # a mismatch: an environment error, exit 2
    out = capsys.readouterr().out
    assert "mismatch" in out and "missing" in out and str(tmp_path) in out
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["weights", "download", "--dir", "x"]).func.__name__ == "cmd_weights_download"


def test_every_registered_file_has_a_way_to_be_downloaded(tmp_path, monkeypatch, capsys):
    """`evalkit weights download NAME` knows where every entry goes: its library's downloader, else the entry's
    URL into the first place evalkit will look for it. Downloads are stubbed (offline): each writes the URL."""
    import torch.hub

    from evalkit.features import commands

    fetched: dict[str, str] = {}

    def fake_download(url: str, dst: str, hash_prefix=None, progress=True) -> None:
        Path(dst).write_text(url)
        fetched[Path(dst).name] = url

    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    library = commands._downloaders()
    plain = sorted(set(REGISTRY) - set(library))
    assert _run_cli(commands.cmd_weights_download, names=plain, dir=None, force=True) in (0, 2)
    for name in plain:
        entry = REGISTRY[name]
        assert fetched[Path(entry.filename).name] == entry.url, name
        assert (tmp_path / entry.filename).is_file(), name
    assert "KeyError" not in capsys.readouterr().err


# -- real weights: skipped unless EVALKIT_WEIGHTS_DIR holds the published files -------------------------

REAL_DIR = os.environ.get("EVALKIT_WEIGHTS_DIR")


def _real(name: str) -> Path:
    entry = REGISTRY[name]
    path = Path(REAL_DIR or "/nonexistent") / entry.filename
    if not path.is_file():
        pytest.skip(f"real weights {entry.filename} not in EVALKIT_WEIGHTS_DIR")
    return path


@pytest.mark.real_weights
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_real_weights_verify_sha256(name):
    path = _real(name)
    r = resolve_weights(name)
    assert r.path == path and r.standard


@pytest.mark.real_weights
@pytest.mark.parametrize(
    "mode,reference", [("legacy_tensorflow", "torchmetrics"), ("legacy_pytorch", "pytorch-fid"), ("clean", "clean-fid")]
)
def test_real_inception_matches_reference_library(mode, reference, tmp_path, monkeypatch):
    """With the real files: evalkit FID equals the library's on a few images (standard weights_id)."""
    import torch
    from conftest import smooth_images, write_pngs

    from evalkit.features.inception import WEIGHTS_ENTRY, InceptionExtractor
    from evalkit.metrics import MetricInputs, get_metric
    from evalkit.references import open_reference, reference_features

    path = _real(WEIGHTS_ENTRY[mode])
    gen_np, ref_np = smooth_images(10, 64, seed=1), smooth_images(10, 64, seed=2, shift=0.2)
    ex = InceptionExtractor(mode)
    assert weights_comparable(ex.weights_id) or REGISTRY[WEIGHTS_ENTRY[mode]].sha256 is None
    g = reference_features(open_reference({"path": str(write_pngs(gen_np, tmp_path / "g"))}), [ex], use_cache=False)
    r = reference_features(open_reference({"path": str(write_pngs(ref_np, tmp_path / "r"))}), [ex], use_cache=False)
    ours = get_metric("fd").compute(MetricInputs(gen=g[ex.name], ref=r[ex.name], options={"bootstrap": 0}))["fd"].value
    if reference == "torchmetrics":
        from torchmetrics.image.fid import FrechetInceptionDistance

        m = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
        m.update(torch.from_numpy(ref_np), real=True)
        m.update(torch.from_numpy(gen_np), real=False)
        theirs = float(m.compute())
    elif reference == "pytorch-fid":
        from pytorch_fid.fid_score import calculate_fid_given_paths

        hub = tmp_path / "th" / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        (hub / path.name).symlink_to(path)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
        theirs = calculate_fid_given_paths([str(tmp_path / "g"), str(tmp_path / "r")], 10, "cpu", 2048, 0)
    else:
        from cleanfid import fid as cfid
        from cleanfid.inception_torchscript import InceptionV3W

        model = InceptionV3W(str(path.parent), download=False)
        theirs = cfid.compute_fid(
            str(tmp_path / "g"),
            str(tmp_path / "r"),
            mode="clean",
            custom_feat_extractor=model,
            device=torch.device("cpu"),
            num_workers=0,
            verbose=False,
            use_dataparallel=False,
        )
    assert abs(ours - theirs) / abs(theirs) <= 1e-4


@pytest.mark.real_weights
def test_real_lpips_alex_matches_package(tmp_path, monkeypatch):
    import lpips
    import torch
    from conftest import smooth_images
    from test_features_lpips import _lpips_reference, _max_rel

    from evalkit.features.lpips_net import LpipsExtractor

    path = _real("lpips-alex-backbone")
    ex = LpipsExtractor("alex")
    assert weights_comparable(ex.weights_id)
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / path.name).symlink_to(path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    images = smooth_images(4, 64, seed=3)
    assert (
        _max_rel(
            ex(torch.from_numpy(images))["lpips"], _lpips_reference(lpips.LPIPS(net="alex", verbose=False), images)
        )
        <= 1e-5
    )


@pytest.mark.real_weights
def test_real_clip_matches_torchmetrics_definition():
    import open_clip
    import torch
    from conftest import smooth_images
    from test_features_clip import _OpenClipAsHF, _OpenClipProcessor
    from torchmetrics.multimodal.clip_score import CLIPScore

    from evalkit.features.clip import ClipExtractor
    from evalkit.metrics import MetricInputs, get_metric

    path = _real("clip-vit-b-32-openai")
    ex = ClipExtractor("ViT-B-32", "openai")
    assert weights_comparable(ex.weights_id)
    images, prompts = smooth_images(4, 64, seed=5), ["a red square", "noise", "a blue circle", "a photo"]
    gen = {"image_embeds": ex(torch.from_numpy(images))["image_embeds"], "text_embeds": ex.encode_text(prompts)}
    ours = get_metric("clip_score").compute(MetricInputs(gen=gen, options={"bootstrap": 0}))["clip_score"].value
    model, _, pre = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(path), force_quick_gelu=True)
    metric = CLIPScore(
        model_name_or_path=lambda: (
            _OpenClipAsHF(model.eval()),
            _OpenClipProcessor(pre, open_clip.get_tokenizer("ViT-B-32")),
        )
    )
    with torch.no_grad():
        metric.update(torch.from_numpy(images), prompts)
    assert ours == pytest.approx(float(metric.compute()), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize(
    "env", [{}, {"XDG_CACHE_HOME": "/x/cache"}, {"TORCH_HOME": "~/th", "XDG_CACHE_HOME": "/x/cache"}], ids=str
)
def test_the_preflight_finds_torch_hubs_folder_as_torch_does_without_importing_it(monkeypatch, env):
    import sys

    import torch.hub

    from evalkit.features.weights import _torch_hub_dir

    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    expected = Path(torch.hub.get_dir()) / "checkpoints"
    monkeypatch.delitem(sys.modules, "torch.hub")  # as before torch loads: the path is computed, not asked
    assert _torch_hub_dir() == expected
