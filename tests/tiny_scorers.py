"""Tiny random-weight stand-ins for the preference scorers' networks, built offline, shared by the scorers' own
tests and the end-to-end suite tests: a PickScore_v1-like transformers CLIP folder (with CLIP's real BPE tokenizer,
read from the vocabulary file open_clip ships), and small open_clip configs registered by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# 2023-style preprocessor_config.json, as in openai/laion CLIP repositories (size as an int: the shortest edge)
PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}


def clip_tokenizer():
    """transformers' CLIPTokenizer with CLIP's BPE vocabulary and merges, read from open_clip's bundled file."""
    import open_clip
    from transformers import CLIPTokenizer

    bpe = open_clip.tokenizer.SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(k, k): v for k, v in bpe.encoder.items()}
    merges = [tuple(m) for m in sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)]
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token="<|endoftext|>", **special)


def pick_score_folders(root: Path) -> dict[str, Path]:
    """{"pick": PickScore_v1-like folder, "laion": processor folder} holding one tiny random CLIP."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2, patch_size=32)
    config = CLIPConfig(
        text_config={**text, "max_position_embeddings": 77, "eos_token_id": 2},  # 2: the old configs' argmax pooling
        vision_config={**vision, "image_size": 224},
        projection_dim=24,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    tokenizer = clip_tokenizer()
    out = {"pick": root / "PickScore_v1", "laion": root / "laion"}
    model.save_pretrained(out["pick"])
    config.save_pretrained(out["laion"])
    for folder in out.values():
        tokenizer.save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    assert (out["pick"] / "model.safetensors").is_file()
    return out


def open_clip_config(name: str, config: dict, folder: Path) -> str:
    """Register open_clip model config ``name`` (a JSON file in ``folder``) and return the name."""
    import open_clip

    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(str(path))
    return name
