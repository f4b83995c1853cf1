"""Images that pass the header check but do not decode, across reference-feature cache hits.

The first run finds such a file only by decoding it; a later run loads the cached features and decodes
nothing. The cache entry records the skipped files (name, reason, which check), so every hit repeats
the warning, ``len(ref)`` equals the feature rows, and ``strict`` is an error naming the file, as on
the first run. ``evalkit stats --strict`` reaches the same check.
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images, write_pngs

from evalkit.references import ReferenceSetError, cache_path, open_reference, reference_features

BAD = "0002_bad_idat.png"  # sorts among the good files, so the bad one is read mid-pass


class CountingExtractor:
    def __init__(self, name: str = "count") -> None:
        self.name, self.weights_id, self.mode, self.outputs = name, "random:0", "native", ("features",)
        self.images = 0

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        self.images += len(images)
        return {"features": images.float().mean(dim=(2, 3)).numpy()}


def corrupt_idat(png: bytes) -> bytes:
    """The same PNG with its IDAT payload zeroed (not a zlib stream) and the chunk CRCs recomputed: the
    header and chunk check (PIL ``verify``) passes, decoding the pixels fails."""
    out, pos = [png[:8]], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        ctype, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if ctype == b"IDAT":
            data = bytes(len(data))
        out.append(struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data)))
        pos += 12 + length
    return b"".join(out)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = write_pngs(smooth_images(5, 16, seed=3), tmp_path / "imgs")  # 0000.png … 0004.png
    (d / BAD).write_bytes(corrupt_idat((d / "0000.png").read_bytes()))
    (d / "zz_header.png").write_bytes(b"not a png")  # fails the header check (found by every scan)
    return d


def test_corrupt_idat_png_passes_the_header_check_but_does_not_decode(folder):
    from PIL import Image

    with Image.open(folder / BAD) as im:
        im.verify()
    with pytest.raises(OSError), Image.open(folder / BAD) as im:
        im.convert("RGB")


def _first_run(folder: Path, cache: Path) -> dict[str, np.ndarray]:
    ref = open_reference({"path": str(folder)})
    with pytest.warns(UserWarning) as rec:
        feats = reference_features(ref, [CountingExtractor()], cache_dir=cache, batch_size=2)["count"]
    assert any("cannot be decoded" in str(w.message) and BAD in str(w.message) for w in rec)
    assert len(ref) == len(feats["features"]) == 5
    return feats


def test_cache_hit_repeats_the_warning_and_counts_the_feature_rows(folder, tmp_path):
    first = _first_run(folder, tmp_path / "c")
    for _ in range(2):  # every later run (a fresh reference object, as in a new process)
        ref = open_reference({"path": str(folder)})
        hit = CountingExtractor()
        with pytest.warns(UserWarning) as rec:
            feats = reference_features(ref, [hit], cache_dir=tmp_path / "c")["count"]
        assert hit.images == 0  # a cache hit: nothing decoded, no network ran
        texts = [str(w.message) for w in rec]
        assert any(f"skipped 1 image file(s) that cannot be decoded, e.g. '{BAD}'" in t for t in texts), texts
        assert any("broken data stream" in t for t in texts), texts  # the recorded reason
        assert len(ref) == len(feats["features"]) == 5  # the reported count is the number of feature rows
        assert BAD not in ref.files and BAD in ref.skipped and set(ref.undecodable) == {BAD}
        np.testing.assert_array_equal(feats["features"], first["features"])


def test_cache_entry_records_skipped_files_with_reason(folder, tmp_path):
    _first_run(folder, tmp_path / "c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = open_reference({"path": str(folder)})
        path = cache_path(ref, CountingExtractor(), tmp_path / "c")
    with np.load(path) as z:
        meta = json.loads(str(z["__meta__"]))
    assert meta["n"] == 5
    by_file = {e["file"]: e for e in meta["skipped"]}
    assert set(by_file) == {BAD, "zz_header.png"}
    assert by_file[BAD]["check"] == "decode" and "broken data stream" in by_file[BAD]["reason"]
    assert by_file["zz_header.png"]["check"] == "header" and by_file["zz_header.png"]["reason"]


def test_strict_on_a_cache_hit_raises_naming_the_file(folder, tmp_path):
    _first_run(folder, tmp_path / "c")
    (folder / "zz_header.png").unlink()  # only the decode-time failure left (strict fails the scan otherwise)
    _first_run(folder, tmp_path / "c")  # the entry for this file set (the fingerprint changed)
    ref = open_reference({"path": str(folder), "strict": True})
    hit = CountingExtractor()
    with pytest.raises(ReferenceSetError, match=rf"'{BAD}'.*cannot be decoded.*feature cache") as err:
        reference_features(ref, [hit], cache_dir=tmp_path / "c")
    assert hit.images == 0 and "\n" not in str(err.value)
    # without the cache, strict fails in the decoding pass, naming the same file
    with pytest.raises(ReferenceSetError, match=rf"'{BAD}'.*cannot be decoded"):
        reference_features(
            open_reference({"path": str(folder), "strict": True}), [CountingExtractor()], use_cache=False
        )


def test_mixed_hit_and_miss_warns_once_and_every_entry_has_the_same_rows(folder, tmp_path):
    _first_run(folder, tmp_path / "c")  # caches "count" only
    ref = open_reference({"path": str(folder)})
    a, b = CountingExtractor("count"), CountingExtractor("other")
    with pytest.warns(UserWarning) as rec:
        out = reference_features(ref, [a, b], cache_dir=tmp_path / "c")
    assert a.images == 0 and b.images == 5  # the bad file is not decoded again: its record is applied
    assert sum("cannot be decoded" in str(w.message) for w in rec) == 1
    assert len(ref) == len(out["count"]["features"]) == len(out["other"]["features"]) == 5
    # the new entry records the undecodable file too, though this pass did not decode it
    again, hit = open_reference({"path": str(folder)}), CountingExtractor("other")
    with pytest.warns(UserWarning) as rec:
        reference_features(again, [hit], cache_dir=tmp_path / "c")
    assert hit.images == 0 and any(f"e.g. '{BAD}'" in str(w.message) for w in rec)
    assert len(again) == 5


# -- evalkit stats --strict ----------------------------------------------------------------------------


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_stats_strict_errors_naming_the_file(folder, tmp_path, capsys):
    from evalkit.cli import main

    (folder / "zz_header.png").unlink()
    cache = tmp_path / "c"
    argv = ["stats", str(folder), "-e", "mnist-net", "--cache-dir", str(cache)]
    # strict on a cold cache: the decoding pass fails
    assert main([*argv, "--strict"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("evalkit: error:") and BAD in lines[0], lines
    # not strict: a warning, the features are cached; the count printed is the rows'
    with pytest.warns(UserWarning, match=f"cannot be decoded, e.g. '{BAD}'"):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "5 images" in out and "(5, 64)" in out
    # strict on the cache hit: still an error naming the file
    assert main([*argv, "--strict"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and BAD in lines[0] and "Traceback" not in lines[0], lines
    # and a hit without --strict repeats the warning and the right count
    with pytest.warns(UserWarning, match=f"cannot be decoded, e.g. '{BAD}'"):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "5 images" in out and "cache hit" in out
