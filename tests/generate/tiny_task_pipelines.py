"""Tiny random-weight task pipelines for the diffusers adapter's image-conditioned tasks, built offline.

The Stable-Diffusion parts of :mod:`tiny_pipelines` (its tokenizer, text encoder, VAE and UNet shape), with what
each task model adds, sized as in diffusers' fast tests but smaller: a ControlNet for the text-to-image UNet
(its conditioning embedding halves, as the VAE does), the ×4 upscaler (a 7-channel UNet taking the noise level
as a class label, a three-block VAE that quadruples) and InstructPix2Pix (an 8-channel UNet: latents + the source's).
Each is saved with ``save_pretrained`` and loaded back by path, as a user's downloaded model would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from generate.tiny_pipelines import LCM_SCHEDULE, clip_text, clip_tokenizer, save, vae_kl

UPSCALE_NOISE_LEVELS = 100  # the upscaler UNet's noise-level embeddings (its pipeline's max_noise_level: one less)


def task_unet(in_channels: int, **kw: Any) -> Any:
    """:func:`tiny_pipelines.sd_unet`'s UNet with ``in_channels`` inputs (latents and what the task concatenates)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
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


def controlnet(folder: Path) -> Path:
    """A ControlNetModel for :func:`tiny_pipelines.sd`'s UNet: a 16×16 control map embedded to its 8×8 latents."""
    from diffusers import ControlNetModel

    torch.manual_seed(1)
    net = ControlNetModel(
        in_channels=4,
        conditioning_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        layers_per_block=1,
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=4,
        conditioning_embedding_out_channels=(4, 8),  # one stride-2 block: 16×16 → 8×8
    )
    # diffusers starts a ControlNet's output convolutions at zero (training grows them from nothing): random ones
    # here, so that the control map changes the image
    for p in [*net.controlnet_down_blocks.parameters(), *net.controlnet_mid_block.parameters()]:
        torch.nn.init.normal_(p, std=0.5)
    net.save_pretrained(folder)
    return folder


def upscaler(folder: Path) -> Path:
    """A StableDiffusionUpscalePipeline (stable-diffusion-x4-upscaler's shape and v-prediction DDIM): 8×8 → 32×32."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(4, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=32,
        scaling_factor=0.08333,  # the upscaler's own (its pipeline resets any other)
    )
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=clip_text(False),
        tokenizer=clip_tokenizer(),
        unet=task_unet(7, num_class_embeds=UPSCALE_NOISE_LEVELS),
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction", **LCM_SCHEDULE),
        max_noise_level=UPSCALE_NOISE_LEVELS - 1,
    )
    return save(pipe, folder)


def instruct_pix2pix(folder: Path) -> Path:
    """A StableDiffusionInstructPix2PixPipeline: 16×16 images, its UNet reads the source's latents beside its own."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae_kl(),
        text_encoder=clip_text(False),
        tokenizer=clip_tokenizer(),
        unet=task_unet(8),
        scheduler=EulerAncestralDiscreteScheduler(
            **{k: LCM_SCHEDULE[k] for k in ("beta_start", "beta_end", "beta_schedule")}
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return save(pipe, folder)
