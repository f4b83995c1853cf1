"""Tiny random-weight transformer pipelines for the diffusers adapter's tests, built offline from configs.

The components are diffusers' and transformers' own classes, sized as in diffusers' fast pipeline tests
(``tests/pipelines/*/test_*.py``), with tokenizers built in memory instead of downloaded: a byte-level CLIP BPE
with no merges, a T5 Unigram and a Gemma BPE over a small word list. Each pipeline is saved with
``save_pretrained`` and loaded back by path, as a user's downloaded pipeline would be. Images are 16×16 (8×8
latents, a VAE that halves; Sana 32×32) so a sampler grid runs in seconds on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# the tokenizers' whole words (other text falls back to letters)
WORDS = ["a", "red", "bus", "on", "the", "bridge", "two", "cats", "sofa", "bowl", "of", "fruit", "lighthouse", "at"]
# FLUX.1-dev's own scheduler config: resolution-dependent shift (mu from the image sequence length)
FLUX_SCHEDULE = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
SD3_SHIFT = 3.0  # Stable Diffusion 3(.5)'s FlowMatchEulerDiscreteScheduler shift
SANA_SHIFT = 3.0  # Sana 1024 px: DPM-Solver on flow sigmas, flow_shift 3
LCM_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
}


def clip_tokenizer() -> Any:
    """CLIP's tokenizer on a byte-level alphabet without merges: every word is its characters (514 tokens)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def clip_text(projection: bool, hidden: int = 16) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=514,
        hidden_size=hidden,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=hidden,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    torch.manual_seed(0)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def t5(d_model: int = 32) -> tuple[Any, Any]:
    """A T5 Unigram tokenizer over :data:`WORDS` and letters (no sentencepiece) and a one-layer T5 encoder."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    config = T5Config(
        vocab_size=len(pieces),
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    return tokenizer, T5EncoderModel(config)


def vae_kl(latent_channels: int = 4, **kw: Any) -> Any:
    """A two-block AutoencoderKL: 8×8 latents ↔ 16×16 images."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(4, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=16,
        **kw,
    )


def sd_unet(**kw: Any) -> Any:
    """A Stable-Diffusion-shaped UNet2DConditionModel at torch seed 0: 8×8×4 latents, cross-attention width 16."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=4,
        **kw,
    )


def save(pipe: Any, folder: Path) -> Path:
    pipe.save_pretrained(folder)
    return folder


def sd3(folder: Path) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_projection_dim=16,
        joint_attention_dim=32,
        pooled_projection_dim=32,
    )
    t5_tokenizer, t5_encoder = t5(32)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SD3_SHIFT),
        vae=vae_kl(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=clip_text(True),
        tokenizer=clip_tokenizer(),
        text_encoder_2=clip_text(True),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_encoder,
        tokenizer_3=t5_tokenizer,
    )
    return save(pipe, folder)


def flux(folder: Path, guidance_embeds: bool = True) -> Path:
    """FLUX.1-dev-shaped (``guidance_embeds``: guidance-distilled) or FLUX.1-schnell-shaped (without)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2×2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance_embeds,
    )
    t5_tokenizer, t5_encoder = t5(32)
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULE),
        vae=vae_kl(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=clip_text(False),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5_encoder,
        tokenizer_2=t5_tokenizer,
    )
    return save(pipe, folder)


def pixart_sigma(folder: Path) -> Path:
    """PixArt-Σ: an ε-prediction DiT with a learned variance, T5 captions, DPM-Solver as its own scheduler."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=16,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    tokenizer, encoder = t5(32)
    pipe = PixArtSigmaPipeline(
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
        vae=vae_kl(),
        text_encoder=encoder,
        tokenizer=tokenizer,
    )
    return save(pipe, folder)


def sana(folder: Path) -> Path:
    """Sana: a flow-matching linear DiT, Gemma-2 captions, DC-AE, and (as Sana's own) DPM-Solver on flow sigmas."""
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=16,  # 32×32 images: SanaPipeline wants sizes divisible by 32
    )
    torch.manual_seed(0)
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=[1, 1],
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    tokenizer = gemma_tokenizer()
    torch.manual_seed(0)
    encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tokenizer),
            hidden_size=8,
            intermediate_size=16,
            head_dim=8,
            num_attention_heads=2,
            num_key_value_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=1024,
            pad_token_id=0,
            attn_implementation="eager",
        )
    )
    scheduler = DPMSolverMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SANA_SHIFT
    )
    pipe = SanaPipeline(
        tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    return save(pipe, folder)


def gemma_tokenizer() -> Any:
    """A Gemma BPE whose merges spell whole words: those of :data:`WORDS` and of the instruction SanaPipeline puts
    before every prompt by default (~170 tokens, not its ~1000 characters: the Gemma encoder stays cheap)."""
    import inspect

    from diffusers import SanaPipeline
    from transformers import GemmaTokenizer

    instruction = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
    words = dict.fromkeys("▁" + w for w in " ".join([*instruction, *WORDS]).split())
    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz"))
    merges = list(dict.fromkeys((w[: k - 1], w[k - 1]) for w in words for k in range(2, len(w) + 1)))
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *chars, *(a + b for a, b in merges)]
    return GemmaTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(pieces))}, merges=merges)


def lcm(folder: Path) -> Path:
    """A latent consistency model: an SD-shaped UNet with a guidance embedding (``time_cond_proj_dim``)."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    unet = sd_unet(time_cond_proj_dim=32)
    pipe = LatentConsistencyModelPipeline(
        vae=vae_kl(),
        text_encoder=clip_text(False),
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=LCMScheduler(**LCM_SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return save(pipe, folder)


def sd(folder: Path) -> Path:
    """A Stable-Diffusion-shaped text-to-image pipeline (SD 1.5's noise schedule) on the tiny parts above."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae_kl(),
        text_encoder=clip_text(False),
        tokenizer=clip_tokenizer(),
        unet=sd_unet(),
        scheduler=DDIMScheduler(**LCM_SCHEDULE, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return save(pipe, folder)
