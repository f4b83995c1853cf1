"""MAE extractor (``mae-vit-l16``) against dgm-eval's FD_MAE protocol (``dgm_eval/models/mae.py``, --clean_resize).

Real MAE weights are not obtainable here, so every comparison uses one tiny random encoder in MAE's checkpoint
layout (``tests/fixtures/mae/make_fixture.py``: 2 blocks of width 32, patch 16, 14×14 grid), saved as Meta's
``{"model": state_dict}`` file that evalkit loads:

- dgm-eval's own ``VisionTransformerEncoder`` and transform (the committed fixture ``reference.json``);
- transformers' ``ViTMAEModel`` (an independent ViT; ``mask_ratio=0`` and an increasing ``noise`` keep every patch
  in its order, ``last_hidden_state`` is after the final LayerNorm) after dgm-eval's ``pil_resize`` transcribed;
- FD_MAE on PNG folders: evalkit's folder reader, extractor and ``fd`` metric against dgm-eval's ImagePathDataset +
  transform written out with PIL/torchvision, the transformers network and dgm-eval's FD formula (scipy sqrtm).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images
from dgm_eval_reference import MEAN, STD, agreement, fd_against_dgm_eval, pil, rel_norm

from evalkit.features import build_extractor
from evalkit.features.mae import WEIGHTS_ENTRY, MaeExtractor, pil_float_bicubic_resize
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

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "mae"
_spec = importlib.util.spec_from_file_location("mae_fixture", FIXTURE / "make_fixture.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)
TINY = fixture.TINY
F32_STEP_255 = 2.0**-16  # float32 spacing just below 256: one rounding step of Pillow's float passes


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, np.ndarray]:
    return fixture.mae_state_dict(TINY["embed_dim"], TINY["depth"])


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory, tiny_state: dict[str, np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("mae") / "tiny_mae_pretrain.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in tiny_state.items()}}, path)  # Meta's file layout
    return path


def _tiny(path: Path) -> MaeExtractor:
    return build_extractor("mae-vit-l16", weights=path, **TINY)


# -- the reference: dgm-eval's transform transcribed, transformers' ViTMAEModel --------------------------------


def _pil_resize(pil_image, size: tuple[int, int] = (224, 224)) -> torch.Tensor:
    """dgm-eval ``resizer.pil_resize``: each channel a float ("F") image, Pillow bicubic, clip, to_tensor / 255."""
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    x = np.array(pil_image.convert("RGB")).astype(np.float32)
    chans = []
    for i in range(3):
        img = Image.fromarray(np.ascontiguousarray(x[:, :, i]))
        assert img.mode == "F"
        chans.append(np.asarray(img.resize(size, resample=Image.BICUBIC)).clip(0, 255).reshape(size[1], size[0], 1))
    return to_tensor(np.concatenate(chans, axis=2).astype(np.float32)) / 255


def _dgm_eval_transform(pil_image) -> torch.Tensor:
    """dgm-eval VisionTransformerEncoder.transform with clean_resize=True: pil_resize((224, 224)), Normalize."""
    import torchvision.transforms as TF

    return TF.Normalize(MEAN, STD)(_pil_resize(pil_image))


def _to_transformers(sd: dict[str, np.ndarray], depth: int) -> dict[str, torch.Tensor]:
    t = {k: torch.from_numpy(v) for k, v in sd.items()}
    out = {
        "embeddings.cls_token": t["cls_token"],
        "embeddings.position_embeddings": t["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": t["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": t["patch_embed.proj.bias"],
        "layernorm.weight": t["norm.weight"],
        "layernorm.bias": t["norm.bias"],
    }
    for i in range(depth):
        s, d = f"blocks.{i}.", f"layers.{i}."
        qkv_w, qkv_b = t[s + "attn.qkv.weight"].chunk(3), t[s + "attn.qkv.bias"].chunk(3)
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            out[d + f"attention.{proj}.weight"], out[d + f"attention.{proj}.bias"] = qkv_w[j], qkv_b[j]
        renames = {"attn.proj": "attention.o_proj", "norm1": "layernorm_before", "norm2": "layernorm_after"}
        for a, b in (renames | {"mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}).items():
            out[d + b + ".weight"], out[d + b + ".bias"] = t[s + a + ".weight"], t[s + a + ".bias"]
    return out


class _TransformersMae:
    """transformers' ViTMAEModel with the tiny weights, every patch kept in order; the CLS after the final norm."""

    def __init__(self, sd: dict[str, np.ndarray]) -> None:
        from transformers import ViTMAEConfig, ViTMAEModel

        cfg = ViTMAEConfig(
            hidden_size=TINY["embed_dim"],
            num_hidden_layers=TINY["depth"],
            num_attention_heads=TINY["num_heads"],
            intermediate_size=4 * TINY["embed_dim"],
            image_size=224,
            patch_size=16,
            layer_norm_eps=1e-6,
            hidden_act="gelu",
            qkv_bias=True,
            mask_ratio=0.0,
        )
        self.model = ViTMAEModel(cfg).eval()
        self.model.load_state_dict(_to_transformers(sd, TINY["depth"]), strict=True)

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        noise = torch.arange(196, dtype=torch.float32).expand(x.shape[0], -1)  # argsort → the identity order
        with torch.no_grad():
            return self.model(pixel_values=x, noise=noise).last_hidden_state[:, 0].numpy()


