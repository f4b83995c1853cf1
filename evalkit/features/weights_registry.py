"""The weights registry's table: every standard network file evalkit's extractors load (:class:`WeightsFile`: file
name, URL, sha256 where published, size, which extractor uses it, the library caches searched), and which entry each
built-in extractor (and optional head) loads. Lookup, verification and messages are :mod:`evalkit.features.weights`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ENV_WEIGHTS_DIR = "EVALKIT_WEIGHTS_DIR"


def _torch_hub_dir() -> Path:
    """torch.hub's checkpoint folder, found as ``torch.hub.get_dir()`` finds it but without importing torch (the
    preflight runs before torch loads): ``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``,
    then ``hub``. Where torch is already loaded, its own answer (which honours ``torch.hub.set_dir``)."""
    hub = sys.modules.get("torch.hub")
    if hub is not None:
        return Path(hub.get_dir()) / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(xdg, "torch")))
    return Path(home) / "hub" / "checkpoints"


@dataclass(frozen=True)
class WeightsFile:
    name: str  # registry key
    filename: str  # the file name libraries use on disk
    url: str
    sha256: str | None  # full digest where published
    sha256_prefix: str | None  # torch-hub name prefix, checked when the full digest is unknown
    size: int | None  # bytes, where known
    used_by: str  # which extractor / library loads it
    caches: tuple[Callable[[], Path], ...] = field(default=(), repr=False)  # library cache folders
    note: str = ""
    other_is_custom: bool = False  # a file of another hash found implicitly: loaded as custom, not refused

    def library_paths(self) -> list[Path]:
        out = []
        for folder in self.caches:
            try:
                out.append(folder() / self.filename)
            except Exception:
                continue
        return out

    def search_paths(self) -> list[Path]:
        env = os.environ.get(ENV_WEIGHTS_DIR)
        return ([Path(env) / self.filename] if env else []) + self.library_paths()


def _hf_cached_folder(repo: str, filename: str) -> Path:
    """The Hugging Face cache's snapshot folder holding ``repo``'s ``filename`` (read offline); raises if there is none
    (a search folder that is not there is skipped)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    if not isinstance(found, str):
        raise FileNotFoundError(f"{repo}/{filename} is not in the Hugging Face cache")
    return Path(found).parent


def _clip_cache() -> Path:
    return Path(os.path.expanduser("~/.cache/clip"))


def _cleanfid_cache() -> Path:
    return Path("/tmp")  # clean-fid's hard-wired download folder on Linux (cleanfid.features.feature_extractor)


