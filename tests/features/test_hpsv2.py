"""HPSv2 through evalkit equals the ``hpsv2`` package's own ``hpsv2.img_score.score`` (≤ 1e-4), on the scores the
package computed in a separate venv (``tests/fixtures/hpsv2/make_fixture.py``: the package pins pytest 7.2 and
protobuf < 4) with a tiny random CLIP. Weights and images are regenerated here from the fixture's seeds, and their
sha256 checked, so both sides scored the same network on the same pixels; the weights reach evalkit as the released
checkpoints are shaped (a ``{"state_dict": ...}`` torch.save file) through its weights-only loader.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.errors import ConfigError
from evalkit.features import build_extractor
from evalkit.features.hpsv2 import HPSv2Extractor, resize_longest_and_pad
from evalkit.features.safe_load import UnsafeWeightsError
from evalkit.features.weights import REGISTRY, WeightsNotFoundError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hpsv2"


def _maker():
    """``make_fixture.py`` as a module (its generators; it imports hpsv2 only in ``main``)."""
    spec = importlib.util.spec_from_file_location("hpsv2_make_fixture", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(fixture metadata, make_fixture module, the checkpoint file holding the fixture's weights)."""
    import open_clip

    meta, mk = json.loads((FIXTURE / "fixture.json").read_text()), _maker()
    assert meta["model_config"] == {"name": mk.TINY, **mk.TINY_CFG}
    root = tmp_path_factory.mktemp("hpsv2")
    (root / f"{mk.TINY}.json").write_text(json.dumps(mk.TINY_CFG))
    open_clip.add_model_config(str(root / f"{mk.TINY}.json"))
    shapes = {k: list(v.shape) for k, v in open_clip.create_model(mk.TINY).state_dict().items()}
    assert shapes == meta["state_dict_shapes"]  # evalkit's open_clip has the package's (2.16) keys and shapes
    state = mk.seeded_state_dict(shapes, meta["weights_seed"])
    assert mk.weights_sha256(state) == meta["weights_sha256"]  # the very weights the package scored with
    checkpoint = root / "tiny_hps.pt"
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in state.items()}, "epoch": 3}, checkpoint)
    return meta, mk, checkpoint


def test_hpsv2_matches_the_hpsv2_package(tiny):
    meta, mk, checkpoint = tiny
    ex = HPSv2Extractor(model=mk.TINY, weights=checkpoint)
    assert ex.weights_id.startswith("custom:") and ex.mode == f"hpsv2-v2.1:{mk.TINY}"
    ours, theirs = [], []
    for g, group in enumerate(meta["groups"]):
        images = mk.make_images(group["height"], group["width"], len(group["prompts"]), seed=group["image_seed"])
        assert hashlib.sha256(images.tobytes()).hexdigest() == group["images_sha256"]
        out = ex(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), group["prompts"])
        assert out["image_embeds"].shape == (len(images), 32) and out["hpsv2"].shape == (len(images),)
        ours += out["hpsv2"].tolist()
        theirs += group["scores"]
    ours, theirs = np.array(ours), np.array(theirs)
    rel = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))  # scores are cosines of both signs
    print(
        f"[agreement] hpsv2 vs hpsv2 package img_score.score ({len(ours)} images, 4 sizes): "
        f"evalkit={ours.mean():.8g} reference={theirs.mean():.8g} rel={rel:.3e}"
    )
    assert rel <= 1e-4


def test_without_prompts_only_embeddings_and_encode_text_gives_the_score(tiny):
    meta, mk, checkpoint = tiny
    group = meta["groups"][0]
    images = mk.make_images(group["height"], group["width"], len(group["prompts"]), seed=group["image_seed"])
    batch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    ex = build_extractor("hpsv2", model=mk.TINY, weights=checkpoint)
    assert set(ex(batch)) == {"image_embeds"}  # a reference set: no prompts, no score
    img, txt = ex(batch)["image_embeds"], ex.encode_text(group["prompts"])
    cos = np.einsum("ij,ij->i", img, txt) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)
    np.testing.assert_allclose(ex(batch, group["prompts"])["hpsv2"], cos, rtol=1e-5, atol=1e-6)


