"""FID / KID / IS through evalkit's Inception extractors equal the reference libraries' numbers.

One random-weight Inception (see conftest) is injected into both sides. Each mode is checked at
32, 299 and 512 px against the library that defines it:

- ``clean``              vs clean-fid ``compute_fid(mode="clean")``
- ``legacy_tensorflow``  vs torch-fidelity ``calculate_metrics`` (FID, KID, IS) and torchmetrics FID
  (with ``antialias=False``: torchmetrics' default antialiased resize is not the TF1 convention)
- ``legacy_pytorch``     vs pytorch-fid ``calculate_fid_given_paths`` and clean-fid ``legacy_pytorch``

Small sets (N per side) keep CPU Inception time low (this CPU runs ~2-4 images/s at 299 px); FD on
N ≪ 2048 samples is still a deterministic function of the features, so any preprocessing or network
difference shows up in it. Each reference library's FID costs one scipy ``sqrtm`` on 2048×2048 (10-20 s
here), so clean-fid and pytorch-fid compute the whole FID at 32 px (where resize conventions differ most)
and, at 299 and 512 px, the features their FID is made of, compared row by row with evalkit's (a stricter
check than the FID they summarise into). The second library of a mode runs at 32 px only. EVALKIT_TEST_FULL=1
runs every library's whole FID at every size.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import rel_diff, smooth_images, write_pngs

from evalkit.features.inception import InceptionExtractor
from evalkit.metrics import MetricInputs, get_metric
from evalkit.references import open_reference, reference_features

SIZES = (32, 299, 512)
FULL = bool(os.environ.get("EVALKIT_TEST_FULL"))
SECOND_SIZES = SIZES if FULL else (32,)
N = 5
TOL = 1e-4
IS_SPLITS = 2
KID_SUBSET = N - 2  # < N, so the 100 subsets differ and the std means something
TF_SEED = 2020  # torch-fidelity's default rng_seed

# slow: each reference FID runs its library's scipy sqrtm on 2048×2048 (~10-20 s on this CPU)
pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("fid_images")
    out = {}
    for size in SIZES:
        gen = write_pngs(smooth_images(N, size, seed=100 + size), root / f"gen{size}")
        ref = write_pngs(smooth_images(N, size, seed=200 + size, shift=0.2), root / f"ref{size}")
        out[size] = (gen, ref)
    return out


@pytest.fixture(scope="module")
def evalkit_features(random_inception):
    """evalkit features per (mode, size, side), computed once and shared by the tests of a mode."""
    cache: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
    extractors: dict[str, InceptionExtractor] = {}
    weights = {
        "clean": random_inception["clean"],
        "legacy_tensorflow": random_inception["tf"],
        "legacy_pytorch": random_inception["pt"],
    }

    def get(mode: str, folder: Path, size: int, side: str) -> dict[str, np.ndarray]:
        key = (mode, size, side)
        if key not in cache:
            if mode not in extractors:
                extractors[mode] = InceptionExtractor(mode, weights=weights[mode])
            ref = open_reference({"path": str(folder)})
            cache[key] = reference_features(ref, [extractors[mode]], use_cache=False, batch_size=N)[
                extractors[mode].name
            ]
        return cache[key]

    return get


_METRIC_CACHE: dict = {}


def _evalkit(evalkit_features, mode: str, dirs: tuple[Path, Path], size: int, metric: str = "fd", **options):
    key = (mode, size, metric, tuple(sorted(options.items())))
    if key not in _METRIC_CACHE:
        gen = evalkit_features(mode, dirs[0], size, "gen")
        ref = evalkit_features(mode, dirs[1], size, "ref")
        _METRIC_CACHE[key] = get_metric(metric).compute(
            MetricInputs(gen=gen, ref=ref, options={"bootstrap": 0, **options})
        )
    return _METRIC_CACHE[key]


def _whole_fid(size: int) -> bool:
    return FULL or size == 32


def _feature_diff(label: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest feature difference relative to the features' scale, rows in file-name order on both sides."""
    assert ours.shape == theirs.shape == (N, 2048), (ours.shape, theirs.shape)
    d = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    print(f"[agreement] {label} features: max|diff|/max|ref|={d:.3e}")
    return d


def _report(label: str, ours: float, theirs: float) -> float:
    d = rel_diff(ours, theirs)
    print(f"[agreement] {label}: evalkit={ours:.10g} reference={theirs:.10g} rel_diff={d:.3e}")
    return d


@pytest.mark.parametrize("size", SIZES)
def test_clean_matches_cleanfid(size, image_dirs, evalkit_features, random_inception):
    from cleanfid import fid as cfid
    from cleanfid.inception_torchscript import InceptionV3W

    gen, ref = image_dirs[size]
    model = InceptionV3W(str(random_inception["dir"]), download=False, resize_inside=False).eval()
    if not _whole_fid(size):
        theirs_feats = cfid.get_folder_features(
            str(gen), model, num_workers=0, batch_size=N, mode="clean", device=torch.device("cpu"), verbose=False
        )
        ours_feats = evalkit_features("clean", gen, size, "gen")["features"]
        assert _feature_diff(f"clean {size}px vs clean-fid", ours_feats, theirs_feats) <= TOL
        return
    theirs = cfid.compute_fid(
        str(gen),
        str(ref),
        mode="clean",
        custom_feat_extractor=model,
        device=torch.device("cpu"),
        num_workers=0,
        batch_size=N,
        verbose=False,
        use_dataparallel=False,
    )
    ours = _evalkit(evalkit_features, "clean", image_dirs[size], size)["fd"].value
    assert _report(f"clean {size}px vs clean-fid", ours, theirs) <= TOL


