"""PickScore v1 (Kirstain et al. 2023, arXiv:2305.01569): a CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences, as
the model card of ``yuvalkirstain/PickScore_v1`` runs it. Outputs ``image_embeds`` (B, 1024) and, given prompts,
``pick_score`` (B,) = ``logit_scale.exp() * cos(image, prompt)`` per image (the card's ``scores`` before its
softmax). :meth:`PickScoreExtractor.encode_text` gives the prompt embeddings, so ``clip_score`` can run on it.

The card's code: ``processor = AutoProcessor.from_pretrained("laion/CLIP-ViT-H-14-laion2B-s32B-b79K")``, ``model =
AutoModel.from_pretrained("yuvalkirstain/PickScore_v1")``; ``processor(images=..., padding=True, truncation=True,
max_length=77)`` and the same for the text; ``get_image_features`` / ``get_text_features``, each L2-normalised.
Here the model is a transformers ``CLIPModel`` built from the folder's ``config.json`` and given the tensors of its
``model.safetensors`` (or ``pytorch_model.bin``, read weights-only) by
:func:`evalkit.features.safe_load.load_state_dict`.
Images go through the processor's own image transform (shortest side to 224, bicubic; centre crop 224; rescale; CLIP
mean/std) with its PIL backend: the transform the card ran when it was written (transformers 4). transformers 5
defaults to a torchvision backend whose antialiased resize differs slightly.

Weights: a folder in the Hugging Face snapshot layout (config.json + model.safetensors, and the tokenizer and
processor files): ``weights=`` (the folder or its weights file), else ``$EVALKIT_WEIGHTS_DIR/PickScore_v1/``, else
the Hugging Face cache's snapshot of the repo (read offline). Processor (tokenizer + image transform): ``processor=``
(a folder or a cached hub id), else laion/CLIP-ViT-H-14-laion2B-s32B-b79K in the cache (the card's), else the files
in the weights folder (the PickScore_v1 repo ships them too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import DependencyError
from evalkit.features.base import register_extractor
from evalkit.features.safe_load import load_state_dict, mismatch
from evalkit.features.weights import (
    ENV_WEIGHTS_DIR,
    WeightsMismatchError,
    WeightsNotFoundError,
    check_trusted,
    get_entry,
    resolve_weights,
)

REPO = "yuvalkirstain/PickScore_v1"
PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
ENTRY = "pickscore-v1"  # evalkit.features.weights
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer_config.json")
MAX_LENGTH = 77
# (vision width, vision layers, text width, text layers, projection) of CLIP ViT-H/14: other shapes are never PickScore
VIT_H = (1280, 32, 1024, 24, 1024)
DOWNLOAD = (
    f"hf download {REPO} --local-dir $EVALKIT_WEIGHTS_DIR/PickScore_v1   (or without --local-dir: into the Hugging "
    f"Face cache; the processor the card uses: hf download {PROCESSOR_REPO} preprocessor_config.json "
    "tokenizer.json tokenizer_config.json vocab.json merges.txt special_tokens_map.json)"
)


def hub_snapshot(repo: str, marker: str) -> Path | None:
    """The Hugging Face cache's snapshot folder of ``repo`` that holds ``marker`` (read offline), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo, marker)
    except Exception:
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def _weights_file(folder: Path) -> Path | None:
    return next((folder / f for f in WEIGHTS_FILES if (folder / f).is_file()), None)


def _folder_places() -> list[tuple[str, Path | None]]:
    """(label, folder) in lookup order: $EVALKIT_WEIGHTS_DIR/PickScore_v1, the hub cache's snapshot of the repo."""
    env = os.environ.get(ENV_WEIGHTS_DIR)
    cache = hub_snapshot(REPO, "config.json")
    if cache is None:  # named in the error: where `hf download` would put it
        try:
            from huggingface_hub import constants

            cache = Path(constants.HF_HUB_CACHE) / f"models--{REPO.replace('/', '--')}"
        except ImportError:
            cache = Path(f"models--{REPO.replace('/', '--')}")
    return [(f"${ENV_WEIGHTS_DIR}/PickScore_v1", Path(env) / "PickScore_v1" if env else None), ("cache", cache)]


def find_weights(weights: str | os.PathLike | None) -> tuple[Path, Path, str]:
    """(folder, weights file, weights_id before the architecture check) for ``weights`` or the implicit places."""
    if weights is not None:
        given = Path(os.path.expanduser(str(weights)))
        file = given if given.is_file() else _weights_file(given) if given.is_dir() else None
        if file is None or not (file.parent / "config.json").is_file():
            raise WeightsNotFoundError(
                f"PickScore weights not found at the given path {given}: expected a folder with config.json and "
                f"{' or '.join(WEIGHTS_FILES)} (the {REPO} repository's layout). Get it with: {DOWNLOAD}"
            )
        return file.parent, file, resolve_weights(ENTRY, file).weights_id
    searched = []
    for label, folder in _folder_places():
        searched.append(f"  - {folder if folder is not None else f'{label} (not set)'}")
        file = _weights_file(folder) if folder is not None and (folder / "config.json").is_file() else None
        if file is not None:
            check_trusted(file)  # found implicitly: not writable by others
            resolved = resolve_weights(ENTRY, file)
            if not resolved.standard:
                raise WeightsMismatchError(f"{file} has sha256 {resolved.sha256}, not {get_entry(ENTRY).sha256}")
            return folder, file, resolved.weights_id
    raise WeightsNotFoundError(
        f"PickScore v1 weights ({REPO}: config.json + {' or '.join(WEIGHTS_FILES)}, tokenizer and processor "
        "files) not found. Searched:\n" + "\n".join(searched) + f"\nGet them where online: {DOWNLOAD}; "
        "or pass the folder as the extractor's weights."
    )


