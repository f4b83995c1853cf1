"""Reading network weights without running code from the file.

A ``.pth`` written by ``torch.save`` is a pickle: unpickling it with ``torch.load(weights_only=False)``
(what torch-fidelity does with ``feature_extractor_weights_path``, and ``torch.hub.load_state_dict_from_url``
by default) runs whatever the file says. evalkit therefore never hands a weights file to a library
loader that unpickles; it reads the tensors itself with :func:`load_state_dict` and gives the library
only the tensors (``library_loader`` swaps the library's own loader for the duration of the build).

:func:`load_state_dict` reads three formats, none of which can run Python code:

- safetensors (a JSON header + raw buffers);
- a ``torch.save`` file, read with ``torch.load(weights_only=True)`` (tensors, numbers, strings, dicts
  and lists only: any other object in the pickle is refused before it is built);
- a TorchScript archive (OpenAI's CLIP, NVIDIA's Inception for clean-fid), read by ``torch.jit.load``,
  whose C++ unpickler builds only tensors and TorchScript objects; only its ``state_dict()`` is kept.

Anything else, or a file whose unpickling would need another object, is a :class:`UnsafeWeightsError`
(a :class:`~evalkit.errors.WeightsError`: exit 2) naming the file.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import WeightsError


class UnsafeWeightsError(WeightsError):
    """A weights file that is not plain tensors (e.g. a pickle that would build other objects)."""


def is_safetensors(path: Path) -> bool:
    """True when ``path`` starts as a safetensors file does: an 8-byte header length, then ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < size <= Path(path).stat().st_size - 8


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip holding ``constants.pkl`` and ``code/``), as ``torch.jit.save`` writes."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in names) and any("/code/" in f"/{n}" for n in names)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def check_torchscript(path: Path) -> None:
    """Raise :class:`UnsafeWeightsError` unless ``path`` is a TorchScript archive (``torch.jit.load`` reads those
    with its C++ unpickler, which builds tensors and TorchScript objects only, never Python objects)."""
    if not is_torchscript(path):
        raise UnsafeWeightsError(
            f"weights file {path} is not a TorchScript archive (as torch.jit.save writes); refusing to load it"
        )


def load_torchscript(path: Path, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` of a TorchScript archive (no Python unpickling); other files are refused."""
    path = Path(path)
    check_torchscript(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
            return torch.jit.load(str(path), map_location=map_location)
    except Exception as err:
        raise WeightsError(f"cannot load TorchScript weights file {path}: {_first_line(err)}") from err


def _read(path: Path) -> Any:
    if is_safetensors(path):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if is_torchscript(path):
        return load_torchscript(path).state_dict()
    return torch.load(path, map_location="cpu", weights_only=True)


def load_state_dict(path: str | os.PathLike, *, unwrap: tuple[str, ...] = ("state_dict",)) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read without unpickling any other object (see the module docstring).

    A checkpoint that nests its state dict under one of ``unwrap`` (e.g. ``{"state_dict": {...}, "epoch": 3}``)
    gives the nested dict. Raises :class:`UnsafeWeightsError` / :class:`WeightsError` naming the file.
    """
    path = Path(path)
    try:
        obj = _read(path)
    except WeightsError:
        raise
    except Exception as err:  # UnpicklingError (a pickled object), SafetensorError, a zip that is no checkpoint...
        raise UnsafeWeightsError(
            f"cannot load weights file {path} as plain tensors (safetensors, torch.save read with "
            f"weights_only=True, or TorchScript); evalkit never unpickles other objects from a weights file. "
            f"{_first_line(err)}"
        ) from err
    for key in unwrap:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"weights file {path} holds no state dict (got {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"weights file {path} is not a state dict of tensors (e.g. entry {bad[0]!r})")
    return dict(obj)


@contextlib.contextmanager
def library_loader(module: Any, attr: str, replacement: Any) -> Iterator[None]:
    """Within the block, ``module.<attr>`` is ``replacement`` (e.g. a library's ``load_state_dict_from_url``
    that returns tensors evalkit read itself), restored afterwards."""
    real = getattr(module, attr)
    setattr(module, attr, replacement)
    try:
        yield
    finally:
        setattr(module, attr, real)


def mismatch(path: Path, what: str, err: BaseException) -> WeightsError:
    """The error for a readable weights file that does not fit the network (missing / unexpected keys, shapes)."""
    detail = " ".join(str(err).split())
    detail = detail if len(detail) <= 400 else detail[:400] + "…"
    return WeightsError(f"weights file {path} does not hold {what}: {detail}")