# -- preprocessing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (180, 260), (97, 300), (256, 400), (224, 224), (17, 224)])
def test_resize_is_pillows_float_bicubic(size: tuple[int, int]) -> None:
    """Pillow's "F" resize, per channel: equal up to a float32 rounding step (sums in another order)."""
    from PIL import Image

    img = np.random.default_rng(sum(size)).integers(0, 256, (3, *size), dtype=np.uint8)  # noise: the hard case
    want = np.stack([np.asarray(Image.fromarray(c.astype(np.float32)).resize((224, 224), Image.BICUBIC)) for c in img])
    got = pil_float_bicubic_resize(torch.from_numpy(img)[None], (224, 224))[0].numpy()
    assert got.dtype == np.float32 and float(np.abs(got - want).max()) <= 2 * F32_STEP_255
    if size != (224, 224):  # not rounded to 8 bits, and overshooting 0..255 before dgm-eval's clip
        assert not np.array_equal(got, np.rint(got)) and (got.min() < 0 or got.max() > 255)


def test_preprocess_equals_dgm_eval_clean_resize(tiny_file: Path) -> None:
    ex = _tiny(tiny_file)
    for img in fixture.fixture_images():
        want = _dgm_eval_transform(pil(img))
        got = ex.preprocess(torch.from_numpy(img)[None])[0]
        assert got.dtype == torch.float32 and got.shape == (3, 224, 224)
        assert float((got - want).abs().max()) <= 1e-6


# -- features ---------------------------------------------------------------------------------------------------


def test_features_equal_dgm_eval_code(tiny_file: Path, tiny_state: dict[str, np.ndarray]) -> None:
    """dgm-eval's own VisionTransformerEncoder and transform (clean_resize=True), recorded by make_fixture.py."""
    ref = json.loads((FIXTURE / "reference.json").read_text())
    images = fixture.fixture_images(ref["images_seed"])
    assert fixture.digest(tiny_state) == ref["weights_sha256"], "numpy drew other weights than the fixture's"
    assert fixture.digest(images) == ref["images_sha256"], "numpy drew other images than the fixture's"
    assert "resize" in ref["default_transform_error"]  # dgm-eval's default MAE transform does not run
    ex = _tiny(tiny_file)
    got = np.concatenate([ex(torch.from_numpy(img)[None])["features"] for img in images])
    want = np.asarray(ref["features"])
    rel = rel_norm(got, want)
    agreement("mae features vs dgm-eval's MAE encoder code (fixture)", got[0, 0], want[0, 0], rel)
    assert got.shape == (len(images), TINY["embed_dim"])
    assert rel <= 1e-4


def test_features_equal_transformers_vitmae(tiny_file: Path, tiny_state: dict[str, np.ndarray]) -> None:
    images = torch.from_numpy(smooth_images(6, 150, seed=11)[:, :, :, :131].copy())  # 150×131 → 224×224
    got = _tiny(tiny_file)(images)["features"]
    want = _TransformersMae(tiny_state)(torch.stack([_dgm_eval_transform(pil(img)) for img in images.numpy()]))
    rel = rel_norm(got, want)
    agreement("mae features vs transformers ViTMAEModel", got[0, 0], want[0, 0], rel)
    assert rel <= 1e-4


def test_fd_mae_equals_dgm_eval_pipeline(tmp_path: Path, tiny_file: Path, tiny_state: dict[str, np.ndarray]) -> None:
    net = _TransformersMae(tiny_state)
    value, want, rel = fd_against_dgm_eval(_tiny(tiny_file), _dgm_eval_transform, net, tmp_path)
    agreement("FD_MAE vs dgm-eval's pipeline (40+40 PNGs)", value, want, rel)
    assert want > 1.0 and rel <= 1e-4