def test_resize_longest_side_then_pad_centred():
    x = torch.ones(1, 3, 100, 50)
    y = resize_longest_and_pad(x, 224)
    assert y.shape == (1, 3, 224, 224)
    assert torch.all(y[..., :, :56] == 0) and torch.all(y[..., :, 56 + 112 :] == 0)  # 112 wide, centred
    assert torch.allclose(y[..., :, 56 : 56 + 112], torch.ones(1))
    square = torch.rand(2, 3, 224, 160)
    assert torch.equal(resize_longest_and_pad(square, 224)[..., 32:192], square)  # no resize: padded only


def test_random_network_and_versions(tiny):
    _, mk, _ = tiny
    a, b = (build_extractor("hpsv2", model=mk.TINY, pretrained=None, seed=s) for s in (4, 4))
    assert a.weights_id == "random:4"
    images = torch.from_numpy(mk.make_images(40, 40, 2, seed=1).transpose(0, 3, 1, 2).copy())
    np.testing.assert_array_equal(a(images)["image_embeds"], b(images)["image_embeds"])
    assert HPSv2Extractor(model=mk.TINY, pretrained=None, version="v2.0").mode == f"hpsv2-v2.0:{mk.TINY}"
    with pytest.raises(ConfigError, match="unknown version '3'"):
        HPSv2Extractor(model=mk.TINY, pretrained=None, version="3")
    with pytest.raises(ConfigError, match="released checkpoints are ViT-H-14"):
        HPSv2Extractor(model=mk.TINY)


@pytest.mark.parametrize(("version", "filename"), [("2.1", "HPS_v2.1_compressed.pt"), ("2.0", "HPS_v2_compressed.pt")])
def test_missing_checkpoint_names_the_file_and_where_it_comes_from(version, filename, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HPS_ROOT", str(tmp_path / "hps_root"))
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path / "w"))
    with pytest.raises(WeightsNotFoundError) as err:
        HPSv2Extractor(version=version)
    msg = str(err.value)
    assert f"'{filename}'" in msg and f"https://huggingface.co/xswu/HPSv2/resolve/main/{filename}" in msg
    assert str(tmp_path / "w" / filename) in msg and str(tmp_path / "hps_root" / filename) in msg
    assert REGISTRY[f"hpsv2-v{version}"].filename == filename


def test_a_checkpoint_that_needs_unpickling_is_refused(tiny, tmp_path):
    _, mk, checkpoint = tiny
    state = torch.load(checkpoint, weights_only=True)
    bad = tmp_path / "with_objects.pt"
    torch.save({**state, "args": argparse.Namespace(lr=1e-5)}, bad)  # an object: would run code to unpickle
    with pytest.raises(UnsafeWeightsError, match="weights_only=True"):
        HPSv2Extractor(model=mk.TINY, weights=bad)


@pytest.mark.slow
def test_full_size_vit_h_builds_and_scores():
    """The real architecture (random weights): the released checkpoints' shapes, a (1, 1024) forward."""
    t0 = time.perf_counter()
    ex = HPSv2Extractor(pretrained=None)
    images = torch.from_numpy(_maker().make_images(256, 192, 1, seed=0).transpose(0, 3, 1, 2).copy())
    out = ex(images, ["a photo of a cat"])
    assert out["image_embeds"].shape == (1, 1024) and -1 <= float(out["hpsv2"][0]) <= 1
    print(f"[timing] hpsv2 ViT-H-14 build + one forward: {time.perf_counter() - t0:.1f} s")


@pytest.mark.real_weights
@pytest.mark.slow
def test_real_hpsv2_checkpoint_loads_weights_only_and_ranks_prompts():
    """With HPS_v2.1_compressed.pt in $EVALKIT_WEIGHTS_DIR: it loads without unpickling objects, is labelled standard,
    and a plain red image scores higher against "a red square" than against an unrelated prompt."""
    import os

    from evalkit.features.weights import weights_comparable

    path = Path(os.environ.get("EVALKIT_WEIGHTS_DIR") or "/nonexistent") / "HPS_v2.1_compressed.pt"
    if not path.is_file():
        pytest.skip("HPS_v2.1_compressed.pt not in EVALKIT_WEIGHTS_DIR")
    ex = HPSv2Extractor()
    assert weights_comparable(ex.weights_id)
    red = torch.zeros(2, 3, 256, 256, dtype=torch.uint8)
    red[:, 0] = 220
    scores = ex(red, ["a red square", "a crowded city street at night"])["hpsv2"]
    assert scores[0] > scores[1]
