"""Per-image score metrics: the mean of a score an extractor gives each image, with a bootstrap CI over images.

``aesthetic`` (LAION aesthetic predictor v2, the ``aesthetic`` head of ``clip-vit-l14``), ``hpsv2``,
``image_reward`` and ``pick_score`` (reward models that score each image against its prompt; their extractors
output the per-image score under the metric's name). One builder, :func:`score_metric`, makes each: value = mean
of the per-image scores, CI = seeded percentile bootstrap of that mean over images, ``per_sample`` = the scores
themselves (a study's paired comparisons difference them image by image), and ``extra`` = ``n``. The mean per
prompt (:func:`per_prompt_means`) is the report's, from the stored per-image scores: kept in every cell's record it
would grow with the prompts (30 000 for a COCO FID-30k protocol).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.metrics._common import gen_array, option
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.resampling import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_mean_ci

OPTIONS = {
    "bootstrap": "bootstrap resamples over images for the CI (0: none; default 1000)",
    "confidence": "CI level (default 0.95)",
}


def per_image(inputs: MetricInputs, output: str, metric: str) -> np.ndarray:
    """The (N,) float64 scores of extractor output ``output`` (an (N, 1) column is flattened)."""
    x = gen_array(inputs, output, metric)
    if x.ndim > 1 and int(np.prod(x.shape[1:])) != 1:
        raise ValueError(f"metric {metric!r} reads one score per image from {output!r}; got shape {x.shape}")
    return x.reshape(-1).astype(np.float64)


def per_prompt_means(scores: np.ndarray, prompts: list[str]) -> dict[str, tuple[float, int]]:
    """(mean score, number of images) of each distinct prompt, keyed by the prompt (sorted), in plain floats."""
    if len(prompts) != len(scores):
        raise ValueError(f"{len(prompts)} prompts for {len(scores)} scores")
    unique, inverse = np.unique(np.asarray(prompts, dtype=object), return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(scores, dtype=np.float64), minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    return {str(p): (float(s / c), int(c)) for p, s, c in zip(unique, sums, counts)}


def mean_score(inputs: MetricInputs, output: str, metric: str) -> MetricValue:
    """Mean of the per-image scores, its bootstrap CI (options ``bootstrap``, ``confidence``) and ``n`` in ``extra``."""
    scores = per_image(inputs, output, metric)
    if scores.size == 0:
        raise ValueError(f"metric {metric!r}: no images to score")
    out = MetricValue(float(scores.mean()), extra={"n": int(scores.size)})
    n_boot = int(option(inputs, "bootstrap", DEFAULT_RESAMPLES))
    if n_boot > 0:
        out.ci_low, out.ci_high = bootstrap_mean_ci(
            scores,
            n_resamples=n_boot,
            seed=inputs.seed,
            confidence=float(option(inputs, "confidence", DEFAULT_CONFIDENCE)),
        )
    return out


def needs_prompts(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: a reward model scores each image against its prompt, so the samples must have prompts."""
    if ctx.prompts is not None:
        return []
    has = "class labels, not prompts" if ctx.labels is not None else "no conditions"
    return [
        "needs a prompt per sample (the reward model scores each image against its prompt); "
        f"the suite has {has}; set conditions.prompts (a list or a prompt file)"
    ]


def score_metric(
    name: str,
    *,
    default_extractor: str,
    description: str,
    reference: str,
    paper: str,
    output: str | None = None,
    prompts: bool = False,
    extractor_outputs: tuple[str, ...] = (),
) -> MetricDef:
    """A registered-ready :class:`MetricDef` for the per-image score ``output`` (default: ``name``); ``prompts``:
    the score needs each image's prompt (a preflight check refuses a suite without)."""
    key = output or name

    def compute(inputs: MetricInputs) -> dict[str, MetricValue]:
        return {name: mean_score(inputs, key, name)}

    def per_sample(inputs: MetricInputs) -> dict[str, np.ndarray]:
        return {name: per_image(inputs, key, name)}

    def replicates(inputs: MetricInputs, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {name: per_image(inputs, key, name)[idx].mean(axis=1)}

    return MetricDef(
        name=name,
        needs_reference=False,
        higher_is_better={name: True},
        compute=compute,
        default_extractor=default_extractor,
        description=description,
        options=dict(OPTIONS),
        per_sample=per_sample,
        replicates=replicates,
        check=needs_prompts if prompts else None,
        extractor_outputs=extractor_outputs,
        reference=reference,
        paper=paper,
    )


AESTHETIC = score_metric(
    "aesthetic",
    default_extractor="clip-vit-l14",
    extractor_outputs=("aesthetic",),
    description="LAION aesthetic predictor v2: an MLP on L2-normalised CLIP ViT-L/14 image embeddings (the "
    "optional head of clip-vit-l14, same forward), mean over images (roughly 1-10); bootstrap CI over images.",
    reference="christophschuhmann/improved-aesthetic-predictor simple_inference.py (MLP transcribed), "
    "sac+logos+ava1-l14-linearMSE.pth on OpenAI CLIP ViT-L/14",
    paper="Schuhmann 2022 (LAION-Aesthetics predictor v2)",
)
HPSV2 = score_metric(
    "hpsv2",
    default_extractor="hpsv2",
    prompts=True,
    description="Human Preference Score v2: a CLIP model fine-tuned on human choices scores each image against "
    "its prompt; mean over images; bootstrap CI over images.",
    reference="hpsv2 package (tgxs002/HPSv2, hpsv2.score)",
    paper="Wu et al. 2023 (HPSv2, arXiv:2306.09341)",
)
IMAGE_REWARD = score_metric(
    "image_reward",
    default_extractor="image_reward",
    prompts=True,
    description="ImageReward: a BLIP-based reward model trained on expert rankings scores each image against "
    "its prompt; mean over images; bootstrap CI over images.",
    reference="image-reward package (THUDM/ImageReward, ImageReward-v1.0 RM.score)",
    paper="Xu et al. 2023 (ImageReward, NeurIPS 2023, arXiv:2304.05977)",
)
PICK_SCORE = score_metric(
    "pick_score",
    default_extractor="pick_score",
    prompts=True,
    description="PickScore: a CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences; logit scale × cosine of image "
    "and prompt embeddings per image; mean over images; bootstrap CI over images.",
    reference="yuvalkirstain/PickScore (transformers CLIPModel yuvalkirstain/PickScore_v1)",
    paper="Kirstain et al. 2023 (Pick-a-Pic, NeurIPS 2023, arXiv:2305.01569)",
)
SCORES = (AESTHETIC, HPSV2, IMAGE_REWARD, PICK_SCORE)  # each reads the per-image output of its own name
for _defn in SCORES:
    register_metric(_defn)
