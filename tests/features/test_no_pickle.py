"""A weights file cannot run code (issue 15): no extractor, and no library an extractor hands a file to,
unpickles a user-given weights file.

The planted ``evil.pth`` holds a pickle whose unpickling touches a marker file (``__reduce__`` →
``Path.touch``). Every extractor that takes a weights file must refuse it with a WeightsError (exit 2 through
``evalkit stats``) and the marker must not exist afterwards. With valid (random) weights, every extractor is
built while ``pickle``'s loaders and ``torch.load`` without ``weights_only=True`` are booby-trapped: the
libraries' own loading paths (torch-fidelity, pytorch-fid, clean-fid, lpips, open_clip) are covered, not
only evalkit's source (which tests/e2e/test_reliability_safety.py scans).
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from evalkit.cli import main
from evalkit.errors import WeightsError
from evalkit.features import build_extractor

INCEPTIONS = ("inception", "inception-clean", "inception-legacy_tensorflow", "inception-legacy_pytorch")
LPIPS = ("lpips-alex", "lpips-squeeze", "lpips-vgg")


class _Payload:
    """Unpickling this object touches ``marker``: any code path that unpickles it runs code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(folder: Path, name: str = "evil.pth", *, legacy: bool = False) -> tuple[Path, Path]:
    """(a weights file whose unpickling creates the marker, the marker path)."""
    marker = folder / f"pwned-{name}"
    path = folder / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"x": _Payload(marker)}, path, _use_new_zipfile_serialization=not legacy)
    return path, marker


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_the_planted_payload_is_live(tmp_path, legacy):
    """Control: an unrestricted unpickle of the planted file does run its code (so the tests below mean something)."""
    from evalkit.features.safe_load import load_state_dict

    path, marker = plant(tmp_path, legacy=legacy)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(WeightsError, match="plain tensors"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", INCEPTIONS + LPIPS)
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_extractors_refuse_a_pickle_payload(tmp_path, name, legacy):
    path, marker = plant(tmp_path, legacy=legacy)
    with pytest.raises(Exception) as err:
        build_extractor(name, weights=path)
    assert not marker.exists(), f"{name}: building with {path.name} ran the pickle's code"
    assert isinstance(err.value, WeightsError) and str(path) in str(err.value), repr(err.value)


@pytest.fixture(scope="module")
def tiny_clip_config(tmp_path_factory):
    import open_clip
    from test_features_clip import TINY, TINY_CFG

    cfg = tmp_path_factory.mktemp("clipcfg") / f"{TINY}.json"
    cfg.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(str(cfg))
    return TINY


def test_clip_refuses_a_pickle_payload_as_weights_or_as_pretrained(tmp_path, tiny_clip_config):
    from evalkit.features.clip import ClipExtractor

    path, marker = plant(tmp_path)
    with pytest.raises(WeightsError, match=str(path)):
        build_extractor("clip", model=tiny_clip_config, pretrained=None, weights=path)
    with pytest.raises(WeightsError, match=str(path)):  # a file given as open_clip's `pretrained` tag
        ClipExtractor(tiny_clip_config, pretrained=str(path))
    with pytest.raises(WeightsError, match=str(path)):  # the registered ViT-B-32/openai entry, explicit file
        build_extractor("clip", weights=path)
    assert not marker.exists()


def test_mnist_net_refuses_a_pickle_even_when_the_card_vouches_for_it(tmp_path):
    from evalkit.zoo.models import NET_FILES, NET_NAME, sha256_file

    folder = tmp_path / "zoo"
    folder.mkdir()
    path, marker = plant(folder, NET_FILES[0])
    card = {"models": {NET_NAME: {"files": {NET_FILES[0]: {"sha256": sha256_file(path)}}}}}
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="mnist-net"):
        build_extractor("mnist-net", weights=folder)
    with pytest.raises(WeightsError):  # a file where a folder is expected
        build_extractor("mnist-net", weights=path)
    assert not marker.exists()


@pytest.mark.parametrize("extractor", ["inception-legacy_tensorflow", "inception-clean", "inception-legacy_pytorch"])
def test_stats_command_refuses_the_payload_with_exit_2(tmp_path, capsys, extractor):
    path, marker = plant(tmp_path)
    argv = ["stats", "mnist-heldout", "-e", extractor, "--weights", str(path), "--samples", "4"]
    try:
        code: object = main([*argv, "--cache-dir", str(tmp_path / "cache")])
    except Exception as e:  # reported below, after the marker check
        code = e
    assert not marker.exists(), f"evalkit stats -e {extractor} --weights {path.name} ran the pickle's code"
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and "internal error" not in err, (code, err)


# -- with valid weights, nothing on the whole loading path unpickles -------------------------------------------


@pytest.fixture
def no_unpickling(monkeypatch):
    """Every unrestricted unpickle (``pickle.load(s)``/``Unpickler``, ``torch.load`` without weights_only=True,
    ``torch.hub.load_state_dict_from_url``) is recorded and refused while the fixture is active."""
    calls: list[str] = []

    def trap(what):
        def refuse(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} called while loading weights")

        return refuse

    real_load = torch.load

    def guarded_load(*args, **kwargs):
        if kwargs.get("weights_only") is not True:
            calls.append(f"torch.load(weights_only={kwargs.get('weights_only')!r})")
            raise AssertionError("torch.load without weights_only=True")
        return real_load(*args, **kwargs)

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, trap(f"pickle.{name}"))
    monkeypatch.setattr(torch, "load", guarded_load)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", trap("torch.hub.load_state_dict_from_url"))
    return calls


def test_valid_weights_load_without_any_unpickling(random_inception, tiny_clip_config, tmp_path, no_unpickling):
    import open_clip
    import torchvision

    torch.manual_seed(0)
    squeeze = tmp_path / "squeeze.pth"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), squeeze)
    clip_file = tmp_path / "clip.pt"
    torch.save(open_clip.create_model(tiny_clip_config, pretrained=None).state_dict(), clip_file)
    built = {
        "inception-clean": build_extractor("inception-clean", weights=random_inception["clean"]),
        "inception-legacy_tensorflow": build_extractor("inception-legacy_tensorflow", weights=random_inception["tf"]),
        "inception-legacy_pytorch": build_extractor("inception-legacy_pytorch", weights=random_inception["pt"]),
        "lpips-squeeze": build_extractor("lpips-squeeze", weights=squeeze),
        "lpips-alex": build_extractor("lpips-alex", random_seed=1),  # the heads from the lpips wheel
        "clip": build_extractor("clip", model=tiny_clip_config, pretrained=None, weights=clip_file),
        "mnist-net": build_extractor("mnist-net"),
    }
    assert no_unpickling == []
    from evalkit.features.safe_load import load_state_dict

    saved = load_state_dict(clip_file)
    assert all(torch.equal(v, saved[k]) for k, v in built["clip"].model.state_dict().items())  # the file's tensors
    assert built["lpips-squeeze"].weights_id.startswith("custom:")
