"""The extractor contract and its registry.

An extractor turns a uint8 image batch ``(B, 3, H, W)`` into named per-sample arrays, e.g.
``{"features": (B, 2048), "logits": (B, 1008)}`` for Inception. One forward per image serves every
metric that reads the same extractor (FD, KID, IS and PR all read one Inception pass).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.registry import EXTRACTORS


@runtime_checkable
class Extractor(Protocol):
    name: str  # registry name, e.g. "mnist-net", "inception"
    weights_id: str  # sha256 of the standard weights file, "custom:<sha256>" of any other, or "random:<seed>"
    mode: str  # preprocessing mode, recorded in every result row (e.g. "clean", "native")
    outputs: tuple[str, ...]  # keys __call__ returns

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """``images``: uint8 (B, 3, H, W) on any device → float arrays with leading dim B."""
        ...


# Optional parts of an extractor (not in the Protocol, looked up with getattr):
# - ``encode_text(prompts) -> (len(prompts), D)``: the runner stores each sample's prompt embedding as
#   ``text_embeds`` (CLIP score, HPSv2);
# - ``takes_prompts = True``: ``__call__(images, prompts=...)`` also gets each image's prompt (a list, or None
#   where images have none, e.g. a reference set) and may return prompt-dependent outputs (a reward model's
#   score); without prompts it returns only the outputs that need none.


def extract(extractor: Extractor, images: torch.Tensor, prompts: list[str] | None = None) -> dict[str, np.ndarray]:
    """One forward of ``extractor`` on a batch; ``prompts`` (one per image) go to an extractor that takes them."""
    if prompts is not None and getattr(extractor, "takes_prompts", False):
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
        return extractor(images, prompts=list(prompts))  # type: ignore[call-arg]
    return extractor(images)


ExtractorFactory = Callable[..., Extractor]


def register_extractor(name: str) -> Callable[[ExtractorFactory], ExtractorFactory]:
    return EXTRACTORS.register(name)


def available_extractors() -> list[str]:
    return EXTRACTORS.names()


def build_extractor(name: str, *, device: str | torch.device = "cpu", **options: Any) -> Extractor:
    """Build extractor ``name``. ``weights=<file>`` (a suite's ``extractor: {name, weights}``) loads custom weights:
    the extractor hashes the file and its ``weights_id`` says ``custom:<sha256>`` unless it is the standard file.
    ``weights=None`` is the same as leaving it out; an extractor whose factory takes no ``weights`` refuses a file."""
    factory = EXTRACTORS.get(name)
    if "weights" in options and options["weights"] is None:
        del options["weights"]
    if "weights" in options and not _takes(factory, "weights"):
        raise ConfigError(f"extractor {name!r} takes no weights file (extractor.weights: {options['weights']})")
    if options.get("heads") and not _takes(factory, "heads"):
        raise ConfigError(f"extractor {name!r} cannot compute {', '.join(options['heads'])}: it has no optional heads")
    if "heads" in options and not options["heads"]:
        del options["heads"]
    return factory(device=device, **options)


def _takes(factory: Callable[..., Any], option: str) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: let the call say
        return True
    return any(p.name == option or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
