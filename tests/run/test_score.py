"""``evalkit score GEN --ref REF``: the rows equal ``evalkit run``'s on the same images (bit for bit), the features
and FD equal clean-fid's and pytorch-fid's with the same random-weight Inception, a statistics file as REF gives
the FD of the images it summarises, prompts reach clip_score, and every bad input is one line and exit 2."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import rel_diff, smooth_images, write_pngs

from evalkit.cli import main
from evalkit.features.inception import InceptionExtractor
from evalkit.metrics import MetricInputs, get_metric
from evalkit.registry import EXTRACTORS
from evalkit.run.score import score_images
from evalkit.store import RunStore, read_run

FULL = bool(os.environ.get("EVALKIT_TEST_FULL"))  # also each library's whole FID (a 2048² sqrtm: ~40 s each here)
QUALITY = ["fd", "kid", "is", "precision", "recall", "density", "coverage"]
COLUMNS = ["value", "std", "ci_low", "ci_high", "n", "seed", "extractor", "weights_id", "mode", "error"]
TOL = 1e-4
FID_N = 4  # images per side for the library comparisons: a CPU Inception forward costs ~0.3 s an image here

SUITE = """\
name: zoo-images
models: [{name: mnist, adapter: zoo}]
samplers: [ddim]
steps: [2]
guidance: [1]
samples: 24
batch_size: 8
conditions: {classes: 10}
reference: {dataset: mnist-heldout}
extractor: mnist-net
metrics: [fd, kid, is, pr]
grid_samples: 24
timing: {repeats: 1}
"""


def _cell(out: Path) -> Path:
    (cell,) = (out / "cells").iterdir()
    return cell


def _features(out: Path) -> dict[str, np.ndarray]:
    with np.load(_cell(out) / "features.npz") as z:
        return {k: z[k] for k in z.files}


def _quality(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.metric.isin(QUALITY)].set_index("metric").loc[QUALITY, COLUMNS]


def _tar(folder: Path, path: Path, prompts: list[str] | None = None) -> Path:
    with tarfile.open(path, "w") as tf:
        for i, png in enumerate(sorted(folder.glob("*.png"))):
            tf.add(png, arcname=png.name)
            if prompts is not None:
                data = prompts[i].encode()
                info = tarfile.TarInfo(f"{png.stem}.txt")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


# -- the same images scored by `evalkit run` and by `evalkit score` ------------------------------------------------
def test_score_equals_run_on_the_images_the_run_generated(tmp_path, capsys):
    suite = tmp_path / "zoo.yaml"
    suite.write_text(SUITE)
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 0
    with np.load(_cell(tmp_path / "run") / "samples.npz") as z:
        images = z["images"]
    assert images.shape[0] == 24 and images.dtype == np.uint8
    gen = write_pngs(images, tmp_path / "mnist")
    argv = ["-m", "fd", "kid", "is", "pr", "-e", "mnist-net", "--batch-size", "8", "-q"]
    capsys.readouterr()
    assert main(["score", str(gen), "--ref", "mnist-heldout", *argv, "--out", str(tmp_path / "score")]) == 0
    printed = capsys.readouterr().out
    assert "FD" in printed and "mnist__images__s0__g0 computed" in printed

    run, score = read_run(tmp_path / "run"), read_run(tmp_path / "score")
    # bit for bit (check_exact; NaN equals NaN): value, std, CI, N, seed, extractor, weights id, mode
    pd.testing.assert_frame_equal(_quality(score.results), _quality(run.results), check_exact=True)
    ours, theirs = _features(tmp_path / "score"), _features(tmp_path / "run")
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert (_cell(tmp_path / "score") / "grid.png").stat().st_size > 100
    assert score.floors is not None or (tmp_path / "score" / "floors.json").is_file()

    # the run's own samples.npz and a tar of the PNGs: the same numbers again (the API, which the CLI calls)
    for source in (_cell(tmp_path / "run") / "samples.npz",):  # (tar shards: tests/references/test_sources.py)
        df = score_images(
            source,
            "mnist-heldout",
            ["fd", "kid", "is", "pr"],
            extractor="mnist-net",
            batch_size=8,
            out=tmp_path / f"from-{source.suffix[1:]}",
        )
        pd.testing.assert_frame_equal(_quality(df), _quality(run.results), check_exact=True)
    again = score_images(
        gen, "mnist-heldout", ["fd", "kid", "is", "pr"], extractor="mnist-net", batch_size=8, out=tmp_path / "score"
    )
    assert again.attrs["reused"] and again.attrs["cell_id"] == "mnist__images__s0__g0"

    record = RunStore(tmp_path / "score").read_cell("mnist__images__s0__g0")
    info = record["model_info"]
    assert info["path"] == str(gen.resolve()) and info["n"] == 24 and len(info["images_sha256"]) == 64
    assert "exif_transpose" in info["decoding"]["orientation"] and "dropped" in info["decoding"]["colour"]
    manifest = json.loads((tmp_path / "score" / "run.json").read_text())
    assert manifest["models"]["mnist"]["decoding"] == info["decoding"]
    assert manifest["config"]["samples"] == 24 and manifest["reference"]["name"] == "mnist-heldout"
    costs = score.results.set_index("metric")
    assert np.isnan(costs.loc["s_per_image", "value"]) and np.isnan(costs.loc["nfe", "value"])  # nothing generated


# -- agreement with the reference libraries, same random-weight Inception --------------------------------------
@pytest.fixture(scope="module")
def fid_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("score_fid")
    gen = write_pngs(smooth_images(FID_N, 32, seed=11), root / "gen")
    ref = write_pngs(smooth_images(FID_N, 32, seed=12, shift=0.2), root / "ref")
    return gen, ref


def _fd(df: pd.DataFrame) -> float:
    return float(df.set_index("metric").loc["fd", "value"])


def _feature_diff(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def _stats_file(path: Path, feats: np.ndarray) -> Path:
    np.savez_compressed(path, mu=np.mean(feats, axis=0), sigma=np.cov(feats, rowvar=False))  # as both libraries do
    return path


def test_clean_mode_equals_cleanfid_and_its_statistics(fid_dirs, random_inception, tmp_path, monkeypatch, capsys):
    from cleanfid import fid as cfid
    from cleanfid.inception_torchscript import InceptionV3W

    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(random_inception["dir"]))  # inception-clean finds the random file
    gen, ref = fid_dirs
    ours = score_images(gen, ref, ["fd"], extractor="inception-clean", batch_size=FID_N, out=tmp_path / "images")
    model = InceptionV3W(str(random_inception["dir"]), download=False, resize_inside=False).eval()
    kw = {"num_workers": 0, "batch_size": FID_N, "mode": "clean", "device": torch.device("cpu"), "verbose": False}
    theirs = {side: cfid.get_folder_features(str(d), model, **kw) for side, d in (("gen", gen), ("ref", ref))}
    d = _feature_diff(_features(tmp_path / "images")["inception-clean/features"], theirs["gen"])
    stats = _stats_file(tmp_path / "cleanfid_ref.npz", theirs["ref"])
    via_stats = score_images(gen, stats, ["fd"], extractor="inception-clean", batch_size=FID_N, out=tmp_path / "stats")
    print(
        f"[agreement] clean features vs clean-fid: {d:.2e}; FD images {_fd(ours):.10g}, clean-fid stats "
        f"{_fd(via_stats):.10g} ({rel_diff(_fd(via_stats), _fd(ours)):.2e})"
    )
    assert d <= TOL and rel_diff(_fd(via_stats), _fd(ours)) <= TOL
    if FULL:
        whole = cfid.compute_fid(
            str(gen),
            str(ref),
            mode="clean",
            custom_feat_extractor=model,
            num_workers=0,
            batch_size=FID_N,
            device=torch.device("cpu"),
            verbose=False,
            use_dataparallel=False,
        )
        print(f"[agreement] clean FD vs clean-fid compute_fid: {whole:.10g} ({rel_diff(_fd(ours), whole):.2e})")
        assert rel_diff(_fd(ours), whole) <= TOL


def test_legacy_pytorch_equals_pytorch_fid_and_its_statistics(fid_dirs, random_inception, tmp_path, monkeypatch):
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS, InceptionV3, calculate_fid_given_paths, get_activations

    EXTRACTORS.names()  # the built-ins first, then a test extractor: the random file as pytorch-fid's network
    name = "test-inception-pytorch"
    factory = lambda device="cpu", **kw: InceptionExtractor(  # noqa: E731
        "legacy_pytorch", device=device, weights=random_inception["pt"], name=name
    )
    monkeypatch.setitem(EXTRACTORS._items, name, factory)
    monkeypatch.setenv("TORCH_HOME", str(random_inception["torch_home"]))  # pytorch-fid loads from the hub cache
    gen, ref = fid_dirs
    ours = score_images(gen, ref, ["fd"], extractor=name, batch_size=FID_N, out=tmp_path / "images")
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    def activations(folder: Path) -> np.ndarray:
        files = sorted(f for ext in IMAGE_EXTENSIONS for f in folder.glob(f"*.{ext}"))
        return get_activations(files, model, batch_size=FID_N, dims=2048, device="cpu", num_workers=0)

    d = _feature_diff(_features(tmp_path / "images")[f"{name}/features"], activations(gen))
    stats = _stats_file(tmp_path / "pytorch_fid_ref.npz", activations(ref))  # pytorch-fid --save-stats
    via_stats = score_images(gen, stats, ["fd"], extractor=name, batch_size=FID_N, out=tmp_path / "stats")
    print(
        f"[agreement] legacy_pytorch features vs pytorch-fid: {d:.2e}; FD images {_fd(ours):.10g}, pytorch-fid "
        f"stats {_fd(via_stats):.10g} ({rel_diff(_fd(via_stats), _fd(ours)):.2e})"
    )
    assert d <= TOL and rel_diff(_fd(via_stats), _fd(ours)) <= TOL
    if FULL:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            whole = calculate_fid_given_paths(
                [str(gen), str(ref)], batch_size=FID_N, device="cpu", dims=2048, num_workers=0
            )
        print(f"[agreement] legacy_pytorch FD vs pytorch-fid: {whole:.10g} ({rel_diff(_fd(ours), whole):.2e})")
        assert rel_diff(_fd(ours), whole) <= TOL


def test_legacy_tensorflow_equals_torch_fidelity_and_its_cache(fid_dirs, random_inception, tmp_path, monkeypatch):
    """`evalkit score` in torch-fidelity's mode (its TF-ported Inception, random weights) against its
    ``calculate_metrics`` on the same two folders, and its feature cache (``…-stat-fid-2048.pt``) as REF."""
    import torch_fidelity

    EXTRACTORS.names()
    name = "test-inception-tf"
    factory = lambda device="cpu", **kw: InceptionExtractor(  # noqa: E731
        "legacy_tensorflow", device=device, weights=random_inception["tf"], name=name
    )
    monkeypatch.setitem(EXTRACTORS._items, name, factory)
    gen, ref = fid_dirs
    ours = score_images(gen, ref, ["fd"], extractor=name, batch_size=FID_N, out=tmp_path / "images")
    cache = tmp_path / "tf-cache"
    theirs = torch_fidelity.calculate_metrics(
        input1=str(gen),
        input2=str(ref),
        cuda=False,
        fid=True,
        verbose=False,
        cache=True,
        cache_root=str(cache),
        input2_cache_name="ref",
        feature_extractor_weights_path=str(random_inception["tf"]),
        batch_size=FID_N,
    )["frechet_inception_distance"]
    stats = sorted(cache.rglob("*ref*stat-fid-2048*.pt"))
    assert len(stats) == 1, sorted(p.name for p in cache.rglob("*"))
    via_cache = score_images(gen, stats[0], ["fd"], extractor=name, batch_size=FID_N, out=tmp_path / "cache")
    print(
        f"[agreement] legacy_tensorflow FD vs torch-fidelity: {_fd(ours):.10g} vs {theirs:.10g} "
        f"({rel_diff(_fd(ours), theirs):.2e}); its cache as REF {_fd(via_cache):.10g}"
    )
    assert rel_diff(_fd(ours), theirs) <= TOL and rel_diff(_fd(via_cache), _fd(ours)) <= TOL


def test_statistics_files_as_ref_give_the_fd_of_their_images(tmp_path, capsys):
    gen = write_pngs(smooth_images(12, 28, seed=21), tmp_path / "gen")
    ref = write_pngs(smooth_images(30, 28, seed=22, shift=0.2), tmp_path / "ref")
    kw = {"extractor": "mnist-net", "batch_size": 8}
    images = _fd(score_images(gen, ref, ["fd"], out=tmp_path / "images", **kw))
    assert main(["stats", str(ref), "-e", "mnist-net", "--out", str(tmp_path / "evalkit.npz")]) == 0
    with np.load(tmp_path / "evalkit.npz") as z:  # the same mean and covariance as torch-fidelity caches them
        torch.save({"mu": z["mu"], "sigma": z["sigma"]}, tmp_path / "ref-mnist-stat-fid-64.pt")
    for stats in ("evalkit.npz", "ref-mnist-stat-fid-64.pt"):
        fd = _fd(score_images(gen, tmp_path / stats, ["fd"], out=tmp_path / f"run-{stats}", **kw))
        assert rel_diff(fd, images) <= 1e-9, stats


# -- prompts, unreadable files -----------------------------------------------------------------------------------
class _TextImageNet:
    """A stand-in CLIP (no weights here): image and text embeddings from fixed random projections."""

    name, weights_id, mode, outputs = "clip", "random:0", "open_clip", ("image_embeds",)

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = images.float().mean(dim=(2, 3)).numpy()
        return {"image_embeds": x @ np.random.default_rng(0).normal(size=(3, 16))}

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        return np.stack([np.random.default_rng(sum(map(ord, p))).normal(size=16) for p in prompts])


def test_prompts_from_the_shard_or_a_file_reach_clip_score(tmp_path, monkeypatch, capsys):
    import evalkit.run.preflight as preflight

    EXTRACTORS.names()
    monkeypatch.setitem(EXTRACTORS._items, "clip", lambda device="cpu", **kw: _TextImageNet())
    monkeypatch.setattr(preflight, "check_extractor_weights", lambda name: [])
    images = smooth_images(6, 16, seed=5)
    prompts = [f"a digit number {i}" for i in range(6)]
    shard = _tar(write_pngs(images, tmp_path / "png"), tmp_path / "shard.tar", prompts)
    ref = write_pngs(smooth_images(6, 16, seed=6), tmp_path / "ref")
    df = score_images(shard, ref, ["clip_score"], out=tmp_path / "a")
    with np.load(tmp_path / "a" / "conditions.npz") as z:
        assert list(z["prompts"]) == prompts
    net = _TextImageNet()
    want = (
        get_metric("clip_score")
        .compute(
            MetricInputs(
                gen={
                    "image_embeds": net(torch.from_numpy(images))["image_embeds"],
                    "text_embeds": net.encode_text(prompts),
                },
                prompts=prompts,
            )
        )["clip_score"]
        .value
    )
    assert df.set_index("metric").loc["clip_score", "value"] == want
    (tmp_path / "p.txt").write_text("\n".join(reversed(prompts)) + "\n")
    other = score_images(shard, ref, ["clip_score"], prompts=tmp_path / "p.txt", out=tmp_path / "b")
    assert other.set_index("metric").loc["clip_score", "value"] != want  # the file wins over the shard's .txt
    (tmp_path / "short.txt").write_text("one\ntwo\n")
    capsys.readouterr()
    assert (
        main(
            [
                "score",
                str(shard),
                "--ref",
                str(ref),
                "-m",
                "clip_score",
                "--prompts",
                str(tmp_path / "short.txt"),
                "--out",
                str(tmp_path / "c"),
                "-q",
            ]
        )
        == 2
    )
    assert "2 prompts for 6 images" in capsys.readouterr().err


def _corrupt_idat(png: bytes) -> bytes:
    """The PNG with its IDAT payload zeroed and the CRCs recomputed: the header check passes, decoding fails."""
    out, pos = [png[:8]], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        ctype, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        data = bytes(len(data)) if ctype == b"IDAT" else data
        out.append(struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data)))
        pos += 12 + length
    return b"".join(out)


def test_unreadable_images_are_listed_and_skipped_or_with_strict_an_error(tmp_path, capsys):
    gen = write_pngs(smooth_images(5, 28, seed=8), tmp_path / "gen")
    (gen / "0002_bad.png").write_bytes(_corrupt_idat((gen / "0000.png").read_bytes()))  # found only by decoding
    (gen / "0003_empty.png").write_bytes(b"")  # found by the header check
    with pytest.warns(UserWarning) as rec:
        df = score_images(gen, "mnist-heldout", ["fd"], extractor="mnist-net", out=tmp_path / "a")
    text = " | ".join(str(w.message) for w in rec)
    assert "generated images" in text and "'0003_empty.png'" in text and "'0002_bad.png'" in text
    assert (df.n == 5).all()
    info = RunStore(tmp_path / "a").read_cell(df.attrs["cell_id"])["model_info"]
    assert set(info["skipped"]) == {"0002_bad.png", "0003_empty.png"} and info["n"] == 5
    (gen / "0003_empty.png").unlink()
    capsys.readouterr()
    argv = ["--ref", "mnist-heldout", "-e", "mnist-net", "--strict", "-q", "--out", str(tmp_path / "b")]
    assert main(["score", str(gen), *argv]) == 2
    err = capsys.readouterr().err
    assert "'0002_bad.png'" in err and "cannot be decoded" in err and "Traceback" not in err


# -- bad inputs: one line naming the path or field, exit 2 --------------------------------------------------------
@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    gen = write_pngs(smooth_images(4, 28, seed=3), tmp_path / "gen")
    (tmp_path / "empty").mkdir()
    (tmp_path / "gifs").mkdir()
    (tmp_path / "gifs" / "a.gif").write_bytes(b"GIF89a")
    np.savez(tmp_path / "meancov.npz", mean=np.zeros(3), cov=np.eye(3))
    np.savez(tmp_path / "musigma7.npz", mu=np.zeros(7), sigma=np.eye(7))
    np.savez(tmp_path / "muonly.npz", mu=np.zeros(7))
    torch.save({"m": np.zeros(3)}, tmp_path / "fidelity.pt")
    return {"gen": gen, "root": tmp_path}


BAD = {
    "missing GEN": (["{root}/nope", "--ref", "mnist-heldout"], "GEN {root}/nope: no such file or folder"),
    "missing REF": (["{gen}", "--ref", "{root}/nope"], "--ref {root}/nope: no such file or folder"),
    "empty GEN": (["{root}/empty", "--ref", "mnist-heldout"], "{root}/empty holds no files (an empty folder)"),
    "empty REF": (["{gen}", "--ref", "{root}/empty"], "{root}/empty holds no files (an empty folder)"),
    "no known images": (["{root}/gifs", "--ref", "mnist-heldout"], "no images of a known type"),
    "stats without mu": (["{gen}", "--ref", "{root}/meancov.npz"], "nor statistics ('mu' and 'sigma')"),
    "torch stats without mu": (["{gen}", "--ref", "{root}/fidelity.pt"], "hold no 'mu'/'sigma' arrays"),
    "mu without sigma": (["{gen}", "--ref", "{root}/muonly.npz"], "mu without sigma"),
    "stats of another dimension": (["{gen}", "--ref", "{root}/musigma7.npz"], "statistics of dimension 7 (mu)"),
    "kid on statistics": (["{gen}", "--ref", "{root}/musigma7.npz", "-m", "kid"], "serves fd, fd_inf only"),
    "unknown metric": (["{gen}", "--ref", "mnist-heldout", "-m", "fdd"], "metrics[0].name: unknown value 'fdd'"),
    "GEN is statistics": (["{root}/musigma7.npz", "--ref", "mnist-heldout"], "is a statistics file"),
    "-e read by no metric": (["{gen}", "--ref", "mnist-heldout", "-m", "clip_score"], "-e mnist-net: no metric of"),
    "--out inside GEN": (["{gen}", "--ref", "mnist-heldout", "--out", "{gen}/run"], "is inside GEN"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(case, inputs, capsys):
    argv, message = BAD[case]
    fill = {"root": inputs["root"], "gen": inputs["gen"]}
    argv = [a.format(**fill) for a in argv]
    out = inputs["root"] / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["score", *argv, "-e", "mnist-net", *([] if "--out" in argv else ["--out", str(out)]), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message.format(**fill) in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (out / "cells").exists()  # nothing was scored
