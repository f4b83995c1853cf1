"""The ``image_reward`` extractor against the ``image-reward`` package's own ``ImageReward.score``.

The package cannot be installed beside evalkit (it pins timm 0.6.13 / fairscale 0.4.13 and its BLIP code needs
transformers 4), so ``tests/fixtures/image_reward/make_fixture.py`` ran it once in a separate venv on a tiny random
BLIP + MLP (and once on the published ViT-L/16 + BERT-base sizes) and recorded its rewards, token ids and image CLS
tokens. Weights and images are regenerated here from the same seeds (their sha256 checked), saved in the checkpoint
layout of ``ImageReward.pt`` and loaded through evalkit's converter, so the agreement covers the file format too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.errors import WeightsError
from evalkit.features import build_extractor
from evalkit.features.image_reward import ImageRewardExtractor, build_image_reward, load_network, load_tokenizer
from evalkit.features.image_reward_blip import (
    REWARD_MEAN,
    REWARD_STD,
    ImageRewardNet,
    convert_key,
    convert_state_dict,
    network_from_checkpoint,
)
from evalkit.features.safe_load import UnsafeWeightsError
from evalkit.features.weights import WeightsMismatchError, WeightsNotFoundError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "image_reward"


def _load_maker():
    spec = importlib.util.spec_from_file_location("image_reward_make_fixture", FIXTURES / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _load_maker()
FX = json.loads((FIXTURES / "fixture.json").read_text())


def tiny_arch(fx: dict) -> dict:
    """The fixture's package sizes (timm-style ViT kwargs, med_config.json) as transformers BLIP config overrides."""
    v, t = fx["vision"], fx["med_config"]
    vision = {"hidden_size": v["embed_dim"], "num_hidden_layers": v["depth"], "num_attention_heads": v["num_heads"]}
    vision |= {"intermediate_size": 4 * v["embed_dim"], "patch_size": v["patch_size"], "image_size": v["img_size"]}
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    text = {k: t[k] for k in (*keys, "max_position_embeddings", "layer_norm_eps")}
    return {"vision": vision, "text": text}


def write_checkpoint(path: Path, shapes: dict, seed: int, sha256: str, buffers: list[str], max_pos: int) -> Path:
    """The seeded weights in ImageReward.pt's layout (plus the saved ``position_ids`` buffer), as ``torch.save``."""
    state = MAKER.seeded_state_dict(shapes, seed)
    assert MAKER.weights_sha256(state) == sha256  # exactly the weights the package scored
    checkpoint = {k: torch.from_numpy(v) for k, v in state.items()}
    checkpoint |= {k: torch.arange(max_pos).expand((1, -1)) for k in buffers}
    torch.save(checkpoint, path)
    return path


def group_images(group: dict) -> torch.Tensor:
    images = MAKER.make_images(group["height"], group["width"], len(group["prompts"]), seed=group["image_seed"])
    assert hashlib.sha256(images.tobytes()).hexdigest() == group["images_sha256"]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("image_reward")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(FX["vocab"]) + "\n")
    max_pos = FX["med_config"]["max_position_embeddings"]
    args = (FX["state_dict_shapes"], FX["weights_seed"], FX["weights_sha256"], FX["buffers"], max_pos)
    return {"vocab": vocab, "checkpoint": write_checkpoint(folder / "ImageReward.pt", *args)}


@pytest.fixture(scope="module")
def extractor(files):
    return build_image_reward(weights=files["checkpoint"], tokenizer=files["vocab"], arch=tiny_arch(FX))


def rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def test_rewards_agree_with_the_package(extractor):
    ours, ref, cls, ref_cls = [], [], [], []
    for group in FX["groups"]:
        images = group_images(group)
        assert extractor.tokenize(group["prompts"])["input_ids"].tolist() == group["input_ids"]
        out = extractor(images, prompts=group["prompts"])
        assert out["image_reward"].shape == (len(images),) and out["image_embeds"].shape == (len(images), 48)
        ours.append(out["image_reward"]), ref.append(np.array(group["rewards"]))
        cls.append(out["image_embeds"]), ref_cls.append(np.array(group["image_cls"]))
    ours, ref, cls, ref_cls = map(np.concatenate, (ours, ref, cls, ref_cls))
    r = rel(ours, ref)
    ours_text, ref_text = [round(float(x), 6) for x in ours], [round(float(x), 6) for x in ref]
    print(f"[agreement] image_reward: evalkit={ours_text} reference={ref_text} rel={r:.2e}")
    rc = rel(cls, ref_cls)
    print(f"[agreement] image_reward image_embeds: evalkit={cls[0, :3]} reference={ref_cls[0, :3]} rel={rc:.2e}")
    assert r <= 1e-4 and rc <= 1e-4
    assert FX["mean_std"] == [REWARD_MEAN, REWARD_STD]  # the normalisation constants are the package's


def test_without_prompts_only_prompt_free_outputs(extractor):
    group = FX["groups"][0]
    images = group_images(group)
    plain = extractor(images)
    assert set(plain) == {"image_embeds"}
    both = extractor(images, prompts=group["prompts"])
    assert set(both) == set(extractor.outputs) and np.array_equal(plain["image_embeds"], both["image_embeds"])
    swapped = extractor(images, prompts=group["prompts"][::-1])["image_reward"]
    assert not np.allclose(swapped, both["image_reward"])  # the reward depends on the prompt
    one = extractor(images[1:2], prompts=group["prompts"][1:2])["image_reward"]
    np.testing.assert_allclose(one, both["image_reward"][1:2], rtol=1e-5)  # batching does not change a score
    with pytest.raises(ValueError, match="2 prompts for 3 images"):
        extractor(images, prompts=group["prompts"][:2])


