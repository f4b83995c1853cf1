"""A suite's ``extractor`` fields: a registered name, or a mapping naming custom weights for that network.

```yaml
extractor: inception-clean                                  # the standard weights (evalkit weights)
extractor: {name: inception-clean, weights: my_inception.pt}  # your own file (a folder for mnist-net)
metrics: [fd, {name: kid, extractor: {name: inception-clean, weights: my_inception.pt}}]
```

A relative ``weights`` path is read from the suite file's folder. The file must exist when the suite is loaded (a
:class:`~evalkit.suite.validate.SuiteError` naming ``extractor.weights`` and the path otherwise, exit 2); its sha256 is
recorded in the suite (``Suite.extractor_weights``: name → ``{path, sha256}``), so a cell computed with other weights
is never reused, and the gate's protocol holds the hash, not the path. Weights belong to the extractor *name*: one
network per name in a suite, so every metric reading that extractor reads the custom network, and two different
files for one name are an error. The extractor hashes the file again when it loads it; a file that is not the
standard one gives ``weights_id = "custom:<sha256>"`` in every result row, which the gate and reports never take
for standard-weights numbers.

:func:`parse_extractor_spec` reads the same forms from the command line (``NAME`` or ``NAME=FILE``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evalkit.hashing import sha256_file

WEIGHTS = "weights"
_KEYS = ("name", WEIGHTS)


def parse_extractor_spec(value: str | Mapping[str, Any]) -> tuple[str, str | None]:
    """``"NAME"``, ``"NAME=FILE"`` (command line) or ``{name: NAME, weights: FILE}`` → ``(NAME, FILE or None)``.

    The form only: neither the name nor the file is checked here (a suite's validator does both, naming the field).
    Raises ValueError on another shape."""
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in _KEYS]
        if unknown or not isinstance(value.get("name"), str):
            raise ValueError(f"expected {{name: NAME, weights: FILE}}; got {dict(value)!r}")
        weights = value.get(WEIGHTS)
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise ValueError(f"expected weights: a file path; got {weights!r}")
        return value["name"], None if weights is None else os.fspath(weights)
    if not isinstance(value, str):
        raise ValueError(f"expected an extractor name, NAME=FILE or {{name, weights}}; got {value!r}")
    name, sep, path = value.partition("=")
    if sep and not path:
        raise ValueError(f"expected NAME=FILE; got {value!r} (no file after '=')")
    return name, (path or None)


def weights_digest(path: Path) -> str:
    """sha256 of a weights file; of a folder (mnist-net's), the sha256 of its files' relative names and digests."""
    if path.is_file():
        return sha256_file(path)
    lines = [f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n" for f in sorted(path.rglob("*")) if f.is_file()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


class ExtractorFields:
    """Reads every ``extractor`` field of one suite (:meth:`read`) and collects the custom weights they give
    (:attr:`weights`, extractor name → ``{"path", "sha256"}``). ``fail(field, message)`` makes the suite's error."""

    def __init__(self, file: str | Path | None, fail: Callable[[str, str], Exception], names: list[str]) -> None:
        self.base = Path(file).parent if file else Path.cwd()
        self.fail, self.names = fail, names
        self.weights: dict[str, dict[str, str]] = {}

    def read(self, f: str, x: Any) -> str | None:
        """The extractor name of field ``f`` (None stays None: not set); a mapping's weights are checked and kept."""
        if x is None:
            return None
        if isinstance(x, Mapping):
            bad = [k for k in x if k not in _KEYS]
            if bad:
                raise self.fail(f"{f}.{bad[0]}", f"unknown key; expected one of: {', '.join(_KEYS)}")
            name = self._name(f"{f}.name", x.get("name"))
            if x.get(WEIGHTS) is not None:
                self._weights(f"{f}.{WEIGHTS}", name, x[WEIGHTS])
            return name
        return self._name(f, x)

    def _name(self, f: str, x: Any) -> str:
        if not isinstance(x, str) or x not in self.names:
            raise self.fail(
                f, f"unknown value {x!r}; expected one of: {', '.join(self.names)} (or {{name: NAME, weights: FILE}})"
            )
        return x

    def _weights(self, f: str, name: str, x: Any) -> None:
        if not isinstance(x, str) or not x.strip() or "\0" in x:
            raise self.fail(f, f"expected the path of a weights file; got {x!r}")
        path = Path(os.path.expanduser(x))
        path = (path if path.is_absolute() else self.base / path).absolute()
        if not path.exists():
            raise self.fail(f, f"weights file not found: {path}")
        try:
            spec = {"path": str(path.resolve()), "sha256": weights_digest(path)}
        except OSError as e:
            raise self.fail(f, f"cannot read the weights file {path}: {e.strerror or e}") from None
        held = self.weights.setdefault(name, spec)
        if held["sha256"] != spec["sha256"]:
            raise self.fail(
                f,
                f"extractor {name} already has weights {held['path']} in this suite; one network per extractor "
                "name (every metric reading it reads the same network)",
            )
