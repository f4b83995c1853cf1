"""DINOv2 extractors (``dinov2-vit-l14``, ``dinov2-vit-b14``) against dgm-eval's FD_DINOv2 protocol.

Real DINOv2 weights are not obtainable here, so every comparison uses one tiny random network in the original
torch-hub layout (``tests/fixtures/dinov2/make_fixture.py``: 2 blocks of width 32, a 37×37 position grid as in
the 518 px checkpoints), saved to a file evalkit loads and converted for the reference:

- Meta's own ``DinoVisionTransformer`` after dgm-eval's transform (the committed fixture ``reference.json``);
- transformers' ``Dinov2Model`` (an independent ViT) with Meta's position-embedding interpolation transcribed
  (transformers' own resizes to 16×16 without DINOv2's +0.1 offset; the test shows that gives other features);
- FD_DINOv2 on PNG folders: evalkit's folder reader, extractor and ``fd`` metric against dgm-eval's
  ImagePathDataset + transform written out with PIL/torchvision, the transformers network and dgm-eval's FD
  formula (``scipy.linalg.sqrtm``).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import smooth_images
from dgm_eval_reference import MEAN, STD, agreement, fd_against_dgm_eval, pil, rel_norm

from evalkit.features import build_extractor
from evalkit.features.dinov2 import NETS, WEIGHTS_ENTRY, Dinov2Extractor
from evalkit.features.pil_resize import pil_bicubic_resize
from evalkit.features.safe_load import UnsafeWeightsError
from evalkit.features.weights import (
    EXTRACTOR_WEIGHTS,
    REGISTRY,
    WeightsError,
    WeightsNotFoundError,
    check_extractor_weights,
    file_sha256,
    weights_comparable,
)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "dinov2"
_spec = importlib.util.spec_from_file_location("dinov2_fixture", FIXTURE / "make_fixture.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)
TINY = fixture.TINY


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, np.ndarray]:
    return fixture.original_state_dict(TINY["embed_dim"], TINY["depth"])


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory, tiny_state: dict[str, np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("dinov2") / "tiny_dinov2_original_layout.pth"
    torch.save({k: torch.from_numpy(v) for k, v in tiny_state.items()}, path)
    return path


def _tiny(path: Path, name: str = "dinov2-vit-l14") -> Dinov2Extractor:
    return build_extractor(name, weights=path, **TINY)


# -- the reference: transformers' Dinov2Model with Meta's interpolation ---------------------------------


def _to_transformers(sd: dict[str, np.ndarray], depth: int) -> dict[str, torch.Tensor]:
    t = {k: torch.from_numpy(v) for k, v in sd.items()}
    out = {
        "embeddings.cls_token": t["cls_token"],
        "embeddings.mask_token": t["mask_token"],
        "embeddings.position_embeddings": t["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": t["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": t["patch_embed.proj.bias"],
        "layernorm.weight": t["norm.weight"],
        "layernorm.bias": t["norm.bias"],
    }
    for i in range(depth):
        s, d = f"blocks.{i}.", f"encoder.layer.{i}."
        qkv_w, qkv_b = t[s + "attn.qkv.weight"].chunk(3), t[s + "attn.qkv.bias"].chunk(3)
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            out[d + f"attention.{proj}.weight"], out[d + f"attention.{proj}.bias"] = qkv_w[j], qkv_b[j]
        renames = {"attn.proj": "attention.o_proj", "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1"}
        for a, b in (renames | {"mlp.fc2": "mlp.fc2"}).items():
            out[d + b + ".weight"], out[d + b + ".bias"] = t[s + a + ".weight"], t[s + a + ".bias"]
        out[d + "layer_scale1.lambda1"], out[d + "layer_scale2.lambda1"] = t[s + "ls1.gamma"], t[s + "ls2.gamma"]
    return out


def _meta_interpolation(emb: torch.nn.Module, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """facebookresearch/dinov2 ``DinoVisionTransformer.interpolate_pos_encoding`` with the hub's settings
    (interpolate_offset=0.1, interpolate_antialias=False), transcribed onto transformers' embeddings module."""
    pos_embed = emb.position_embeddings.float()
    n = pos_embed.shape[1] - 1
    if embeddings.shape[1] - 1 == n and height == width:
        return emb.position_embeddings
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    dim = embeddings.shape[-1]
    w0, h0 = height // 14, width // 14  # Meta names the input's dim 2 "w"
    m = int(math.sqrt(n))
    sx, sy = float(w0 + 0.1) / m, float(h0 + 0.1) / m
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, m, m, dim).permute(0, 3, 1, 2),
        mode="bicubic",
        antialias=False,
        scale_factor=(sx, sy),
    )
    assert (w0, h0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(embeddings.dtype)


def _transformers_dinov2(sd: dict[str, np.ndarray], meta_interpolation: bool = True) -> torch.nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(
        hidden_size=TINY["embed_dim"],
        num_hidden_layers=TINY["depth"],
        num_attention_heads=TINY["num_heads"],
        mlp_ratio=4,
        image_size=518,
        patch_size=14,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        qkv_bias=True,
        use_swiglu_ffn=False,
    )
    model = Dinov2Model(cfg).eval()
    model.load_state_dict(_to_transformers(sd, TINY["depth"]), strict=True)
    if meta_interpolation:
        emb = model.embeddings
        emb.interpolate_pos_encoding = lambda e, h, w: _meta_interpolation(emb, e, h, w)
    return model


def _dgm_eval_transform(pil_image) -> torch.Tensor:
    """dgm-eval DINOv2Encoder.transform (clean_resize=False): Resize((224, 224), BICUBIC), ToTensor, Normalize."""
    import torchvision.transforms as TF

    x = TF.Compose([TF.Resize((224, 224), TF.InterpolationMode.BICUBIC), TF.ToTensor()])(pil_image)
    return TF.Normalize(MEAN, STD)(x)


# -- preprocessing ----------------------------------------------------------------------------------------

# (H, W) where every Pillow version runs its horizontal pass first (see evalkit.features.dinov2)
AGREEING_SIZES = [(64, 64), (180, 260), (97, 300), (256, 400), (512, 512), (17, 224), (300, 224), (1000, 2000)]


@pytest.mark.parametrize("size", AGREEING_SIZES)
def test_resize_is_pillows_bicubic_pixel_for_pixel(size: tuple[int, int]) -> None:
    from PIL import Image

    img = np.random.default_rng(sum(size)).integers(0, 256, (3, *size), dtype=np.uint8)  # noise: the hard case
    want = np.asarray(pil(img).resize((224, 224), Image.BICUBIC)).transpose(2, 0, 1)
    got = pil_bicubic_resize(torch.from_numpy(img)[None], (224, 224))[0].numpy()
    assert np.array_equal(got, want)


@pytest.mark.parametrize("size", [(400, 256), (1000, 37)])
def test_resize_keeps_horizontal_first_where_pillow13_reorders(size: tuple[int, int]) -> None:
    """Height shrinking by more than twice the width's pixels: Pillow 13 resizes vertically first; evalkit keeps
    the horizontal-first order (Pillow ≤ 12.1, dgm-eval's published numbers): two single-axis Pillow calls."""
    from PIL import Image

    img = np.random.default_rng(3).integers(0, 256, (3, *size), dtype=np.uint8)
    wide = pil(img).resize((224, size[0]), Image.BICUBIC)  # horizontal pass only
    want = np.asarray(wide.resize((224, 224), Image.BICUBIC)).transpose(2, 0, 1)  # then vertical only
    assert np.array_equal(pil_bicubic_resize(torch.from_numpy(img)[None], (224, 224))[0].numpy(), want)


def test_preprocess_equals_dgm_eval_transform(tiny_file: Path) -> None:
    ex = _tiny(tiny_file)
    for img in fixture.fixture_images():
        want = _dgm_eval_transform(pil(img))
        got = ex.preprocess(torch.from_numpy(img)[None])[0]
        assert got.dtype == torch.float32 and got.shape == (3, 224, 224)
        assert float((got - want).abs().max()) <= 1e-6


# -- features ----------------------------------------------------------------------------------------------


def test_features_equal_meta_dinov2_code(tiny_file: Path, tiny_state: dict[str, np.ndarray]) -> None:
    """Meta's DinoVisionTransformer (hub settings) after dgm-eval's transform, recorded by make_fixture.py."""
    ref = json.loads((FIXTURE / "reference.json").read_text())
    images = fixture.fixture_images(ref["images_seed"])
    assert fixture.digest(tiny_state) == ref["weights_sha256"], "numpy drew other weights than the fixture's"
    assert fixture.digest(images) == ref["images_sha256"], "numpy drew other images than the fixture's"
    ex = _tiny(tiny_file)
    got = np.concatenate([ex(torch.from_numpy(img)[None])["features"] for img in images])
    want = np.asarray(ref["features"])
    rel = rel_norm(got, want)
    agreement("dinov2 features vs Meta's dinov2 code (fixture)", got[0, 0], want[0, 0], rel)
    assert got.shape == (len(images), TINY["embed_dim"])
    assert rel <= 1e-4


def test_features_equal_transformers_dinov2(tiny_file: Path, tiny_state: dict[str, np.ndarray]) -> None:
    images = torch.from_numpy(smooth_images(6, 150, seed=11)[:, :, :, :131].copy())  # 150×131 → 224×224
    ex = _tiny(tiny_file)
    got = ex(images)["features"]
    x = torch.stack([_dgm_eval_transform(pil(img)) for img in images.numpy()])
    with torch.no_grad():
        want = _transformers_dinov2(tiny_state)(pixel_values=x).pooler_output.numpy()
        plain = _transformers_dinov2(tiny_state, meta_interpolation=False)(pixel_values=x).pooler_output.numpy()
    rel = rel_norm(got, want)
    agreement("dinov2 features vs transformers Dinov2Model", got[0, 0], want[0, 0], rel)
    assert rel <= 1e-4
    assert rel_norm(plain, want) > 1e-3  # the +0.1 offset matters: transformers' own interpolation is another net


def test_fd_dinov2_equals_dgm_eval_pipeline(tmp_path: Path, tiny_file: Path, tiny_state: dict[str, np.ndarray]) -> None:
    net = _transformers_dinov2(tiny_state)
    value, want, rel = fd_against_dgm_eval(
        _tiny(tiny_file), _dgm_eval_transform, lambda x: net(pixel_values=x).pooler_output.numpy(), tmp_path
    )
    agreement("FD_DINOv2 vs dgm-eval's pipeline (40+40 PNGs)", value, want, rel)
    assert want > 1.0 and rel <= 1e-4


def test_batches_and_chunks_give_the_same_features(tiny_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evalkit.features.hub_vit as mod

    ex = _tiny(tiny_file, "dinov2-vit-b14")
    images = torch.from_numpy(smooth_images(5, 90, seed=4))
    whole = ex(images)["features"]
    monkeypatch.setattr(mod, "CHUNK_ELEMENTS", 3 * 90 * 90 * 2)  # resized two images at a time
    single = np.concatenate([ex(images[i : i + 1])["features"] for i in range(5)])
    assert np.array_equal(ex.preprocess(images), torch.cat([ex.preprocess(images[i : i + 1]) for i in range(5)]))
    assert rel_norm(single, whole) <= 1e-5


# -- weights ------------------------------------------------------------------------------------------------


def test_registry_entries_match_torch_hub() -> None:
    for name, (arch, entry) in NETS.items():
        assert EXTRACTOR_WEIGHTS[name] == WEIGHTS_ENTRY[name] == entry
        w = REGISTRY[entry]
        short = "vitl14" if "large" in arch else "vitb14"
        assert w.filename == f"dinov2_{short}_pretrain.pth"
        assert w.url == f"https://dl.fbaipublicfiles.com/dinov2/dinov2_{short}/dinov2_{short}_pretrain.pth"


def test_missing_weights_say_which_file_and_where() -> None:
    with pytest.raises(WeightsNotFoundError) as err:
        build_extractor("dinov2-vit-l14")
    msg = str(err.value)
    assert "dinov2_vitl14_pretrain.pth" in msg and "dl.fbaipublicfiles.com" in msg and "checkpoints" in msg
    assert (
        check_extractor_weights("dinov2-vit-b14")
        and "dinov2_vitb14_pretrain.pth" in check_extractor_weights("dinov2-vit-b14")[0]
    )


def test_weights_ids(tiny_file: Path, tmp_path: Path) -> None:
    custom = _tiny(tiny_file)
    assert custom.weights_id == f"custom:{file_sha256(tiny_file)}"  # explicit file: no published hash to match
    hub = Path(torch.hub.get_dir()) / "checkpoints"  # conftest points TORCH_HOME at a temporary folder
    hub.mkdir(parents=True)
    (hub / "dinov2_vitb14_pretrain.pth").write_bytes(tiny_file.read_bytes())
    found = build_extractor("dinov2-vit-b14", **TINY)  # found where torch hub keeps it: the standard file
    assert found.weights_id == file_sha256(tiny_file) and weights_comparable(found.weights_id)
    assert check_extractor_weights("dinov2-vit-b14") == []
    images = torch.from_numpy(smooth_images(2, 64, seed=1))
    assert np.array_equal(found(images)["features"], custom(images)["features"])


def test_random_weights_are_seeded() -> None:
    images = torch.from_numpy(smooth_images(2, 64, seed=2))
    a = build_extractor("dinov2-vit-b14", pretrained=False, seed=3, **TINY)
    b = build_extractor("dinov2-vit-b14", pretrained=False, seed=3, **TINY)
    c = build_extractor("dinov2-vit-b14", pretrained=False, seed=4, **TINY)
    assert a.weights_id == "random:3" and not weights_comparable(a.weights_id)
    assert np.array_equal(a(images)["features"], b(images)["features"])
    assert not np.allclose(a(images)["features"], c(images)["features"])


def test_timm_layout_file_loads_too(tmp_path: Path, tiny_file: Path, tiny_state: dict[str, np.ndarray]) -> None:
    from timm.models.vision_transformer import _convert_dinov2

    timm_layout = _convert_dinov2({k: torch.from_numpy(v) for k, v in tiny_state.items()}, None)
    torch.save(timm_layout, tmp_path / "timm.pth")
    images = torch.from_numpy(smooth_images(2, 100, seed=5))
    assert np.array_equal(_tiny(tmp_path / "timm.pth")(images)["features"], _tiny(tiny_file)(images)["features"])


class _NotTensors:
    pass


def test_bad_weights_files_are_refused(tmp_path: Path, tiny_file: Path) -> None:
    with pytest.raises(WeightsError, match="does not hold DINOv2"):
        build_extractor("dinov2-vit-l14", weights=tiny_file, embed_dim=48, depth=2, num_heads=2)
    torch.save({"pos_embed": _NotTensors()}, tmp_path / "pickle.pth")
    with pytest.raises(UnsafeWeightsError):
        build_extractor("dinov2-vit-l14", weights=tmp_path / "pickle.pth", **TINY)


@pytest.mark.slow
def test_full_size_vit_l14_random_weights() -> None:
    ex = build_extractor("dinov2-vit-l14", pretrained=False, seed=0)
    assert ex.model.pos_embed.shape == (1, 257, 1024) and len(ex.model.blocks) == 24
    feats = ex(torch.from_numpy(smooth_images(2, 256, seed=9)))["features"]
    assert feats.shape == (2, 1024) and np.isfinite(feats).all() and not np.allclose(feats[0], feats[1])