def test_identity_and_registry_lookup(extractor, files):
    assert extractor.weights_id == hashlib.sha256(files["checkpoint"].read_bytes()).hexdigest()
    assert extractor.takes_prompts and extractor.resolution == 224
    assert extractor.mode.startswith("pil-bicubic-224+vocab:")  # a vocabulary other than bert-base-uncased's
    built = build_extractor("image_reward", pretrained=False, tokenizer=files["vocab"], arch=tiny_arch(FX), seed=3)
    assert built.weights_id == "random:3" and built.name == "image_reward"
    with pytest.raises(WeightsError, match="is not bert-base-uncased's"):  # the published sizes need BERT's ids
        build_image_reward(weights=files["checkpoint"], tokenizer=files["vocab"])


def test_the_published_checkpoint_layout_loads_into_the_transformers_network():
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in ImageRewardNet().state_dict().items()}
    full = FX["full_size_shapes"]
    converted = {convert_key(k): shape for k, shape in full.items() if convert_key(k) is not None}
    assert converted == ours  # every tensor of ImageReward.pt the reward uses has a place of the same shape
    left_out = sorted(k for k in full if convert_key(k) is None)
    assert convert_key("blip.text_encoder.embeddings.position_ids") is None  # a saved buffer, rebuilt by transformers
    assert left_out == [  # BLIP's contrastive projections: not part of the reward
        "blip.text_proj.bias",
        "blip.text_proj.weight",
        "blip.vision_proj.bias",
        "blip.vision_proj.weight",
    ]


def test_a_checkpoint_of_another_shape_is_a_weights_error_naming_the_file(files, tmp_path):
    state = torch.load(files["checkpoint"], weights_only=True)
    del state["mlp.layers.7.bias"]
    state["blip.visual_encoder.blocks.0.ls1.gamma"] = torch.ones(48)
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"other\.pt.*(mlp\.7\.bias|ls1\.gamma)"):
        load_network(tmp_path / "other.pt", tiny_arch(FX))
    assert set(convert_state_dict({"blip.text_proj.weight": torch.zeros(1)})) == set()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_runs_code_is_refused(files, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"mlp.layers.0.weight": _Payload(marker)}, tmp_path / "ImageReward.pt")
    with pytest.raises(UnsafeWeightsError):
        build_image_reward(weights=tmp_path / "ImageReward.pt", tokenizer=files["vocab"], arch=tiny_arch(FX))
    assert not marker.exists()


@pytest.fixture()
def no_files(tmp_path, monkeypatch):
    """An empty $EVALKIT_WEIGHTS_DIR, Hugging Face cache and ~/.cache/ImageReward."""
    import huggingface_hub.constants

    for sub in ("weights", "hf", "home"):
        (tmp_path / sub).mkdir()
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_missing_tokenizer_vocabulary_says_what_to_put_where(no_files):
    with pytest.raises(WeightsNotFoundError) as err:
        build_image_reward(pretrained=False)
    text = str(err.value)
    assert "bert-base-uncased-vocab.txt" in text and str(no_files / "weights") in text
    assert "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3" in text and "tokenizer=" in text
    assert "google-bert/bert-base-uncased" in text  # where it comes from


def test_missing_checkpoint_names_the_file(no_files, files):
    with pytest.raises(WeightsNotFoundError, match=r"(?s)ImageReward\.pt.*THUDM/ImageReward") as err:
        build_image_reward(tokenizer=files["vocab"])
    assert str(no_files / "home" / ".cache" / "ImageReward" / "ImageReward.pt") in str(err.value)


def test_a_vocabulary_found_implicitly_must_be_bert_base_uncased(no_files):
    (no_files / "weights" / "bert-base-uncased-vocab.txt").write_text("[PAD]\n[UNK]\n")
    with pytest.raises(WeightsMismatchError, match="bert-base-uncased-vocab.txt"):
        build_image_reward(pretrained=False)
    (no_files / "weights" / "bert-base-uncased-vocab.txt").unlink()
    snapshot = no_files / "hf" / "models--google-bert--bert-base-uncased" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    with pytest.raises(WeightsMismatchError, match="Hugging Face cache"):  # the package's download is found too
        build_image_reward(pretrained=False)


@pytest.mark.slow
def test_published_size_agrees_with_the_package(files):
    """ViT-L/16 + BERT-base + MLP(768) with seeded random weights (446M parameters), one image: the package's score.
    The tensors go to the converter directly (the file path is the tiny checkpoint's test): 1.8 GB less to write."""
    full, record = FX["full_size"], FX["full_size"]["record"]
    start = time.perf_counter()
    state = MAKER.seeded_state_dict(FX["full_size_shapes"], full["weights_seed"])
    assert MAKER.weights_sha256(state) == full["weights_sha256"]
    net = network_from_checkpoint({k: torch.from_numpy(v) for k, v in state.items()})  # the published sizes
    ex = ImageRewardExtractor(net, load_tokenizer(files["vocab"]), weights_id="seeded")
    out = ex(group_images(record), prompts=record["prompts"])
    seconds = time.perf_counter() - start
    r = rel(out["image_reward"], np.array(record["rewards"]))
    rc = rel(out["image_embeds"][:, :32], np.array(record["image_cls"]))
    print(
        f"[agreement] image_reward full size: evalkit={out['image_reward']} reference={record['rewards']} rel={r:.2e}"
    )
    print(f"[agreement] image_reward full size image_embeds: rel={rc:.2e} ({seconds:.1f} s with the weights)")
    assert out["image_embeds"].shape == (1, 1024) and r <= 1e-4 and rc <= 1e-4
