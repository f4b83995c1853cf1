"""Image sources and decoding: folders, zips, tars (webdataset shards with ``key.txt`` prompts) and ``.npz`` arrays
give the same batches; the decoding rules (EXIF orientation, alpha dropped, palette, 16-bit high byte, sizes kept);
statistics files of each library are recognised and read without unpickling anything but arrays."""

from __future__ import annotations

import io
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images, write_pngs
from PIL import Image

from evalkit.references import ReferenceSetError, open_reference
from evalkit.references.open import spec_for
from evalkit.references.sources import DECODING, decode_rgb
from evalkit.references.stats import StatsReference

N = 6


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _batches(ref, batch_size: int = 4) -> np.ndarray:
    return torch.cat(list(ref.iter_batches(batch_size))).numpy()


@pytest.fixture
def images(tmp_path: Path) -> tuple[np.ndarray, Path]:
    arr = smooth_images(N, 16, seed=7)
    return arr, write_pngs(arr, tmp_path / "folder")


def _tar(folder: Path, path: Path, prompts: bool = True, gz: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for png in sorted(folder.glob("*.png")):
            tf.add(png, arcname=f"./{png.name}")
            if prompts:
                data = f"a prompt for {png.stem}\n".encode()
                info = tarfile.TarInfo(f"./{png.stem}.txt")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_folder_zip_tar_and_npz_give_the_same_images(images, tmp_path):
    arr, folder = images
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        for png in sorted(folder.glob("*.png")):
            zf.write(png, png.name)
    np.savez_compressed(tmp_path / "nhwc.npz", images=arr.transpose(0, 2, 3, 1), labels=np.arange(N))
    np.savez(tmp_path / "nchw.npz", arr)  # unnamed: arr_0
    paths = [
        folder,
        tmp_path / "imgs.zip",
        _tar(folder, tmp_path / "shard.tar"),
        _tar(folder, tmp_path / "s.tgz", gz=True),
    ]
    paths += [tmp_path / "nhwc.npz", tmp_path / "nchw.npz"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # key.txt prompts are not "ignored non-image files"
        for p in paths:
            ref = open_reference({"path": str(p)})
            assert len(ref) == N and np.array_equal(_batches(ref), arr), p
            assert ref.fingerprint == open_reference({"path": str(p)}).fingerprint
    tar = open_reference({"path": str(tmp_path / "shard.tar")})
    assert tar.describe()["source"] == "tar" and tar.describe()["decoding"] == DECODING
    assert tar.prompts() == {f"./{i:04d}.png": f"a prompt for {i:04d}" for i in range(N)}
    assert open_reference({"path": str(tmp_path / "nhwc.npz"), "samples": 4}).fingerprint != ""
    assert len(open_reference({"path": str(tmp_path / "nhwc.npz"), "samples": 4})) == 4


def test_exif_orientation_is_applied(tmp_path):
    a = smooth_images(1, 8, seed=1)[0].transpose(1, 2, 0)[:4]  # 4×8: asymmetric
    exif = Image.Image().getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = _png(Image.fromarray(a), exif=exif.tobytes())
    assert np.array_equal(decode_rgb(data), np.rot90(a, -1))
    assert np.array_equal(decode_rgb(_png(Image.fromarray(a))), a)


def test_alpha_is_dropped_and_palette_looked_up():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = [[[10, 20, 30]]]
    rgba[0, 0, 3] = 255  # one opaque pixel, the rest fully transparent
    out = decode_rgb(_png(Image.fromarray(rgba, "RGBA")))
    assert (out == [10, 20, 30]).all()  # the colour stored under the alpha, not composited on white/black
    la = Image.fromarray(np.stack([np.full((2, 3), 77, np.uint8), np.zeros((2, 3), np.uint8)], -1), "LA")
    assert (decode_rgb(_png(la)) == 77).all()
    rgb = smooth_images(1, 8, seed=2)[0].transpose(1, 2, 0)
    pal = Image.fromarray(rgb).convert("P")
    with_transparency = _png(pal, transparency=0)
    assert np.array_equal(decode_rgb(with_transparency), np.asarray(pal.convert("RGB")))
    gray = Image.fromarray(rgb[..., 0])
    assert np.array_equal(decode_rgb(_png(gray)), np.repeat(rgb[..., :1], 3, axis=-1))


def test_sixteen_bit_images_keep_their_high_byte(tmp_path):
    v = np.array([[0, 255, 256, 4369], [32768, 65280, 65535, 1000]], np.uint16)
    data = _png(Image.fromarray(v))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = decode_rgb(data)
    assert out.dtype == np.uint8 and out.shape == (2, 4, 3)
    assert (out[..., 0] == v >> 8).all() and (out[..., 1] == out[..., 0]).all()
    buf = io.BytesIO()
    Image.fromarray(np.ones((2, 2), np.float32)).save(buf, format="TIFF")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "float.tif").write_bytes(buf.getvalue())
    (tmp_path / "f" / "ok.png").write_bytes(data)
    ref = open_reference({"path": str(tmp_path / "f")})
    with pytest.warns(UserWarning, match=r"cannot be decoded.*'float.tif' \(floating-point image"):
        assert len(_batches(ref)) == 1
    with pytest.raises(ReferenceSetError, match="float.tif"):
        _batches(open_reference({"path": str(tmp_path / "f"), "strict": True}))


def test_sizes_are_kept_and_never_mixed_in_a_batch(tmp_path):
    write_pngs(smooth_images(3, 16, seed=1), tmp_path / "m" / "a")
    write_pngs(smooth_images(2, 24, seed=2), tmp_path / "m" / "b")
    shapes = [tuple(b.shape) for b in open_reference({"path": str(tmp_path / "m")}).iter_batches(4)]
    assert shapes == [(3, 3, 16, 16), (2, 3, 24, 24)]


def test_empty_and_foreign_sources_say_what_they_hold(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReferenceSetError, match="holds no files"):
        len(open_reference({"path": str(tmp_path / "empty")}))
    (tmp_path / "gifs").mkdir()
    (tmp_path / "gifs" / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ReferenceSetError, match=r"no images of a known type .* 'a.gif'"):
        len(open_reference({"path": str(tmp_path / "gifs")}))
    (tmp_path / "x.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ReferenceSetError, match="not a zip or tar"):
        open_reference({"path": str(tmp_path / "x.bin")})


def test_npz_arrays_are_checked_before_reading(tmp_path):
    np.savez(tmp_path / "f.npz", images=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ReferenceSetError, match="must be uint8"):
        open_reference({"path": str(tmp_path / "f.npz")})
    np.savez(tmp_path / "c.npz", images=np.zeros((2, 4, 4, 5), np.uint8))
    with pytest.raises(ReferenceSetError, match=r"shape \(2, 4, 4, 5\)"):
        open_reference({"path": str(tmp_path / "c.npz")})
    np.savez(tmp_path / "two.npz", mean=np.zeros(3), cov=np.eye(3))
    with pytest.raises(ReferenceSetError, match=r"neither images .* nor statistics \('mu' and 'sigma'\)"):
        open_reference({"path": str(tmp_path / "two.npz")})
    np.savez(tmp_path / "s.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ReferenceSetError, match="holds statistics"):
        open_reference({"path": str(tmp_path / "s.npz")})


def test_statistics_files_of_each_library_are_recognised(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 5))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    np.savez_compressed(tmp_path / "cleanfid.npz", mu=mu, sigma=sigma)  # clean-fid / pytorch-fid
    torch.save({"mu": mu, "sigma": sigma}, tmp_path / "fidelity-stat-fid-2048.pt")  # torch-fidelity's cache
    for f in ("cleanfid.npz", "fidelity-stat-fid-2048.pt"):
        spec = spec_for(str(tmp_path / f))
        assert spec == {"stats": str(tmp_path / f)}
        ref = open_reference(spec)
        assert ref.dims == {"features": 5} and np.array_equal(ref.stats["features.mu"], mu)
    assert spec_for("mnist-heldout") == {"dataset": "mnist-heldout"}
    assert spec_for(str(tmp_path), strict=True) == {"path": str(tmp_path), "strict": True}

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled",))

    torch.save({"mu": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ReferenceSetError, match="does not unpickle"):
        StatsReference(tmp_path / "evil.pt")
    torch.save({"m": mu}, tmp_path / "nomu.pt")
    with pytest.raises(ReferenceSetError, match=r"no 'mu'/'sigma' arrays \(keys: \['m'\]\)"):
        StatsReference(tmp_path / "nomu.pt")
