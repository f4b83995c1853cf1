"""The ``aesthetic`` head of ``clip-vit-l14`` equals the LAION improved aesthetic predictor v2 as its
``simple_inference.py`` runs it: the reference's MLP class and ``normalized`` are written out below, given the same
(random) weights file, and fed open_clip's own ``encode_image(preprocess(PIL))`` of the same random CLIP.

The reference class is a ``pytorch_lightning.LightningModule`` whose training methods do not take part in inference;
here it is a plain ``nn.Module`` with the same ``layers`` (so the same state-dict keys) and ``forward``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import smooth_images
from test_clip_l14 import tiny_l14  # noqa: F401  (fixture)

from evalkit.errors import ConfigError, WeightsError
from evalkit.features.aesthetic_head import load_aesthetic
from evalkit.features.base import build_extractor


# -- the reference (christophschuhmann/improved-aesthetic-predictor, simple_inference.py), transcribed ------------
class MLP(nn.Module):
    def __init__(self, input_size, xcol="emb", ycol="avg_rating"):
        super().__init__()
        self.input_size = input_size
        self.xcol = xcol
        self.ycol = ycol
        self.layers = nn.Sequential(
            nn.Linear(self.input_size, 1024),
            # nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            # nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            # nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            # nn.ReLU(),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def normalized(a, axis=-1, order=2):
    l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
    l2[l2 == 0] = 1
    return a / np.expand_dims(l2, axis)


def reference_scores(mlp_file, clip_model, preprocess, images: np.ndarray) -> np.ndarray:
    """simple_inference.py for a batch: encode_image(preprocess(PIL)), normalized, MLP(768) with the file's weights."""
    from PIL import Image

    model = MLP(768)
    model.load_state_dict(torch.load(mlp_file, weights_only=True))
    model.eval()
    image = torch.stack([preprocess(Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0)))) for im in images])
    with torch.no_grad():
        image_features = clip_model.encode_image(image)
    im_emb_arr = normalized(image_features.cpu().detach().numpy())
    with torch.no_grad():
        prediction = model(torch.from_numpy(im_emb_arr).type(torch.FloatTensor))
    return prediction.numpy().reshape(-1)


# ------------------------------------------------------------------------------------------------------------------
def _random_head_file(path, seed: int = 7, gain: float = 2.5):
    """Reference-MLP weights, scaled up from torch's default init so that the scores spread across images."""
    torch.manual_seed(seed)
    mlp = MLP(768)
    with torch.no_grad():
        for p in mlp.parameters():
            p.mul_(gain)
    torch.save(mlp.state_dict(), path)
    return path


