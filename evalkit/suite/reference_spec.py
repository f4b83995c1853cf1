"""A suite's ``reference`` field: the real images its metrics compare with and, under ``train``, the model's
training split (for the metrics asking whether samples copy it: ``memorisation``, ``authpct``, ``ct``, ``fls``).

``reference: {dataset: mnist-heldout, train: mnist-train}``. The reference is one of ``dataset`` (a built-in set),
``path`` (images: a folder, zip, tar or ``.npz`` array) or ``stats`` (mean and covariance), with ``samples``,
``strict`` and ``name``. ``train`` takes a string — a built-in dataset's name, else a path to images, as the command
line's reference argument — or a mapping like the reference's without ``stats`` (a training split is compared
sample by sample). Both are read later by one reader (:func:`evalkit.references.open.open_reference`); names and paths
are checked by the preflight. A suite without ``train`` has the reference mapping, and so the hashes, it always had.
"""

from __future__ import annotations

from typing import Any

_REFERENCE_KEYS = {"dataset": "", "path": "", "stats": "", "samples": "", "strict": "", "name": "", "train": ""}
_TRAIN_KEYS = {"dataset": "", "path": "", "samples": "", "strict": "", "name": ""}


def read_reference(v: Any, x: Any) -> dict[str, Any] | None:
    """The validated ``reference`` mapping (None where the suite has none); ``v``: the suite validator, whose
    ``fail`` names the file and field."""
    if x is None:
        return None
    x = v.mapping("reference", x, _REFERENCE_KEYS)
    _read_source(v, "reference", x, ("dataset", "path", "stats"))
    out = dict(x)
    if "train" in x:
        out["train"] = read_train(v, x["train"])
    return out


def read_train(v: Any, x: Any) -> str | dict[str, Any]:
    """``reference.train``: a dataset name or images path (string), or a mapping with one of ``dataset``/``path``."""
    if isinstance(x, str):
        return v.path_string("reference.train", x)
    if not isinstance(x, dict):
        raise v.fail(
            "reference.train",
            "expected a dataset name or a path to the training images, or a mapping with one of 'dataset', 'path'; "
            f"got {_kind(x)}",
        )
    if "stats" in x:
        raise v.fail(
            "reference.train.stats",
            "a training split is compared sample by sample: give its images ('dataset' or 'path'), not statistics",
        )
    x = v.mapping("reference.train", x, _TRAIN_KEYS)
    _read_source(v, "reference.train", x, ("dataset", "path"))
    return dict(x)


def _read_source(v: Any, f: str, x: dict[str, Any], kinds_allowed: tuple[str, ...]) -> None:
    kinds = [k for k in kinds_allowed if k in x]
    if len(kinds) != 1:
        expected = ", ".join(f"'{k}'" for k in kinds_allowed)
        raise v.fail(f, f"expected exactly one of {expected}; got {kinds or 'none'}")
    v.path_string(f"{f}.{kinds[0]}", x[kinds[0]])
    if "name" in x:
        v.string(f"{f}.name", x["name"])
    if "samples" in x:
        v.integer(f"{f}.samples", x["samples"], minimum=1)
    if "strict" in x and not isinstance(x["strict"], bool):
        raise v.fail(f"{f}.strict", f"expected true or false; got {_kind(x['strict'])}")


def _kind(x: Any) -> str:
    return "nothing (null)" if x is None else f"{type(x).__name__} {x!r}"[:80]
