"""Reference sets (folder, zip, stats, built-in datasets) and the on-disk reference-feature cache."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images, write_pngs

from evalkit.references import (
    ReferenceSetError,
    cache_path,
    open_reference,
    reference_features,
    save_reference_stats,
)


class CountingExtractor:
    """A fake extractor that counts the images it sees."""

    def __init__(self, name: str = "count", weights_id: str = "random:0") -> None:
        self.name, self.weights_id, self.mode, self.outputs = name, weights_id, "native", ("features",)
        self.images = 0

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        self.images += len(images)
        return {"features": images.float().mean(dim=(2, 3)).numpy()}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = write_pngs(smooth_images(9, 16, seed=0), tmp_path / "imgs")
    (d / "sub").mkdir()
    write_pngs(smooth_images(2, 16, seed=1), d / "sub")  # recursive: sub/0000.png, sub/0001.png
    (d / "broken.png").write_bytes(b"not a png")
    (d / "notes.txt").write_text("ignored")
    return d


def test_folder_reference_is_recursive_sorted_and_skips_corrupt(folder):
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ref = open_reference({"path": str(folder)})
        assert len(ref) == 11
    assert ref.files[:2] == ["0000.png", "0001.png"] and ref.files[-1] == "sub/0001.png"
    batches = list(ref.iter_batches(4))
    assert [len(b) for b in batches] == [4, 4, 3]
    assert batches[0].dtype == torch.uint8 and tuple(batches[0].shape[1:]) == (3, 16, 16)
    assert ref.labels is None


def test_strict_folder_reference_errors_on_corrupt(folder):
    with pytest.raises(ReferenceSetError, match=r"broken\.png"):
        len(open_reference({"path": str(folder), "strict": True}))


def test_samples_and_fingerprint(folder, recwarn):
    a = open_reference({"path": str(folder), "samples": 5})
    b = open_reference({"path": str(folder)})
    assert len(a) == 5 and a.fingerprint != b.fingerprint
    assert open_reference({"path": str(folder)}).fingerprint == b.fingerprint  # content-based, stable


def test_zip_reference_equals_folder(folder, tmp_path, recwarn):
    z = tmp_path / "ref.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    a, b = open_reference({"path": str(z)}), open_reference({"path": str(folder)})
    assert len(a) == len(b) and a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(torch.cat(list(a.iter_batches(5))), torch.cat(list(b.iter_batches(5))))


def test_builtin_dataset_and_clear_errors(tmp_path):
    ref = open_reference({"dataset": "mnist-heldout", "samples": 10})
    assert len(ref) == 10 and ref.labels.shape == (10,)
    batch = next(ref.iter_batches(4))
    assert tuple(batch.shape) == (4, 3, 32, 32) and bool((batch[:, 0] == batch[:, 2]).all())
    with pytest.raises(ReferenceSetError, match="mnist-heldout, mnist-train"):
        open_reference({"dataset": "cifar10"})
    with pytest.raises(ReferenceSetError, match=str(tmp_path / "nope")):
        open_reference({"path": str(tmp_path / "nope")})
    with pytest.raises(ReferenceSetError, match="exactly one"):
        open_reference({"dataset": "mnist-heldout", "path": "x"})
    with pytest.raises(ReferenceSetError, match="unknown reference key"):
        open_reference({"dataset": "mnist-heldout", "sample": 3})


def test_relative_paths_resolve_against_base_dir(folder, recwarn):
    ref = open_reference({"path": folder.name}, base_dir=folder.parent)
    assert len(ref) == 11


def test_one_pass_feeds_every_extractor_and_cache_hit_skips_networks(folder, tmp_path, recwarn):
    ref = open_reference({"path": str(folder)})
    a, b = CountingExtractor("a"), CountingExtractor("b")
    out = reference_features(ref, [a, b], cache_dir=tmp_path / "c", batch_size=4)
    assert a.images == b.images == len(ref)  # one pass, every extractor fed from it
    assert out["a"]["features"].shape == (11, 3)
    a2, b2 = CountingExtractor("a"), CountingExtractor("b")
    again = reference_features(ref, [a2, b2], cache_dir=tmp_path / "c")
    assert a2.images == b2.images == 0  # cache hit: no network ran
    np.testing.assert_array_equal(again["a"]["features"], out["a"]["features"])
    # another weights id is another cache entry
    c = CountingExtractor("a", weights_id="random:1")
    reference_features(ref, [c], cache_dir=tmp_path / "c")
    assert c.images == len(ref)


def test_corrupt_cache_entry_is_recomputed(folder, tmp_path, recwarn):
    ref = open_reference({"path": str(folder)})
    reference_features(ref, [CountingExtractor()], cache_dir=tmp_path / "c")
    path = cache_path(ref, CountingExtractor(), tmp_path / "c")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    again = CountingExtractor()
    with pytest.warns(UserWarning, match="corrupt"):
        reference_features(ref, [again], cache_dir=tmp_path / "c")
    assert again.images == len(ref)
    assert path.with_suffix(".npz.sha256").is_file()


def test_default_cache_dir_from_env(folder, tmp_path, monkeypatch, recwarn):
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "envcache"))
    reference_features(open_reference({"path": str(folder)}), [CountingExtractor()])
    assert list((tmp_path / "envcache" / "reference-features").glob("*.npz"))


def test_stats_reference_round_trip(tmp_path):
    feats = np.random.default_rng(0).normal(size=(50, 6))
    ex = CountingExtractor()
    save_reference_stats(tmp_path / "s.npz", feats, extractor=ex)
    ref = open_reference({"stats": str(tmp_path / "s.npz")})
    out = reference_features(ref, [ex])
    assert ex.images == 0 and len(ref) == 50
    np.testing.assert_allclose(out["count"]["features.mu"], feats.mean(0))
    with pytest.raises(ReferenceSetError, match="weights_id"):
        reference_features(ref, [CountingExtractor(weights_id="random:9")])
    with pytest.raises(ReferenceSetError, match="no images"):
        next(ref.iter_batches(4))
