"""Built-in zoo: small models trained here on real MNIST digits, with the code that trained them.

``load_mnist_unet`` gives a class-conditional diffusion model to evaluate; ``load_mnist_net`` gives
the classifier whose features/logits are evalkit's built-in extractor for digits. The zoo knows
nothing of the harness; `evalkit zoo train mnist` (see ``commands``) retrains both. The names load on first
use (:mod:`evalkit.zoo.models` imports torch), so the command's ``--help`` does not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalkit.lazy import lazy_exports

if TYPE_CHECKING:
    from evalkit.zoo.models import (
        NULL_CLASS,
        MnistNet,
        ZooWeightsError,
        load_mnist_net,
        load_mnist_unet,
        model_card,
    )

__all__ = ["NULL_CLASS", "MnistNet", "ZooWeightsError", "load_mnist_net", "load_mnist_unet", "model_card"]

__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "models"))