def find_processor(processor: str | os.PathLike | None, folder: Path) -> Path:
    """The folder whose tokenizer and preprocessor config the extractor uses (see the module docstring)."""
    if processor is not None:
        given = Path(os.path.expanduser(str(processor)))
        found = given if given.is_dir() else hub_snapshot(str(processor), PROCESSOR_FILES[0])
        if found is None:
            raise WeightsNotFoundError(f"processor {processor} is neither a folder nor in the Hugging Face cache")
        return found
    for candidate in (hub_snapshot(PROCESSOR_REPO, PROCESSOR_FILES[0]), folder):
        if candidate is not None and all((candidate / f).is_file() for f in PROCESSOR_FILES):
            return candidate
    raise WeightsNotFoundError(
        f"PickScore's processor files ({', '.join(PROCESSOR_FILES)} and the tokenizer's) are neither in {folder} "
        f"nor in the Hugging Face cache's {PROCESSOR_REPO}. Get them with: {DOWNLOAD}"
    )


def _pooled(out: Any) -> torch.Tensor:
    """The projected embedding from ``get_*_features``: a tensor (transformers 4) or its ``pooler_output`` (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def pil_image_processor(folder: Path) -> Any:
    """The folder's CLIP image processor with the PIL backend (transformers 5: ``backend="pil"``; 4: the slow one)."""
    import transformers
    from transformers import AutoImageProcessor

    major = int(transformers.__version__.split(".")[0])
    return AutoImageProcessor.from_pretrained(folder, **({"backend": "pil"} if major >= 5 else {"use_fast": False}))


class PickScoreExtractor:
    takes_prompts = True
    outputs = ("image_embeds", "pick_score")  # pick_score only where prompts are given
    mode = "pick_score:clip-processor-pil"

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None = None,
        processor: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        name: str = "pick_score",
    ) -> None:
        try:
            from transformers import AutoTokenizer, CLIPConfig, CLIPModel
        except ImportError as err:
            raise DependencyError("the pick_score extractor needs transformers: pip install transformers") from err
        self.name, self.device = name, torch.device(device)
        folder, file, weights_id = find_weights(weights)
        config = CLIPConfig.from_pretrained(folder)
        shape = (config.vision_config.hidden_size, config.vision_config.num_hidden_layers)
        shape += (config.text_config.hidden_size, config.text_config.num_hidden_layers, config.projection_dim)
        self.weights_id = weights_id if shape == VIT_H or weights_id.startswith("custom:") else f"custom:{weights_id}"
        self.model = CLIPModel(config)
        state = load_state_dict(file)  # safetensors, or the .bin read weights-only
        state = {k: v for k, v in state.items() if not k.endswith("position_ids")}  # a buffer older files saved
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise mismatch(file, "a transformers CLIPModel state dict for its config.json", err) from err
        self.model.to(self.device).eval()
        self.processor_folder = find_processor(processor, folder)
        self.tokenizer = AutoTokenizer.from_pretrained(self.processor_folder)
        self.image_processor = pil_image_processor(self.processor_folder)
        self.folder = folder

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → the processor's ``pixel_values`` of the same images as PIL images (the card's input)."""
        from PIL import Image

        arr = images.cpu().numpy().transpose(0, 2, 3, 1)
        pil = [Image.fromarray(np.ascontiguousarray(a)) for a in arr]
        return self.image_processor(images=pil, return_tensors="pt")["pixel_values"].to(self.device)

    def _text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        return _pooled(self.model.get_text_features(**tokens)).float()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, prompts: list[str] | None = None) -> dict[str, np.ndarray]:
        image = _pooled(self.model.get_image_features(pixel_values=self.pixel_values(images))).float()
        out = {"image_embeds": image.cpu().numpy()}
        if prompts is not None:
            if len(prompts) != len(images):
                raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
            text = self._text(list(prompts))
            image_n = image / torch.norm(image, dim=-1, keepdim=True)
            text_n = text / torch.norm(text, dim=-1, keepdim=True)
            out["pick_score"] = (self.model.logit_scale.exp() * (text_n * image_n).sum(dim=-1)).cpu().numpy()
        return out

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        """(n, 1024) prompt embeddings, not normalised (``clip_score`` normalises)."""
        return self._text(list(prompts)).cpu().numpy()

    def info(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "processor": str(self.processor_folder), "weights_id": self.weights_id}


@register_extractor("pick_score")
def build_pick_score(
    *,
    device: str | torch.device = "cpu",
    weights: str | os.PathLike | None = None,
    processor: str | os.PathLike | None = None,
) -> PickScoreExtractor:
    return PickScoreExtractor(weights=weights, processor=processor, device=device)
