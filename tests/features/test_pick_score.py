"""PickScore through evalkit equals the model card's code of ``yuvalkirstain/PickScore_v1`` (transcribed below:
transformers ``AutoProcessor`` / ``AutoModel``, ``get_*_features``, L2-normalise, ``logit_scale.exp() * text @ image``)
on the same tiny random CLIP, ≤ 1e-4. The network is saved as the hub repositories lay it out: a PickScore_v1-like
folder (config.json + model.safetensors + tokenizer and processor files) and a laion-like processor folder (the card
loads its processor from laion/CLIP-ViT-H-14-laion2B-s32B-b79K). The tokenizer is CLIP's real BPE (49408 tokens),
built offline from the vocabulary file open_clip ships.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images
from tiny_scorers import pick_score_folders

from evalkit.features import build_extractor
from evalkit.features.pick_score import PickScoreExtractor
from evalkit.features.safe_load import UnsafeWeightsError
from evalkit.features.weights import WeightsNotFoundError

# (height, width, prompts): downscaled landscape / portrait, exact size, upscaled
GROUPS = [
    (200, 300, ["a red square", "A Photo of a CAT!!  with   spaces", "fish &amp; chips, café"]),
    (256, 160, ["blue sky over hills", "a very long prompt " + " ".join(f"word{i}" for i in range(90))]),
    (224, 224, ["an abstract painting"]),
    (48, 64, ["two dogs playing in the snow", "a bowl of soup"]),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return pick_score_folders(tmp_path_factory.mktemp("pick_score"))


def _features(out):
    """transformers 5's get_*_features return an output object whose pooler_output is what 4 returned."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def card_scores(processor, model, prompt: str, images: list) -> np.ndarray:
    """The model card's ``calc_probs`` up to the scores (before its softmax over the images), transcribed."""
    image_inputs = processor(images=images, padding=True, truncation=True, max_length=77, return_tensors="pt")
    text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        image_embs = _features(model.get_image_features(**image_inputs))
        image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
        text_embs = _features(model.get_text_features(**text_inputs))
        text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
        scores = model.logit_scale.exp() * (text_embs @ image_embs.T)[0]
    return scores.numpy()


def _images(height: int, width: int, n: int, seed: int) -> np.ndarray:
    """uint8 (n, 3, height, width) smooth colour images."""
    sq = torch.from_numpy(smooth_images(n, max(height, width), seed=seed)).float()
    return torch.nn.functional.interpolate(sq, size=(height, width), mode="area").round().to(torch.uint8).numpy()


def _pil(batch: np.ndarray) -> list:
    from PIL import Image

    return [Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0))) for a in batch]


def _card(folders, backend: str | None):
    """The card's processor (the laion repository's; ``backend="pil"``: the PIL transform, transformers 4's slow
    processor) and model."""
    import transformers
    from transformers import AutoModel, AutoProcessor

    v5 = int(transformers.__version__.split(".")[0]) >= 5
    kw = ({"backend": backend} if v5 else {"use_fast": backend != "pil"}) if backend else {}
    processor = AutoProcessor.from_pretrained(folders["laion"], **kw)  # the card: the laion repo's processor
    return processor, AutoModel.from_pretrained(folders["pick"]).eval()


def test_pick_score_matches_the_model_card_code(folders):
    ex = PickScoreExtractor(weights=folders["pick"], processor=folders["laion"])
    assert ex.weights_id.startswith("custom:")  # not the ViT-H/14 shapes: never labelled as the released file
    processor, model = _card(folders, "pil")  # the PIL transform: what the card ran (transformers 4)
    default_processor, _ = _card(folders, None)
    ours, theirs, fast = [], [], []
    for g, (height, width, prompts) in enumerate(GROUPS):
        batch = _images(height, width, len(prompts), seed=10 + g)
        out = ex(torch.from_numpy(batch), prompts)
        assert out["image_embeds"].shape == (len(prompts), 24) and out["pick_score"].shape == (len(prompts),)
        ours += out["pick_score"].tolist()
        theirs += [card_scores(processor, model, p, [im])[0] for p, im in zip(prompts, _pil(batch))]
        fast += [card_scores(default_processor, model, p, [im])[0] for p, im in zip(prompts, _pil(batch))]
        # the card scores one prompt against several images at once: the same numbers
        np.testing.assert_allclose(
            card_scores(processor, model, prompts[0], _pil(batch)),
            ex(torch.from_numpy(batch), [prompts[0]] * len(batch))["pick_score"],
            rtol=1e-5,
            atol=1e-5,
        )
    ours, theirs, fast = np.array(ours), np.array(theirs), np.array(fast)
    rel = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
    print(
        f"[agreement] pick_score vs PickScore_v1 model card code ({len(ours)} images, 4 sizes, PIL processor): "
        f"evalkit={ours.mean():.8g} reference={theirs.mean():.8g} rel={rel:.3e}"
    )
    assert rel <= 1e-4
    # transformers 5's default (torchvision) image processor: the card's code run today, not what it ran in 2023
    fast_rel = float(np.max(np.abs(fast - theirs)) / np.max(np.abs(theirs)))
    print(f"[note] pick_score, card code with transformers' default image processor: rel={fast_rel:.3e} from PIL's")
    assert fast_rel < 1e-2  # the two backends' resizes differ by rounding only


