"""ImageReward's network on transformers' BLIP classes, and the converter from the authors' checkpoint layout.

ImageReward (``ImageReward/ImageReward.py`` of THUDM/ImageReward) is BLIP's image-text matching path with an MLP in
place of the ITM head: a ViT-L/16 at 224 px (timm-style: pre-norm blocks, fused qkv with bias, exact GELU, LayerNorm
eps 1e-6, a final norm, a patch-embedding convolution with bias) encodes the image; a BERT-base encoder (post-norm,
word + absolute position embeddings and a LayerNorm, no token types) with cross-attention to every image token in
every layer encodes the prompt; the MLP maps the text ``[CLS]`` state to a reward, normalised with the package's
mean and std. transformers' ``BlipVisionModel`` and ``BlipTextModel`` (the towers of ``BlipForImageTextRetrieval``,
adapted from the same BLIP ``vit.py`` / ``med.py``) express all of it, so the network is built from them, not
re-written; only the 5-layer MLP (linear layers without activations, as in the package) is plain torch.

Details checked against the package: the text attention mask is additive (the package adds -10000, transformers the
dtype's minimum: both give padded keys exactly zero weight in float32); ``score`` feeds the tokenizer's ids as they
are (``[CLS]`` first, not BLIP's ``[ENC]`` swap); ``ImageReward.load`` does not interpolate position embeddings.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

# The published architecture (``BLIP_Pretrain(image_size=224, vit='large')`` + med_config.json with encoder_width
# set to the ViT width). ``arch`` overrides (tests, other checkpoints) are merged over these.
VISION = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "initializer_range": 0.02,
}
TEXT = {
    "vocab_size": 30524,  # bert-base-uncased's 30522 + [DEC] and [ENC], which BLIP's tokenizer adds
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
MLP_WIDTHS = (1024, 128, 64, 16, 1)  # ImageReward's MLP after the text width
REWARD_MEAN = 0.16717362830052426  # ImageReward.mean / .std: the reward is (mlp(text CLS) - mean) / std
REWARD_STD = 1.0333394966054072


def configs(arch: dict[str, dict[str, Any]] | None = None) -> tuple[Any, Any]:
    """transformers ``(BlipVisionConfig, BlipTextConfig)`` of the published architecture, with ``arch`` overrides."""
    from transformers import BlipTextConfig, BlipVisionConfig

    arch = arch or {}
    unknown = set(arch) - {"vision", "text"}
    if unknown:
        raise ValueError(f"image_reward arch has keys vision and text, not {sorted(unknown)}")
    vision = BlipVisionConfig(**{**VISION, **arch.get("vision", {})})
    no_generation = {"bos_token_id": None, "eos_token_id": None, "sep_token_id": None}  # unused by the encoder
    text = {**TEXT, **no_generation, **arch.get("text", {})}
    # is_decoder builds the cross-attention layers (the forward still runs bidirectionally: is_decoder=False there)
    text = BlipTextConfig(**text, encoder_hidden_size=vision.hidden_size, is_decoder=True, use_cache=False)
    for cfg in (vision, text):
        cfg._attn_implementation = "eager"  # BLIP's attention is written out; masks must be additive floats
    return vision, text


class ImageRewardNet(nn.Module):
    """ViT (``vision_model``), BERT with cross-attention (``text_encoder``) and the reward MLP (``mlp``)."""

    def __init__(self, arch: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel

        vision, text = configs(arch)
        self.vision_model = BlipVisionModel(vision)
        self.text_encoder = BlipTextModel(text, add_pooling_layer=False)
        layers: list[nn.Module] = []
        width = text.hidden_size
        for i, out in enumerate(MLP_WIDTHS):  # same indices as the package's nn.Sequential (dropouts in between)
            layers.append(nn.Linear(width, out))
            if i < 3:
                layers.append(nn.Dropout((0.2, 0.2, 0.1)[i]))
            width = out
        self.mlp = nn.Sequential(*layers)

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 1 + patches, width): the ViT's output after its final norm (BLIP's ``visual_encoder(image)``)."""
        return self.vision_model(pixel_values=pixels).last_hidden_state

    def reward(self, tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) normalised rewards: the text ``[CLS]`` state after cross-attending to ``tokens``, through the MLP."""
        image_mask = torch.ones(tokens.shape[:-1], dtype=torch.long, device=tokens.device)
        out = self.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=tokens,
            encoder_attention_mask=image_mask,
        )
        raw = self.mlp(out.last_hidden_state[:, 0, :].float())[:, 0]
        return (raw - REWARD_MEAN) / REWARD_STD


# ImageReward.pt → ImageRewardNet. Keys outside these three trees (BLIP's contrastive projections ``blip.vision_proj``
# / ``blip.text_proj``, unused by the reward) are left out, as the package's non-strict load leaves out what it lacks.
_VISION_TOP = {
    "cls_token": "embeddings.class_embedding",
    "pos_embed": "embeddings.position_embedding",
    "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
    "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
    "norm.weight": "post_layernorm.weight",
    "norm.bias": "post_layernorm.bias",
}
_VISION_BLOCK = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.projection",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias)")


def convert_key(key: str) -> str | None:
    """The :class:`ImageRewardNet` name of an ImageReward checkpoint key, or None for a key the reward does not use.
    A key inside the used trees that has no counterpart keeps a recognisable name, so a strict load names it."""
    if key.startswith("blip.visual_encoder."):
        rest = key.removeprefix("blip.visual_encoder.")
        block = _BLOCK_KEY.fullmatch(rest)
        if block and block[2] in _VISION_BLOCK:
            return f"vision_model.encoder.layers.{block[1]}.{_VISION_BLOCK[block[2]]}.{block[3]}"
        return "vision_model." + _VISION_TOP.get(rest, f"unconverted.{rest}")
    if key.startswith("blip.text_encoder."):
        if key.endswith("embeddings.position_ids"):  # a saved arange buffer; transformers makes its own
            return None
        return "text_encoder." + key.removeprefix("blip.text_encoder.")  # med.py's BertModel names are kept as-is
    if key.startswith("mlp.layers."):
        return "mlp." + key.removeprefix("mlp.layers.")
    return None


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ImageReward checkpoint (``blip.visual_encoder.*``, ``blip.text_encoder.*``, ``mlp.layers.*``) renamed for
    :class:`ImageRewardNet`; tensors are shared, not copied."""
    out = {}
    for key, value in state.items():
        new = convert_key(key)
        if new is not None:
            out[new] = value
    return out


def network_from_checkpoint(
    state: dict[str, torch.Tensor], arch: dict[str, dict[str, Any]] | None = None
) -> ImageRewardNet:
    """:class:`ImageRewardNet` holding an ImageReward checkpoint's tensors (no copy: built on the meta device, the
    converted tensors assigned). Raises RuntimeError when a tensor is missing, unexpected or of another shape."""
    with torch.device("meta"):
        net = ImageRewardNet(arch)
    net.load_state_dict(convert_state_dict(state), strict=True, assign=True)
    emb = net.text_encoder.embeddings  # the one buffer a checkpoint does not hold, made as transformers makes it
    emb.position_ids = torch.arange(emb.position_embeddings.num_embeddings).expand((1, -1))
    left = [k for k, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"the checkpoint left {', '.join(left[:3])} unset")
    return net
