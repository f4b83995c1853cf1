"""``clip-vit-l14``: open_clip's own ``encode_image(preprocess(PIL))`` on the same random weights, one CLIP forward per
image for clip_score + aesthetic + fd, FD_CLIP reading ``image_embeds`` without options, and the weights entries.

A tiny open_clip architecture with ViT-L/14's 768-d embedding (registered from a JSON config) stands in for
ViT-L-14; one slow test builds the real architecture with random weights.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from conftest import smooth_images

from evalkit.errors import ConfigError
from evalkit.features.base import build_extractor
from evalkit.metrics import MetricInputs, get_metric

TINY = "evalkit-tiny-clip-768"
TINY_CFG = {
    "embed_dim": 768,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PROMPTS = ["a red square", "a photo of a cat", "blue sky over hills", "a bowl of soup"]


@pytest.fixture(scope="session")
def tiny_l14(tmp_path_factory) -> str:
    """The name of a tiny open_clip config with a 768-d embedding (what the aesthetic head takes)."""
    import open_clip

    cfg = tmp_path_factory.mktemp("clip768") / f"{TINY}.json"
    cfg.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(str(cfg))
    return TINY


def test_image_embeds_equal_open_clips_own_encode_image_of_its_preprocess(tiny_l14):
    import open_clip
    from PIL import Image

    ex = build_extractor("clip-vit-l14", model=tiny_l14, pretrained=None, seed=3)
    torch.manual_seed(3)  # the extractor's random init: the same seed, the same order of draws
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_l14, pretrained=None)
    model.eval()
    theirs_state, ours_state = model.state_dict(), ex.model.state_dict()
    assert all(torch.equal(theirs_state[k], ours_state[k]) for k in theirs_state)
    images = smooth_images(5, 48, seed=1)
    with torch.no_grad():
        x = torch.stack([preprocess(Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0)))) for im in images])
        theirs = model.encode_image(x).numpy()
    ours = ex(torch.from_numpy(images))["image_embeds"]
    assert ours.shape == (5, 768) and ex.outputs == ("image_embeds",)
    d = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    print(
        f"[agreement] clip-vit-l14 image_embeds vs open_clip encode_image: evalkit={np.linalg.norm(ours):.8g} "
        f"reference={np.linalg.norm(theirs):.8g} rel={d:.3e} (max over elements)"
    )
    assert d <= 1e-6
    assert ex.weights_id == "random:3" and ex.name == "clip-vit-l14" and ex.mode == f"open_clip:{tiny_l14}"
    assert ex.encode_text(PROMPTS).shape == (4, 768)


def test_one_clip_forward_per_image_serves_clip_score_aesthetic_and_fd(tiny_l14):
    """The suite asks clip-vit-l14 for the aesthetic head; the runner's per-batch extraction then gives
    image_embeds and aesthetic from one encode_image per image, and clip_score, aesthetic and fd all score."""
    from evalkit.run.cell import _extract_into
    from evalkit.run.scoring import add_text_embeddings, score
    from evalkit.suite import MetricSpec, ModelSpec, SamplerSpec, Suite

    metrics = [MetricSpec(m, "clip-vit-l14") for m in ("clip_score", "aesthetic", "fd")]
    suite = Suite("s", [ModelSpec("m", "zoo")], [SamplerSpec("ddim", "ddim")], [2], [1.0], 8, metrics)
    options = suite.extractor_options("clip-vit-l14")
    assert options == {"heads": ("aesthetic",)}
    ex = build_extractor("clip-vit-l14", model=tiny_l14, pretrained=None, seed=0, **options)
    encoded: list[int] = []
    real_encode = ex.model.encode_image

    def counting_encode(x, **kw):
        encoded.append(len(x))
        return real_encode(x, **kw)

    ex.model.encode_image = counting_encode
    images, prompts = torch.from_numpy(smooth_images(8, 40, seed=2)), PROMPTS * 2
    feats: dict[str, np.ndarray] = {}
    for start in (0, 4):  # two batches, as the runner feeds them
        _extract_into(feats, {"clip-vit-l14": ex}, images[start : start + 4], start, 8, prompts[start : start + 4])
    assert sum(encoded) == 8  # one forward per image, whatever reads the outputs
    add_text_embeddings(feats, {"clip-vit-l14": ex}, prompts)
    assert sorted(feats) == ["clip-vit-l14/aesthetic", "clip-vit-l14/image_embeds", "clip-vit-l14/text_embeds"]
    ref = ex(torch.from_numpy(smooth_images(12, 40, seed=5)))
    rows = score(metrics, feats, {"clip-vit-l14": ref}, {"clip-vit-l14": ex}, labels=None, prompts=prompts, seed=0)
    assert {r["metric"] for r in rows} == {"clip_score", "aesthetic", "fd"}
    assert all(r["error"] == "" and np.isfinite(r["value"]) for r in rows), rows
    assert sum(encoded) == 8 + 12  # the reference set: its own images, once each


def test_fd_on_clip_reads_image_embeds_without_options():
    rng = np.random.default_rng(0)
    gen, ref = rng.normal(size=(40, 8)), rng.normal(0.3, 1.0, size=(50, 8))
    fd = get_metric("fd")
    plain = fd.compute(MetricInputs(gen={"image_embeds": gen}, ref={"image_embeds": ref}, options={"bootstrap": 0}))
    explicit = fd.compute(
        MetricInputs(
            gen={"image_embeds": gen}, ref={"image_embeds": ref}, options={"bootstrap": 0, "read": "image_embeds"}
        )
    )
    assert plain["fd"].value == explicit["fd"].value > 0
    # an extractor that gives features too: features stay the default
    both = {"features": gen[:, :4], "image_embeds": gen}
    ref_both = {"features": ref[:, :4], "image_embeds": ref}
    on_features = fd.compute(MetricInputs(gen=both, ref=ref_both, options={"bootstrap": 0}))["fd"].value
    assert (
        on_features
        == fd.compute(
            MetricInputs(gen={"features": gen[:, :4]}, ref={"features": ref[:, :4]}, options={"bootstrap": 0})
        )["fd"].value
    )
    for name in ("kid", "pr", "fd_inf", "vendi"):  # the same default in every feature metric
        m = get_metric(name)
        out = m.compute(MetricInputs(gen={"image_embeds": gen}, ref={"image_embeds": ref}, seed=0))
        again = m.compute(
            MetricInputs(gen={"image_embeds": gen}, ref={"image_embeds": ref}, seed=0, options={"read": "image_embeds"})
        )
        assert {k: v.value for k, v in out.items()} == {k: v.value for k, v in again.items()}
        assert "image_embeds for CLIP extractors" in m.options["read"]
    with pytest.raises(ConfigError, match="'features'"):  # neither output: the error names the default
        fd.compute(MetricInputs(gen={"logits": gen}, ref={"logits": ref}))


def test_heads_are_checked_by_name_and_embedding_size(tiny_l14, tmp_path):
    import open_clip

    with pytest.raises(ConfigError, match=r"no head 'beauty'.*known heads: aesthetic"):
        build_extractor("clip-vit-l14", model=tiny_l14, pretrained=None, heads=("beauty",))
    with pytest.raises(ConfigError, match="extractor 'clip' cannot compute aesthetic"):
        build_extractor("clip", heads=("aesthetic",))
    small = tmp_path / "evalkit-tiny-clip-32d.json"
    small.write_text(json.dumps({**TINY_CFG, "embed_dim": 32}))
    open_clip.add_model_config(str(small))
    with pytest.raises(ConfigError, match="768-d.*gives 32-d"):  # the head only fits ViT-L/14's embedding size
        build_extractor("clip-vit-l14", model=small.stem, pretrained=None, heads=("aesthetic",))


def test_weights_entries_and_a_missing_file_names_it_where_to_put_it_and_its_hash(tmp_path, monkeypatch):
    from evalkit.features import clip
    from evalkit.features.weights import (
        EXTRACTOR_WEIGHTS,
        HEAD_WEIGHTS,
        REGISTRY,
        WeightsMismatchError,
        WeightsNotFoundError,
        check_extractor_weights,
    )

    assert EXTRACTOR_WEIGHTS["clip-vit-l14"] == clip.REGISTERED[("ViT-L-14", "openai")][0] == "clip-vit-l14-openai"
    entry = REGISTRY["clip-vit-l14-openai"]
    assert entry.filename == "ViT-L-14.pt" and entry.sha256 in entry.url
    assert entry.sha256.startswith(entry.sha256_prefix)
    head = REGISTRY[HEAD_WEIGHTS[("clip-vit-l14", "aesthetic")]]
    assert head.filename == "sac+logos+ava1-l14-linearMSE.pth" and head.sha256 is None  # none published
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cache/clip of the developer's
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path / "w"))
    with pytest.raises(WeightsNotFoundError) as err:
        build_extractor("clip-vit-l14")
    text = str(err.value)
    assert "'ViT-L-14.pt'" in text and entry.sha256 in text and str(tmp_path / "w" / "ViT-L-14.pt") in text
    problems = check_extractor_weights("clip-vit-l14", heads=("aesthetic",))
    assert len(problems) == 2 and "'sac+logos+ava1-l14-linearMSE.pth'" in problems[1] and "not published" in problems[1]
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "ViT-L-14.pt").write_bytes(b"not the network")
    with pytest.raises(WeightsMismatchError, match=entry.sha256):
        build_extractor("clip-vit-l14")


@pytest.mark.slow
def test_the_real_vit_l14_architecture_builds_with_random_weights_and_gives_768_d_embeddings():
    start = time.perf_counter()
    ex = build_extractor("clip-vit-l14", pretrained=None, heads=("aesthetic",), seed=0)
    out = ex(torch.from_numpy(smooth_images(2, 64, seed=0)))
    seconds = time.perf_counter() - start
    print(f"[timing] clip-vit-l14 random ViT-L-14: build + 2 images {seconds:.1f} s")
    assert out["image_embeds"].shape == (2, 768) and out["aesthetic"].shape == (2,)
    assert ex.model.visual.transformer.width == 1024 and len(ex.model.visual.transformer.resblocks) == 24
    assert np.isfinite(out["image_embeds"]).all() and np.isfinite(out["aesthetic"]).all()
    assert ex.info()["heads"] == {"aesthetic": "random:0"}