# The sha256 of NVIDIA's inception-2015-12-05.pt as downloaded (the digest k-diffusion's evaluation code pins).
CLEAN_INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
_TV = "https://download.pytorch.org/models/"
REGISTRY: dict[str, WeightsFile] = {
    w.name: w
    for w in [
        WeightsFile(
            "inception-clean",
            "inception-2015-12-05.pt",
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
            CLEAN_INCEPTION_SHA256,
            CLEAN_INCEPTION_SHA256[:8],
            None,
            "inception-clean (clean-fid mode 'clean': TorchScript port of TF Inception 2015-12-05)",
            (_cleanfid_cache, _torch_hub_dir),
            note="NVIDIA publishes no sha256; this is the digest k-diffusion pins for the download. A file with "
            "another hash is loaded as custom weights",
            other_is_custom=True,
        ),
        WeightsFile(
            "inception-torch-fidelity",
            "weights-inception-2015-12-05-6726825d.pth",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
            "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            "6726825d",
            None,
            "inception-legacy_tensorflow (torch-fidelity FeatureExtractorInceptionV3; torchmetrics FID)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "inception-pytorch-fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            None,
            "6726825d",
            None,
            "inception-legacy_pytorch (pytorch-fid; clean-fid legacy_pytorch)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "lpips-alex-backbone",
            "alexnet-owt-7be5be79.pth",
            _TV + "alexnet-owt-7be5be79.pth",
            None,
            "7be5be79",
            None,
            "lpips-alex (torchvision AlexNet IMAGENET1K_V1)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "lpips-vgg-backbone",
            "vgg16-397923af.pth",
            _TV + "vgg16-397923af.pth",
            None,
            "397923af",
            None,
            "lpips-vgg (torchvision VGG16 IMAGENET1K_V1)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "lpips-squeeze-backbone",
            "squeezenet1_1-b8a52dc0.pth",
            _TV + "squeezenet1_1-b8a52dc0.pth",
            None,
            "b8a52dc0",
            None,
            "lpips-squeeze (torchvision SqueezeNet 1.1 IMAGENET1K_V1)",
            (_torch_hub_dir,),
        ),
        WeightsFile(
            "clip-vit-b-32-openai",
            "ViT-B-32.pt",
            "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
            "40d36571",
            None,
            "clip (open_clip ViT-B-32, pretrained 'openai')",
            (_clip_cache,),
        ),
        WeightsFile(
            "dinov2-vitl14-pretrain",
            "dinov2_vitl14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
            None,
            None,
            1217586395,
            "dinov2-vit-l14 (DINOv2 ViT-L/14 LVD-142M, torch hub facebookresearch/dinov2 dinov2_vitl14)",
            (_torch_hub_dir,),
            note="Meta publishes no sha256 and torch hub checks none: a file found here is taken as the standard "
            "file; an explicit path is custom weights. Size as listed publicly (304.4M float32 parameters)",
        ),
        WeightsFile(
            "dinov2-vitb14-pretrain",
            "dinov2_vitb14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
            None,
            None,
            None,
            "dinov2-vit-b14 (DINOv2 ViT-B/14 LVD-142M, torch hub facebookresearch/dinov2 dinov2_vitb14)",
            (_torch_hub_dir,),
            note="Meta publishes no sha256 and torch hub checks none: a file found here is taken as the standard "
            "file; an explicit path is custom weights (86.6M float32 parameters, about 346 MB)",
        ),
        WeightsFile(
            "mae-vitl16-pretrain",
            "mae_pretrain_vit_large.pth",
            "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth",
            None,
            None,
            None,
            "mae-vit-l16 (MAE ViT-L/16 pretrained encoder, facebookresearch/mae; dgm-eval's mae encoder)",
            (_torch_hub_dir,),
            note="Meta publishes no sha256 and dgm-eval's load_state_dict_from_url checks none: a file found here is "
            "taken as the standard file; an explicit path is custom weights (303.3M float32 parameters, ~1.2 GB)",
        ),
        WeightsFile(
            "clip-vit-l14-openai",
            "ViT-L-14.pt",
            "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
            "b8cca3fd",
            None,
            "clip-vit-l14 (open_clip ViT-L-14, pretrained 'openai')",
            (_clip_cache,),
        ),
        WeightsFile(
            "laion-aesthetic-v2",
            "sac+logos+ava1-l14-linearMSE.pth",
            "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth",
            None,
            None,
            None,
            "clip-vit-l14 head 'aesthetic' (LAION improved aesthetic predictor v2: MLP on CLIP ViT-L/14 embeddings)",
            (_clip_cache,),
            note="the author publishes no hash (the file is in the GitHub repository's tree), so any file of this "
            "name is accepted; it must still load as plain tensors in the MLP's layout",
        ),
        # Both HPS checkpoints: torch.save pickles of {"state_dict": ...} for open_clip ViT-H-14, read weights-only. No
        # sha256 is published (None: any file of the name is accepted; pin it once known). Found also where the hpsv2
        # package puts it: the Hugging Face cache (hf_hub_download of xswu/HPSv2) or $HPS_ROOT (~/.cache/hpsv2).
        *(
            WeightsFile(
                f"hpsv2-v{v}",
                filename,
                f"https://huggingface.co/xswu/HPSv2/resolve/main/{filename}",
                None,
                None,
                None,
                f"hpsv2 (version {v}: HPSv{v} checkpoint on open_clip ViT-H-14)",
                (
                    partial(_hf_cached_folder, "xswu/HPSv2", filename),
                    lambda: Path(os.path.expanduser(os.environ.get("HPS_ROOT") or "~/.cache/hpsv2")),
                ),
                note=f"hf download xswu/HPSv2 {filename} (or: hpsv2 package, hps_version='v{v}')",
            )
            for v, filename in (("2.1", "HPS_v2.1_compressed.pt"), ("2.0", "HPS_v2_compressed.pt"))
        ),
        # PickScore v1 is a transformers CLIPModel folder (config.json + model.safetensors, tokenizer and processor
        # files), looked for as $EVALKIT_WEIGHTS_DIR/PickScore_v1/; the extractor also finds the Hugging Face
        # cache's snapshot of the repo (HF_HUB_OFFLINE), which a file entry cannot name. No sha256 published.
        WeightsFile(
            "pickscore-v1",
            "PickScore_v1/model.safetensors",
            "https://huggingface.co/yuvalkirstain/PickScore_v1/resolve/main/model.safetensors",
            None,
            None,
            None,
            "pick_score (yuvalkirstain/PickScore_v1: CLIP ViT-H/14 fine-tuned on Pick-a-Pic)",
            note="hf download yuvalkirstain/PickScore_v1 config.json model.safetensors merges.txt vocab.json "
            "tokenizer.json tokenizer_config.json special_tokens_map.json preprocessor_config.json "
            "--local-dir $EVALKIT_WEIGHTS_DIR/PickScore_v1",
        ),
        # ImageReward v1.0: a torch.save pickle of a plain state dict (blip.visual_encoder.*, blip.text_encoder.*,
        # mlp.layers.*), read weights-only. THUDM publish no sha256 (None: any file of the name is accepted, its own
        # sha256 becomes the weights_id; pin it once known). Also found where the package downloads it.
        WeightsFile(
            "image-reward",
            "ImageReward.pt",
            "https://huggingface.co/THUDM/ImageReward/resolve/main/ImageReward.pt",
            None,
            None,
            None,
            "image_reward (THUDM ImageReward-v1.0: BLIP ViT-L/16 + BERT-base with cross-attention + MLP)",
            (lambda: Path(os.path.expanduser("~/.cache/ImageReward")),),  # image-reward's download_root default
            note="hf download THUDM/ImageReward ImageReward.pt (med_config.json is not needed: evalkit fixes the "
            "architecture)",
        ),
        # The tokenizer vocabulary ImageReward's BLIP tokenizer downloads (BertTokenizer 'bert-base-uncased'). Google
        # and Hugging Face publish no sha256; this digest (231,508 bytes, 30,522 lines) is the file rebuilt from three
        # public copies whose only edits were renamed [unused*] slots, all three giving the same bytes.
        WeightsFile(
            "bert-base-uncased-vocab",
            "bert-base-uncased-vocab.txt",
            "https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt",
            "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "07eced37",
            231508,
            "image_reward (tokenizer: BERT bert-base-uncased WordPiece vocabulary; save vocab.txt under this name)",
            note="hf download google-bert/bert-base-uncased vocab.txt; the Hugging Face cache is searched too",
        ),
    ]
}