def test_without_prompts_only_embeddings_and_encode_text_gives_the_score(folders, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ex = build_extractor("pick_score", weights=folders["pick"] / "model.safetensors")  # the file also names the folder
    assert ex.processor_folder == folders["pick"]  # no laion processor in the (empty) cache: the folder's own files
    prompts = GROUPS[0][2]
    batch = torch.from_numpy(_images(200, 300, len(prompts), seed=3))
    assert set(ex(batch)) == {"image_embeds"}
    img, txt = ex(batch)["image_embeds"], ex.encode_text(prompts)  # prompts of different lengths, padded together
    cos = np.einsum("ij,ij->i", img, txt) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)
    scale = ex.model.logit_scale.detach().exp().item()
    np.testing.assert_allclose(ex(batch, prompts)["pick_score"], scale * cos, rtol=1e-5, atol=1e-5)


def _hub_cache(root: Path, repo: str, files: Path) -> Path:
    """A Hugging Face cache holding ``files`` as the snapshot of ``repo`` (refs/main → snapshots/<commit>)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in files.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    return snapshot


def test_found_in_the_weights_dir_and_in_the_hub_cache(folders, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = _hub_cache(tmp_path / "hub", "yuvalkirstain/PickScore_v1", folders["pick"])
    laion = _hub_cache(tmp_path / "hub", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", folders["laion"])
    ex = PickScoreExtractor()
    assert (ex.folder, ex.processor_folder) == (snapshot, laion)  # the card's processor where the cache has it
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "PickScore_v1").symlink_to(folders["pick"], target_is_directory=True)
    assert PickScoreExtractor().folder == tmp_path / "w" / "PickScore_v1"  # EVALKIT_WEIGHTS_DIR first


def test_missing_weights_say_what_to_download_and_where(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path / "w"))
    with pytest.raises(WeightsNotFoundError) as err:
        build_extractor("pick_score")
    msg = str(err.value)
    assert "yuvalkirstain/PickScore_v1" in msg and "config.json" in msg and "model.safetensors" in msg
    assert str(tmp_path / "w" / "PickScore_v1") in msg and "models--yuvalkirstain--PickScore_v1" in msg
    assert "hf download yuvalkirstain/PickScore_v1" in msg and "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in msg
    with pytest.raises(WeightsNotFoundError, match="config.json"):
        PickScoreExtractor(weights=tmp_path)  # a folder without the files


def test_pytorch_model_bin_is_read_weights_only(folders, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    folder.mkdir()
    for f in folders["pick"].iterdir():
        if f.name != "model.safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    state = load_file(folders["pick"] / "model.safetensors")
    position_ids = {"text_model.embeddings.position_ids": torch.arange(77)[None]}  # older files saved this buffer
    torch.save({**state, **position_ids}, folder / "pytorch_model.bin")
    batch = torch.from_numpy(_images(64, 64, 2, seed=5))
    a = PickScoreExtractor(weights=folder)(batch, ["a", "b"])
    b = PickScoreExtractor(weights=folders["pick"])(batch, ["a", "b"])
    np.testing.assert_array_equal(a["pick_score"], b["pick_score"])
    torch.save({**state, "extra": Path("x")}, folder / "pytorch_model.bin")  # an object: unpickling would run code
    with pytest.raises(UnsafeWeightsError):
        PickScoreExtractor(weights=folder)


@pytest.mark.real_weights
@pytest.mark.slow
def test_real_pick_score_matches_the_model_card_code():
    """With the real folder in $EVALKIT_WEIGHTS_DIR/PickScore_v1: evalkit equals the card's code on it."""
    import os

    from evalkit.features.weights import weights_comparable

    folder = Path(os.environ.get("EVALKIT_WEIGHTS_DIR") or "/nonexistent") / "PickScore_v1"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("PickScore_v1 (config.json + model.safetensors + processor files) not in EVALKIT_WEIGHTS_DIR")
    ex = PickScoreExtractor()
    assert ex.folder == folder and weights_comparable(ex.weights_id)
    batch = _images(512, 512, 2, seed=0)
    processor, model = _card({"laion": ex.processor_folder, "pick": folder}, "pil")
    prompts = ["a colourful abstract painting", "a colourful abstract painting"]
    ours = ex(torch.from_numpy(batch), prompts)["pick_score"]
    theirs = card_scores(processor, model, prompts[0], _pil(batch))
    rel = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
    print(f"[agreement] pick_score real weights vs card code: evalkit={ours.mean():.6g} reference={theirs.mean():.6g}")
    assert rel <= 1e-4