@pytest.mark.parametrize("size", SIZES)
def test_legacy_tensorflow_matches_torch_fidelity(size, image_dirs, evalkit_features, random_inception):
    import torch_fidelity

    gen, ref = image_dirs[size]
    theirs = torch_fidelity.calculate_metrics(
        input1=str(gen),
        input2=str(ref),
        cuda=False,
        fid=True,
        kid=True,
        isc=True,
        verbose=False,
        cache=False,
        feature_extractor_weights_path=str(random_inception["tf"]),
        kid_subset_size=KID_SUBSET,
        isc_splits=IS_SPLITS,
        rng_seed=TF_SEED,
        batch_size=N,
    )
    dirs = image_dirs[size]
    fd = _evalkit(evalkit_features, "legacy_tensorflow", dirs, size)["fd"].value
    kid = _evalkit(evalkit_features, "legacy_tensorflow", dirs, size, "kid", subset_size=KID_SUBSET, kid_seed=TF_SEED)[
        "kid"
    ]
    is_ = _evalkit(evalkit_features, "legacy_tensorflow", dirs, size, "is", splits=IS_SPLITS, is_seed=TF_SEED)["is"]
    assert _report(f"legacy_tensorflow {size}px FID vs torch-fidelity", fd, theirs["frechet_inception_distance"]) <= TOL
    assert (
        _report(
            f"legacy_tensorflow {size}px KID mean vs torch-fidelity",
            kid.value,
            theirs["kernel_inception_distance_mean"],
        )
        <= TOL
    )
    assert (
        _report(
            f"legacy_tensorflow {size}px KID std vs torch-fidelity", kid.std, theirs["kernel_inception_distance_std"]
        )
        <= TOL
    )
    assert (
        _report(f"legacy_tensorflow {size}px IS mean vs torch-fidelity", is_.value, theirs["inception_score_mean"])
        <= TOL
    )
    assert (
        _report(f"legacy_tensorflow {size}px IS std vs torch-fidelity", is_.std, theirs["inception_score_std"]) <= TOL
    )


@pytest.mark.parametrize("size", SECOND_SIZES)
def test_legacy_tensorflow_matches_torchmetrics(size, image_dirs, evalkit_features, random_inception):
    from torchmetrics.image.fid import FrechetInceptionDistance

    gen_np = smooth_images(N, size, seed=100 + size)
    ref_np = smooth_images(N, size, seed=200 + size, shift=0.2)
    # antialias=False: torchmetrics defaults to an antialiased resize, its own deviation from TF / torch-fidelity
    # (identical at 299 px, 8% and 7x apart here at 32 / 512 px); legacy_tensorflow is the TF1 resize.
    metric = FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(random_inception["tf"]), antialias=False
    )
    metric.update(torch.from_numpy(ref_np), real=True)
    metric.update(torch.from_numpy(gen_np), real=False)
    theirs = float(metric.compute())
    ours = _evalkit(evalkit_features, "legacy_tensorflow", image_dirs[size], size)["fd"].value
    assert _report(f"legacy_tensorflow {size}px vs torchmetrics", ours, theirs) <= TOL


@pytest.mark.parametrize("size", SIZES)
def test_legacy_pytorch_matches_pytorch_fid(size, image_dirs, evalkit_features, random_inception, monkeypatch):
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS, InceptionV3, calculate_fid_given_paths, get_activations

    monkeypatch.setenv("TORCH_HOME", str(random_inception["torch_home"]))  # pytorch-fid loads from the hub cache
    gen, ref = image_dirs[size]
    if not _whole_fid(size):
        files = sorted(f for ext in IMAGE_EXTENSIONS for f in gen.glob(f"*.{ext}"))  # as compute_statistics_of_path
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
        theirs_feats = get_activations(files, model, batch_size=N, dims=2048, device="cpu", num_workers=0)
        ours_feats = evalkit_features("legacy_pytorch", gen, size, "gen")["features"]
        assert _feature_diff(f"legacy_pytorch {size}px vs pytorch-fid", ours_feats, theirs_feats) <= TOL
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = calculate_fid_given_paths([str(gen), str(ref)], batch_size=N, device="cpu", dims=2048, num_workers=0)
    ours = _evalkit(evalkit_features, "legacy_pytorch", image_dirs[size], size)["fd"].value
    assert _report(f"legacy_pytorch {size}px vs pytorch-fid", ours, theirs) <= TOL


@pytest.mark.parametrize("size", SECOND_SIZES)
def test_legacy_pytorch_matches_cleanfid(size, image_dirs, evalkit_features, random_inception, monkeypatch):
    from cleanfid import fid as cfid

    monkeypatch.setenv("TORCH_HOME", str(random_inception["torch_home"]))  # clean-fid's copy of pytorch-fid, too
    gen, ref = image_dirs[size]
    theirs = cfid.compute_fid(
        str(gen),
        str(ref),
        mode="legacy_pytorch",
        device=torch.device("cpu"),
        num_workers=0,
        batch_size=N,
        verbose=False,
        use_dataparallel=False,
    )
    ours = _evalkit(evalkit_features, "legacy_pytorch", image_dirs[size], size)["fd"].value
    assert _report(f"legacy_pytorch {size}px vs clean-fid legacy_pytorch", ours, theirs) <= TOL