# The LPIPS linear heads ship inside the lpips wheel (v0.1); recorded so a changed wheel is noticed.
LPIPS_HEADS_SHA256 = {
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "squeeze": "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
}


# The registry entry each built-in extractor loads when a suite builds it (no options: its default weights).
# Kept equal to the extractors' own tables (inception.WEIGHTS_ENTRY, lpips_net.NETS, clip.REGISTERED) by a test.
EXTRACTOR_WEIGHTS = {
    "clip": "clip-vit-b-32-openai",
    "inception": "inception-clean",
    "inception-clean": "inception-clean",
    "inception-legacy_tensorflow": "inception-torch-fidelity",
    "inception-legacy_pytorch": "inception-pytorch-fid",
    "lpips-alex": "lpips-alex-backbone",
    "lpips-vgg": "lpips-vgg-backbone",
    "lpips-squeeze": "lpips-squeeze-backbone",
    "dinov2-vit-l14": "dinov2-vitl14-pretrain",
    "dinov2-vit-b14": "dinov2-vitb14-pretrain",
    "mae-vit-l16": "mae-vitl16-pretrain",
    "clip-vit-l14": "clip-vit-l14-openai",
    "hpsv2": "hpsv2-v2.1",  # the default version; version="2.0" (Python API) loads hpsv2-v2.0
    # pick_score: not listed, its weights are a folder that may sit in the Hugging Face cache, which the file lookup
    # here cannot see (a preflight would refuse a run that works); the extractor's own error names what is missing.
    "image_reward": "image-reward",  # its tokenizer vocabulary (bert-base-uncased-vocab) is found at build
}


# (extractor, head) → the registry entry of an optional head's file (``heads`` an extractor computes on request).
HEAD_WEIGHTS: dict[tuple[str, str], str] = {
    ("clip-vit-l14", "aesthetic"): "laion-aesthetic-v2",
}