# -- weights ----------------------------------------------------------------------------------------------------


def test_registry_entry_is_dgm_evals_checkpoint() -> None:
    assert EXTRACTOR_WEIGHTS["mae-vit-l16"] == WEIGHTS_ENTRY
    w = REGISTRY[WEIGHTS_ENTRY]
    assert w.filename == "mae_pretrain_vit_large.pth" and w.sha256 is None  # Meta publishes no hash
    assert w.url == "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth"


def test_missing_weights_say_which_file_and_where() -> None:
    with pytest.raises(WeightsNotFoundError) as err:
        build_extractor("mae-vit-l16")
    msg = str(err.value)
    assert "mae_pretrain_vit_large.pth" in msg and "dl.fbaipublicfiles.com/mae" in msg and "checkpoints" in msg
    assert "mae_pretrain_vit_large.pth" in check_extractor_weights("mae-vit-l16")[0]


def test_weights_ids(tiny_file: Path) -> None:
    custom = _tiny(tiny_file)
    assert custom.weights_id == f"custom:{file_sha256(tiny_file)}"  # explicit file: no published hash to match
    hub = Path(torch.hub.get_dir()) / "checkpoints"  # conftest points TORCH_HOME at a temporary folder
    hub.mkdir(parents=True, exist_ok=True)
    (hub / "mae_pretrain_vit_large.pth").write_bytes(tiny_file.read_bytes())
    found = build_extractor("mae-vit-l16", **TINY)  # where dgm-eval's load_state_dict_from_url keeps it
    assert found.weights_id == file_sha256(tiny_file) and weights_comparable(found.weights_id)
    assert check_extractor_weights("mae-vit-l16") == []
    images = torch.from_numpy(smooth_images(2, 64, seed=1))
    assert np.array_equal(found(images)["features"], custom(images)["features"])


def test_random_weights_are_seeded() -> None:
    images = torch.from_numpy(smooth_images(2, 64, seed=2))
    a, b, c = (build_extractor("mae-vit-l16", pretrained=False, seed=s, **TINY) for s in (3, 3, 4))
    assert a.weights_id == "random:3" and not weights_comparable(a.weights_id)
    assert np.array_equal(a(images)["features"], b(images)["features"])
    assert not np.allclose(a(images)["features"], c(images)["features"])


def test_plain_and_decoder_carrying_files_load(tmp_path: Path, tiny_file: Path, tiny_state: dict) -> None:
    """A bare state dict loads too; MAE decoder entries (ignored by dgm-eval's strict=False load) are dropped."""
    plain = {k: torch.from_numpy(v) for k, v in tiny_state.items()}
    torch.save(plain, tmp_path / "plain.pth")
    decoder = {"mask_token": torch.zeros(1, 1, 16), "decoder_embed.weight": torch.ones(16, TINY["embed_dim"])}
    torch.save({"model": plain | decoder}, tmp_path / "with_decoder.pth")
    images = torch.from_numpy(smooth_images(2, 100, seed=5))
    want = _tiny(tiny_file)(images)["features"]
    assert np.array_equal(_tiny(tmp_path / "plain.pth")(images)["features"], want)
    assert np.array_equal(_tiny(tmp_path / "with_decoder.pth")(images)["features"], want)


class _NotTensors:
    pass


def test_bad_weights_files_are_refused(tmp_path: Path, tiny_file: Path) -> None:
    with pytest.raises(WeightsError, match="does not hold MAE"):
        build_extractor("mae-vit-l16", weights=tiny_file, embed_dim=48, depth=2, num_heads=2)
    torch.save({"model": {"pos_embed": _NotTensors()}}, tmp_path / "pickle.pth")
    with pytest.raises(UnsafeWeightsError):
        build_extractor("mae-vit-l16", weights=tmp_path / "pickle.pth", **TINY)


@pytest.mark.slow
def test_full_size_vit_l16_random_weights() -> None:
    ex = build_extractor("mae-vit-l16", pretrained=False, seed=0)
    assert ex.model.pos_embed.shape == (1, 197, 1024) and len(ex.model.blocks) == 24
    feats = ex(torch.from_numpy(smooth_images(2, 256, seed=9)))["features"]
    assert feats.shape == (2, 1024) and np.isfinite(feats).all() and not np.allclose(feats[0], feats[1])
