"""The weights registry: every standard network file evalkit's extractors load, where it comes from,
how to recognise it, and where to look for it.

Lookup order (first hit wins): an explicit path (suite / CLI option) → ``$EVALKIT_WEIGHTS_DIR/<filename>``
→ each library's own cache (torch hub checkpoints, clean-fid's folder, open_clip's cache). A file found
implicitly must match the registered sha256 (else :class:`WeightsMismatchError`); an explicit path is
the user's choice and may hold other weights: it is accepted and its ``weights_id`` becomes
``"custom:<sha256>"`` so results say they are not comparable with published numbers. Random networks
(tests, smoke runs) use ``"random:<seed>"``.

A file found implicitly must also be trustworthy to load: not writable by everyone and owned by the
current user or root (:class:`WeightsUntrustedError` otherwise). Some search folders are shared
(clean-fid's is ``/tmp``) and some entries have no published hash to check, so without this anyone on
the machine could plant a network there.

Where a full sha256 is not published, ``sha256`` is None and the torch-hub file-name prefix
(``sha256_prefix``, the first 8 hex digits torch hub names files with) is checked instead. An entry with
``other_is_custom`` (clean-fid's TorchScript Inception, which evalkit accepted whatever its hash before the hash
was pinned) loads a file of another hash found implicitly too, but as custom weights (``custom:<sha256>``), never
labelled standard.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.errors import UnknownNameError, WeightsError
from evalkit.store import sha256_file

ENV_WEIGHTS_DIR = "EVALKIT_WEIGHTS_DIR"


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    pass


class WeightsMismatchError(WeightsError):
    pass


class WeightsUntrustedError(WeightsError):
    """A weights file found implicitly that another user could have written (world-writable / foreign owner)."""


def check_trusted(path: Path) -> None:
    """Raise :class:`WeightsUntrustedError` unless ``path`` is owned by us (or root) and not world-writable."""
    st = Path(path).stat()
    uid = os.getuid() if hasattr(os, "getuid") else None
    problems = []
    if st.st_mode & 0o002:
        problems.append("it is writable by every user")
    if uid is not None and st.st_uid not in (uid, 0):
        problems.append(f"it is owned by another user (uid {st.st_uid})")
    if problems:
        raise WeightsUntrustedError(
            f"refusing to load weights file {path} found in a search folder: {' and '.join(problems)}. "
            "Check where it came from; fix its owner/permissions or pass it explicitly as custom weights."
        )


def _torch_hub_dir() -> Path:
    """torch.hub's checkpoint folder, found as ``torch.hub.get_dir()`` finds it but without importing torch (the
    preflight runs before torch loads): ``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``,
    then ``hub``. Where torch is already loaded, its own answer (which honours ``torch.hub.set_dir``)."""
    hub = sys.modules.get("torch.hub")
    if hub is not None:
        return Path(hub.get_dir()) / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(xdg, "torch")))
    return Path(home) / "hub" / "checkpoints"


@dataclass(frozen=True)
class WeightsFile:
    name: str  # registry key
    filename: str  # the file name libraries use on disk
    url: str
    sha256: str | None  # full digest where published
    sha256_prefix: str | None  # torch-hub name prefix, checked when the full digest is unknown
    size: int | None  # bytes, where known
    used_by: str  # which extractor / library loads it
    caches: tuple[Callable[[], Path], ...] = field(default=(), repr=False)  # library cache folders
    note: str = ""
    other_is_custom: bool = False  # a file of another hash found implicitly: loaded as custom, not refused

    def library_paths(self) -> list[Path]:
        out = []
        for folder in self.caches:
            try:
                out.append(folder() / self.filename)
            except Exception:
                continue
        return out

    def search_paths(self) -> list[Path]:
        env = os.environ.get(ENV_WEIGHTS_DIR)
        return ([Path(env) / self.filename] if env else []) + self.library_paths()


def _clip_cache() -> Path:
    return Path(os.path.expanduser("~/.cache/clip"))


def _cleanfid_cache() -> Path:
    return Path("/tmp")  # clean-fid's hard-wired download folder on Linux (cleanfid.features.feature_extractor)


# The sha256 of NVIDIA's inception-2015-12-05.pt as downloaded (the digest k-diffusion's evaluation code pins).
CLEAN_INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
_TV = "https://download.pytorch.org/models/"
REGISTRY: dict[str, WeightsFile] = {
    w.name: w
    for w in [
        WeightsFile(
            "inception-clean",
            "inception-2015-12-05.pt",
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
            CLEAN_INCEPTION_SHA256,
            CLEAN_INCEPTION_SHA256[:8],
            None,
            "inception-clean (clean-fid mode 'clean': TorchScript port of TF Inception 2015-12-05)",
            (_cleanfid_cache, _torch_hub_dir),
            note="NVIDIA publishes no sha256; this is the digest k-diffusion pins for the download. A file with "
            "another hash is loaded as custom weights",
            other_is_custom=True,
        ),
        WeightsFile(
            "inception-torch-fidelity",
            "weights-inception-2015-12-05-6726825d.pth",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
            "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            "6726825d",
            None,
            "inception-legacy_tensorflow (torch-fidelity FeatureExtractorInceptionV3; torchmetrics FID)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "inception-pytorch-fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            None,
            "6726825d",
            None,
            "inception-legacy_pytorch (pytorch-fid; clean-fid legacy_pytorch)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "lpips-alex-backbone",
            "alexnet-owt-7be5be79.pth",
            _TV + "alexnet-owt-7be5be79.pth",
            None,
            "7be5be79",
            None,
            "lpips-alex (torchvision AlexNet IMAGENET1K_V1)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "lpips-vgg-backbone",
            "vgg16-397923af.pth",
            _TV + "vgg16-397923af.pth",
            None,
            "397923af",
            None,
            "lpips-vgg (torchvision VGG16 IMAGENET1K_V1)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "lpips-squeeze-backbone",
            "squeezenet1_1-b8a52dc0.pth",
            _TV + "squeezenet1_1-b8a52dc0.pth",
            None,
            "b8a52dc0",
            None,
            "lpips-squeeze (torchvision SqueezeNet 1.1 IMAGENET1K_V1)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "clip-vit-b-32-openai",
            "ViT-B-32.pt",
            "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
            "40d36571",
            None,
            "clip (open_clip ViT-B-32, pretrained 'openai')",
            (_clip_cache,),
        ),
        # --- DINOv2 entries (features/dinov2.py) ---
        # --- CLIP ViT-L/14 and aesthetic head entries (features/clip.py, features/aesthetic_head.py) ---
        # --- HPSv2 and PickScore entries (features/hpsv2.py, features/pick_score.py) ---
        # --- ImageReward entries (features/image_reward.py) ---
    ]
}

# The LPIPS linear heads ship inside the lpips wheel (v0.1); recorded so a changed wheel is noticed.
LPIPS_HEADS_SHA256 = {
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "squeeze": "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
}

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) within the process (weights are ~100 MB)."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(Path(path))
    return _HASH_CACHE[key]


def matches(entry: WeightsFile, digest: str) -> bool:
    if entry.sha256 is not None:
        return digest == entry.sha256
    if entry.sha256_prefix is not None:
        return digest.startswith(entry.sha256_prefix)
    return True  # nothing published to compare with


@dataclass(frozen=True)
class ResolvedWeights:
    entry: WeightsFile
    path: Path
    sha256: str
    standard: bool  # matches the registered file

    @property
    def weights_id(self) -> str:
        return self.sha256 if self.standard else f"custom:{self.sha256}"


def get_entry(name: str) -> WeightsFile:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown weights {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


def resolve_weights(name: str, explicit: str | os.PathLike | None = None) -> ResolvedWeights:
    """Find and verify the file of registry entry ``name`` (see the module docstring for the order)."""
    entry = get_entry(name)
    if explicit is not None:
        path = Path(os.path.expanduser(str(explicit)))
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file for {entry.name} not found at the given path {path}")
        digest = file_sha256(path)
        return ResolvedWeights(entry, path, digest, standard=matches(entry, digest))
    searched = entry.search_paths()
    for path in searched:
        if path.is_file():
            check_trusted(path)
            digest = file_sha256(path)
            if not matches(entry, digest):
                if entry.other_is_custom:
                    return ResolvedWeights(entry, path, digest, standard=False)  # loaded, labelled custom:<sha256>
                expected = entry.sha256 or f"{entry.sha256_prefix}…"
                raise WeightsMismatchError(
                    f"weights file {path} for {entry.name} has sha256 {digest}, expected {expected}. "
                    f"Delete it and run `evalkit weights download`, or pass it explicitly as custom weights."
                )
            return ResolvedWeights(entry, path, digest, standard=True)
    raise WeightsNotFoundError(missing_message(entry, searched))


# The registry entry each built-in extractor loads when a suite builds it (no options: its default weights).
# Kept equal to the extractors' own tables (inception.WEIGHTS_ENTRY, lpips_net.NETS, clip.REGISTERED) by a test.
EXTRACTOR_WEIGHTS = {
    "clip": "clip-vit-b-32-openai",
    "inception": "inception-clean",
    "inception-clean": "inception-clean",
    "inception-legacy_tensorflow": "inception-torch-fidelity",
    "inception-legacy_pytorch": "inception-pytorch-fid",
    "lpips-alex": "lpips-alex-backbone",
    "lpips-vgg": "lpips-vgg-backbone",
    "lpips-squeeze": "lpips-squeeze-backbone",
    # --- DINOv2 extractors ---
    # --- clip-vit-l14 ---
    # --- hpsv2, pick_score ---
    # --- image_reward ---
}


# (extractor, head) → the registry entry of an optional head's file (``heads`` an extractor computes on request).
HEAD_WEIGHTS: dict[tuple[str, str], str] = {
    # --- heads ---
}


def check_extractor_weights(
    extractor: str, weights: str | os.PathLike | None = None, heads: tuple[str, ...] = ()
) -> list[str]:
    """Check only, before a run: the problem (missing, mismatched, untrusted) with the weights file that
    extractor ``extractor`` will load, found as :func:`resolve_weights` finds it, without building a network.
    ``weights``: the custom file (or folder) a suite gives it (``extractor: {name, weights}``), which must exist.
    ``heads``: the optional outputs asked of it, whose files (:data:`HEAD_WEIGHTS`) are checked the same way.
    [] when the files are there and match, or the extractor has no registered file (mnist-net, plugins)."""
    entry = EXTRACTOR_WEIGHTS.get(extractor)
    if weights is not None and not os.path.exists(os.path.expanduser(str(weights))):
        return [f"extractor.weights: custom weights for {extractor} not found at {weights}"]
    problems = []
    for name, explicit in [(entry, weights)] + [(HEAD_WEIGHTS.get((extractor, h)), None) for h in heads]:
        if name is None:
            continue
        try:
            resolve_weights(name, explicit)
        except (WeightsError, OSError) as e:
            problems.append(str(e))
    return problems


def missing_message(entry: WeightsFile, searched: list[Path]) -> str:
    where = "\n".join(f"  - {p}" for p in searched) or "  (no location: set EVALKIT_WEIGHTS_DIR)"
    env_note = "" if os.environ.get(ENV_WEIGHTS_DIR) else f"\n  (${ENV_WEIGHTS_DIR} is not set)"
    digest = entry.sha256 or (f"{entry.sha256_prefix}… (prefix)" if entry.sha256_prefix else "not published")
    return (
        f"weights file {entry.filename!r} for {entry.used_by} not found.\n"
        f"  sha256: {digest}\n  source: {entry.url}\n"
        f"searched:\n{where}{env_note}\n"
        f"Put the file in ${ENV_WEIGHTS_DIR} (or run `evalkit weights download` where online), "
        f"or pass an explicit path."
    )


def weights_comparable(weights_id: str) -> bool:
    """True when a result's weights are a standard file (a bare sha256), not ``custom:``/``random:``/...

    Resolution only hands out a bare sha256 for files that match the registry, so this is a string test.
    """
    return len(weights_id or "") == 64 and all(c in "0123456789abcdef" for c in weights_id)


def status(name: str) -> dict[str, str]:
    """One row of ``evalkit weights``: found / missing / mismatch (custom: another file, loaded as custom weights),
    the path and where the file goes."""
    entry = get_entry(name)
    searched = entry.search_paths()
    target = searched[0] if searched else None
    for path in searched:
        if path.is_file():
            digest = file_sha256(path)
            state = "found" if matches(entry, digest) else ("custom" if entry.other_is_custom else "mismatch")
            return {"name": name, "status": state, "path": str(path), "sha256": digest, "goes_to": str(target)}
    return {"name": name, "status": "missing", "path": "", "sha256": entry.sha256 or "", "goes_to": str(target)}