def test_aesthetic_head_equals_the_reference_predictor_on_the_same_weights(tiny_l14, tmp_path):
    import open_clip

    head_file = _random_head_file(tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    ex = build_extractor(
        "clip-vit-l14",
        model=tiny_l14,
        pretrained=None,
        seed=4,
        heads=("aesthetic",),
        head_weights={"aesthetic": head_file},
    )
    torch.manual_seed(4)  # the extractor's random CLIP
    clip_model, _, preprocess = open_clip.create_model_and_transforms(tiny_l14, pretrained=None)
    clip_model.eval()
    images = smooth_images(8, 48, seed=6)
    ours = ex(torch.from_numpy(images))
    theirs = reference_scores(head_file, clip_model, preprocess, images)
    assert ex.outputs == ("image_embeds", "aesthetic") and ex.heads == ("aesthetic",)
    assert ours["aesthetic"].shape == (8,)
    assert np.ptp(theirs) > 1e-2 * np.abs(theirs).max()  # the scores differ between images
    rel = float(np.abs(ours["aesthetic"] - theirs).max() / np.abs(theirs).max())
    print(
        f"[agreement] aesthetic: evalkit={ours['aesthetic'].mean():.8g} reference={theirs.mean():.8g} "
        f"rel={rel:.3e} (max over 8 images)"
    )
    assert rel <= 1e-6
    assert ex.info()["heads"]["aesthetic"] == ex.head_ids["aesthetic"] and len(ex.head_ids["aesthetic"]) == 64


def test_random_heads_are_seeded_and_the_file_is_found_in_the_weights_dir(tiny_l14, tmp_path, monkeypatch):
    images = torch.from_numpy(smooth_images(3, 40, seed=1))
    a = build_extractor("clip-vit-l14", model=tiny_l14, pretrained=None, seed=2, heads=("aesthetic",))
    b = build_extractor("clip-vit-l14", model=tiny_l14, pretrained=None, seed=2, heads=("aesthetic",))
    c = build_extractor("clip-vit-l14", model=tiny_l14, pretrained=None, seed=3, heads=("aesthetic",))
    assert a.head_ids == {"aesthetic": "random:2"} and a.weights_id == "random:2"
    np.testing.assert_array_equal(a(images)["aesthetic"], b(images)["aesthetic"])
    assert not np.array_equal(a(images)["aesthetic"], c(images)["aesthetic"])
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    with pytest.raises(WeightsError, match=r"'sac\+logos\+ava1-l14-linearMSE.pth'.*not found"):
        load_aesthetic()
    path = _random_head_file(tmp_path / "w" / "sac+logos+ava1-l14-linearMSE.pth", seed=1)
    mlp, weights_id = load_aesthetic()  # found implicitly; no hash is published, so any such file is standard
    reference = MLP(768)
    reference.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(p, q) for p, q in zip(mlp.state_dict().values(), reference.state_dict().values()))
    assert len(weights_id) == 64 and not mlp.training


def test_a_head_file_of_another_layout_is_refused_naming_it(tmp_path):
    bad = tmp_path / "head.pth"
    torch.save({"layers.0.weight": torch.zeros(1024, 512), "layers.0.bias": torch.zeros(1024)}, bad)
    with pytest.raises(WeightsError, match=f"{bad}.*aesthetic predictor MLP"):
        load_aesthetic(weights=bad)


def test_zero_embeddings_are_left_as_the_reference_leaves_them():
    from evalkit.features.aesthetic_head import aesthetic_scores

    torch.manual_seed(0)
    mlp = load_aesthetic(random_seed=0)[0]
    embeds = np.zeros((2, 768), dtype=np.float32)
    embeds[1, 3] = 5.0
    ref = MLP(768)
    ref.load_state_dict(mlp.state_dict())
    ref.eval()
    with torch.no_grad():
        theirs = ref(torch.from_numpy(normalized(embeds)).float()).numpy().reshape(-1)
    np.testing.assert_array_equal(aesthetic_scores(mlp, embeds), theirs)
    with pytest.raises(ConfigError, match="768-d"):
        aesthetic_scores(mlp, np.zeros((2, 512), dtype=np.float32))


@pytest.mark.real_weights
def test_real_aesthetic_scores_equal_the_reference_pipeline():
    """With the real ViT-L-14.pt and sac+logos+ava1-l14-linearMSE.pth in EVALKIT_WEIGHTS_DIR."""
    import open_clip
    from test_features_weights import _real

    clip_file, head_file = _real("clip-vit-l14-openai"), _real("laion-aesthetic-v2")
    ex = build_extractor("clip-vit-l14", heads=("aesthetic",))
    clip_model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-L-14", pretrained=str(clip_file), force_quick_gelu=True
    )
    images = smooth_images(4, 256, seed=3)
    ours = ex(torch.from_numpy(images))["aesthetic"]
    theirs = reference_scores(head_file, clip_model.eval(), preprocess, images)
    rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    print(
        f"[agreement] aesthetic (real weights): evalkit={ours.mean():.6g} reference={theirs.mean():.6g} rel={rel:.3e}"
    )
    assert rel <= 1e-4 and ((ours > 0) & (ours < 11)).all()
