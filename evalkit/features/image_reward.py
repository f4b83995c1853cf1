"""ImageReward (Xu et al., "ImageReward: Learning and Evaluating Human Preferences for Text-to-Image Generation",
NeurIPS 2023; THUDM/ImageReward, package ``image-reward``) as the extractor ``image_reward``.

Per image: ``image_embeds`` (the BLIP ViT-L/16's ``[CLS]`` token after its final norm, 1024-d), and, when the image
has a prompt, ``image_reward``: the package's ``ImageReward.score(prompt, image)``, i.e. ``(mlp(text [CLS]) - mean)
/ std`` with the package's constants, the text encoded by BERT cross-attending to the image tokens. The network is
transformers' BLIP towers (:mod:`evalkit.features.image_reward_blip`), loaded from the authors' ``ImageReward.pt``
through a key converter. Preprocessing and tokenisation are the package's: torchvision ``Resize(224, bicubic)`` and
``CenterCrop(224)`` on the PIL image, CLIP's mean/std; BERT's ``bert-base-uncased`` WordPiece tokenizer plus BLIP's
``[DEC]``/``[ENC]`` tokens, padded/truncated to 35 tokens.

Files (see :mod:`evalkit.features.weights`): ``ImageReward.pt`` (registry ``image-reward``; read as plain tensors,
never unpickled) and the tokenizer vocabulary ``bert-base-uncased-vocab.txt`` (registry ``bert-base-uncased-vocab``),
which the package downloads at run time and evalkit needs on disk: ``tokenizer=<file or folder with vocab.txt>``,
else ``$EVALKIT_WEIGHTS_DIR/bert-base-uncased-vocab.txt``, else the Hugging Face cache of ``bert-base-uncased``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import DependencyError, WeightsError
from evalkit.features.base import register_extractor
from evalkit.features.safe_load import load_state_dict, mismatch
from evalkit.features.weights import (
    ResolvedWeights,
    WeightsMismatchError,
    WeightsNotFoundError,
    check_trusted,
    file_sha256,
    get_entry,
    matches,
    missing_message,
    resolve_weights,
)

WEIGHTS_ENTRY = "image-reward"
VOCAB_ENTRY = "bert-base-uncased-vocab"
HF_VOCAB_REPOS = ("google-bert/bert-base-uncased", "bert-base-uncased")  # the Hugging Face cache names of the vocab
IMAGE_SIZE = 224
MAX_LENGTH = 35  # the package's tokenizer call: padding="max_length", truncation=True, max_length=35
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
BERT_SPECIAL = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}  # bert-base-uncased's ids
BERT_VOCAB_SIZE = 30522


def read_vocab(path: Path) -> dict[str, int]:
    """A WordPiece vocabulary file (one token a line, the line number is the id), as BERT's tokenizers read it."""
    with open(path, encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def load_tokenizer(path: str | os.PathLike) -> Any:
    """BLIP's ``init_tokenizer`` offline: a lower-casing BERT WordPiece tokenizer on the vocabulary file ``path``,
    with ``[DEC]`` (as bos) and ``[ENC]`` added after the vocabulary, as the package adds them."""
    try:
        from transformers import BertTokenizer
    except ImportError as err:
        raise DependencyError("the image_reward extractor needs transformers: pip install transformers") from err
    if "vocab" in inspect.signature(BertTokenizer.__init__).parameters:  # transformers >= 5 (tokenizers-backed)
        tokenizer = BertTokenizer(vocab=read_vocab(Path(path)), do_lower_case=True)
    else:  # transformers 4: the Python tokenizer the package itself ran on
        tokenizer = BertTokenizer(vocab_file=str(path), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def check_bert_vocab(path: Path) -> None:
    """Raise :class:`WeightsError` unless ``path`` is laid out as bert-base-uncased's vocabulary (30,522 tokens, the
    special tokens at their ids): another vocabulary would give the network ids it was not trained on."""
    vocab = read_vocab(path)
    wrong = {t: vocab.get(t) for t, i in BERT_SPECIAL.items() if vocab.get(t) != i}
    if len(vocab) != BERT_VOCAB_SIZE or wrong:
        raise WeightsError(
            f"tokenizer vocabulary {path} is not bert-base-uncased's ({len(vocab)} tokens, expected "
            f"{BERT_VOCAB_SIZE}{'; special-token ids ' + str(wrong) if wrong else ''})"
        )


def _hf_cache() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return "<Hugging Face cache>"
    return str(constants.HF_HUB_CACHE)


def _hf_cached_vocab() -> list[Path]:
    """bert-base-uncased's ``vocab.txt`` in the Hugging Face cache (as ``BertTokenizer.from_pretrained`` left it)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return []
    found = [try_to_load_from_cache(repo, "vocab.txt") for repo in HF_VOCAB_REPOS]
    return [Path(p) for p in found if isinstance(p, str) and os.path.isfile(p)]


def resolve_vocab(explicit: str | os.PathLike | None = None) -> ResolvedWeights:
    """The tokenizer vocabulary: ``explicit`` (a file, or a folder holding ``vocab.txt``), else the registry's search
    (``$EVALKIT_WEIGHTS_DIR/bert-base-uncased-vocab.txt``), else the Hugging Face cache; a file found implicitly must
    be trusted and match the registered sha256."""
    if explicit is not None:
        path = Path(os.path.expanduser(str(explicit)))
        return resolve_weights(VOCAB_ENTRY, path / "vocab.txt" if path.is_dir() else path)
    entry = get_entry(VOCAB_ENTRY)
    try:
        return resolve_weights(VOCAB_ENTRY)
    except WeightsNotFoundError:
        cached = _hf_cached_vocab()
    if not cached:
        hf = [
            Path(_hf_cache(), f"models--{r.replace('/', '--')}", "snapshots", "*", "vocab.txt") for r in HF_VOCAB_REPOS
        ]
        raise WeightsNotFoundError(
            missing_message(entry, entry.search_paths() + hf) + "\nThe tokenizer vocabulary can also be given as "
            "the extractor option tokenizer=<vocab.txt or a folder holding it>."
        )
    check_trusted(cached[0])
    digest = file_sha256(cached[0])
    if not matches(entry, digest):
        raise WeightsMismatchError(f"{cached[0]} (Hugging Face cache) has sha256 {digest}, expected {entry.sha256}")
    return ResolvedWeights(entry, cached[0], digest, standard=True)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float (B, 3, 224, 224): the package's ``_transform(224)`` on each image as a PIL image."""
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize(IMAGE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(PIXEL_MEAN, PIXEL_STD),
        ]
    )
    arr = images.cpu().numpy().transpose(0, 2, 3, 1)
    return torch.stack([transform(Image.fromarray(np.ascontiguousarray(a))) for a in arr])


class ImageRewardExtractor:
    """``image_embeds`` for every image and ``image_reward`` for images with a prompt (see the module docstring)."""

    outputs = ("image_embeds", "image_reward")
    takes_prompts = True
    resolution = IMAGE_SIZE

    def __init__(
        self,
        net: torch.nn.Module,
        tokenizer: Any,
        *,
        weights_id: str,
        device: str | torch.device = "cpu",
        mode: str = "pil-bicubic-224",
        name: str = "image_reward",
    ) -> None:
        self.name, self.weights_id, self.mode = name, weights_id, mode
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.tokenizer = tokenizer

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, prompts: list[str] | None = None) -> dict[str, np.ndarray]:
        tokens = self.net.image_tokens(preprocess(images).to(self.device))
        out = {"image_embeds": tokens[:, 0, :].float().cpu().numpy()}
        if prompts is not None:
            if len(prompts) != len(images):
                raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
            text = self.tokenize(prompts)
            rewards = self.net.reward(tokens, text["input_ids"], text["attention_mask"])
            out["image_reward"] = rewards.float().cpu().numpy()
        return out

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The package's tokenizer call on each prompt: ``[CLS] … [SEP]`` padded/truncated to 35 ids."""
        text = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        return {k: text[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def info(self) -> dict[str, Any]:
        return {"model": "ImageReward-v1.0", "weights_id": self.weights_id, "mode": self.mode}


def load_network(path: str | os.PathLike, arch: dict[str, dict[str, Any]] | None = None) -> torch.nn.Module:
    """:class:`~evalkit.features.image_reward_blip.ImageRewardNet` with an ImageReward checkpoint's tensors (read
    without unpickling, renamed by the converter); a file of another shape is a :class:`WeightsError` naming it."""
    from evalkit.features.image_reward_blip import network_from_checkpoint

    state = load_state_dict(path)  # its errors (UnsafeWeightsError, ...) pass as they are
    try:
        return network_from_checkpoint(state, arch)
    except RuntimeError as err:  # missing / unexpected keys, shapes
        raise mismatch(
            Path(path), "an ImageReward checkpoint (blip.visual_encoder, blip.text_encoder, mlp)", err
        ) from err


@register_extractor("image_reward")
def build_image_reward(
    *,
    device: str | torch.device = "cpu",
    weights: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    pretrained: bool = True,
    seed: int = 0,
    arch: dict[str, dict[str, Any]] | None = None,
) -> ImageRewardExtractor:
    """ImageReward v1.0. ``weights``: an explicit checkpoint (else the registry's ``ImageReward.pt``);
    ``pretrained=False``: random weights (``random:<seed>``); ``tokenizer``: the vocabulary file or folder;
    ``arch``: ``{"vision": {...}, "text": {...}}`` overrides of the published sizes (tests, other checkpoints).
    Real weights of the published sizes refuse a vocabulary not laid out as bert-base-uncased's; a vocabulary other
    than the registered file is recorded in ``mode`` (``+vocab:<sha256 prefix>``)."""
    vocab = resolve_vocab(tokenizer)
    mode = "pil-bicubic-224" + ("" if vocab.standard else f"+vocab:{vocab.sha256[:12]}")
    if weights is None and not pretrained:
        from evalkit.features.image_reward_blip import ImageRewardNet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net, weights_id = ImageRewardNet(arch), f"random:{seed}"
    else:
        resolved = resolve_weights(WEIGHTS_ENTRY, weights)
        if arch is None:  # the published network needs bert-base-uncased's ids, whichever file holds them
            check_bert_vocab(vocab.path)
        net, weights_id = load_network(resolved.path, arch), resolved.weights_id
    return ImageRewardExtractor(net, load_tokenizer(vocab.path), weights_id=weights_id, device=device, mode=mode)
