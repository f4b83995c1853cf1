"""The memorisation panel: for each finished cell that ran ``memorisation``, its closest (generated, training) pairs
side by side with their distance and the copy threshold, so a reader can look at what the number counts.

The pairs come from the cell's ``metric_extras`` (the metric keeps the closest ones). A generated image is shown where
the cell kept it (sample index < ``grid_samples``); any other is named by its index (its seed is ``(seed, index)``,
so it can be regenerated). Training images are read back from the split the run recorded (or the reference, where the
suite has no training split); where that cannot be opened any more, the pair is listed without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.report.grids import Strip, cell_label, images_strip, sample_strip
from evalkit.store import RunData

SHOWN = 8  # pairs per cell
TRAIN = "training split"


@dataclass
class Pair:
    gen: int
    train: int
    distance: float
    gen_image: Strip | None
    train_image: Strip | None


@dataclass
class CellPairs:
    cell: str
    extractor: str
    threshold: float
    share: float  # the memorisation row: share of samples closer than the threshold
    against: str  # "training split" or "reference": what the pairs' second images are from
    pairs: list[Pair] = field(default_factory=list)


def closest_pair_sections(run: RunData, shown: int = SHOWN) -> list[CellPairs]:
    """One section per finished cell and extractor with memorisation's closest pairs (none for other runs)."""
    out, opened = [], _Split(run)
    for rec in (c for c in run.cells.values() if c.get("status") == "done"):
        for key, extra in (rec.get("metric_extras") or {}).items():
            extractor, _, row = key.rpartition("/")
            if row != "memorisation" or not extra.get("closest_pairs"):
                continue
            kept = run.samples(rec["cell_id"])
            pairs = extra["closest_pairs"][:shown]
            against = str(extra.get("train", TRAIN))  # memorisation's extra: "training split" or "reference"
            train_images = opened.images(against, [int(p["train"]) for p in pairs])
            threshold = float(extra.get("threshold", np.nan))
            section = CellPairs(cell_label(rec), extractor, threshold, _share(run, rec, extractor), against)
            for p, train in zip(pairs, train_images):
                gen = int(p["gen"])
                shown_gen = None
                if kept is not None and gen in set(map(int, kept["indices"])):
                    shown_gen = sample_strip(kept, [gen], f"generated sample {gen}")
                section.pairs.append(Pair(gen, int(p["train"]), float(p["distance"]), shown_gen, train))
            out.append(section)
    return out


class _Split:
    """The run's training split (or reference) opened once, for the images of the pairs."""

    def __init__(self, run: RunData) -> None:
        self.spec = (run.config.get("reference") or {}) if "config" in run.manifest else {}
        self._sets: dict[str, Any] = {}

    def images(self, which: str, indices: list[int]) -> list[Strip | None]:
        try:
            images = self._open(which).images_at(indices)
        except (EvalkitError, OSError, IndexError, KeyError, ValueError):
            return [None] * len(indices)  # moved or deleted since the run: the pairs are still listed
        return [images_strip(img[None], f"{which} image {i}") for img, i in zip(images, indices)]

    def _open(self, which: str) -> Any:
        from evalkit.references.open import open_reference, open_train

        if which not in self._sets:
            self._sets[which] = open_train(self.spec) if which == TRAIN else open_reference(self.spec)
            if self._sets[which] is None:
                raise KeyError(which)
        return self._sets[which]


def _share(run: RunData, rec: dict[str, Any], extractor: str) -> float:
    df = run.results
    rows = df[(df["cell_id"] == rec["cell_id"]) & (df["metric"] == "memorisation") & (df["extractor"] == extractor)]
    return float(rows["value"].iloc[0]) if len(rows) else float("nan")
