"""The real images a run compares with, as features: the suite's reference set and, where ``reference.train`` names
one, the model's training split — each opened by the one reference reader (:mod:`evalkit.references.open`), passed
once through the run's extractors and kept in the reference feature cache (:mod:`evalkit.references.cache`), so a
second run (or a second suite on the same data) reads them back. The runner hands the reference to every metric as
``MetricInputs.ref`` and the training split as ``MetricInputs.train``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.features.base import Extractor
from evalkit.references import open_reference, reference_features
from evalkit.references.open import open_train

Features = dict[str, dict[str, np.ndarray]]  # extractor name → output name → (N, ...) array


class RunReferences:
    """The suite's reference set and training split, read on first use. ``info`` is what run.json records of them:
    the reference's name, fingerprint and size, and the training split's under ``train`` once it was read."""

    def __init__(
        self,
        spec: dict[str, Any] | None,
        *,
        base_dir: Path,
        cache_dir: Path | None,
        batch_size: int,
        log: Callable[[str], None],
    ):
        self.spec, self.base_dir, self.cache_dir, self.batch_size, self.log = spec, base_dir, cache_dir, batch_size, log
        self._ref: Features | None = None
        self._train: Features | None = None
        self._info: dict[str, Any] | None = None
        self._train_info: dict[str, Any] | None = None

    @property
    def info(self) -> dict[str, Any] | None:
        if self._info is None:
            return None
        return {**self._info, "train": self._train_info} if self._train_info else self._info

    def features(self, extractors: dict[str, Extractor]) -> Features:
        """The reference's features for each extractor ({} where the suite has no reference or no extractor)."""
        if self._ref is None:
            self._ref = {}
            if self.spec is not None and extractors:
                ref = open_reference(self.spec, base_dir=self.base_dir)
                self._ref = self._extract(ref, extractors)
                self.log(f"reference {ref.name}: {len(ref)} images")  # after: files skipped as unreadable are out
                self._info = {"name": ref.name, "fingerprint": ref.fingerprint, "n": len(ref)}
        return self._ref

    def train_features(self, extractors: dict[str, Extractor]) -> Features | None:
        """The training split's features for each extractor; None where the suite names no training split."""
        if self._train is None and self.spec is not None and self.spec.get("train") is not None and extractors:
            train = open_train(self.spec, base_dir=self.base_dir)
            self._train = self._extract(train, extractors)
            self.log(f"training split {train.name}: {len(train)} images")
            self._train_info = {"name": train.name, "fingerprint": train.fingerprint, "n": len(train)}
        return self._train

    def _extract(self, images: Any, extractors: dict[str, Extractor]) -> Features:
        return reference_features(
            images, list(extractors.values()), cache_dir=self.cache_dir, batch_size=self.batch_size
        )
