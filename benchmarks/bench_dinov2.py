"""DINOv2 ViT-L/14 features per second on the CPU: evalkit's ``dinov2-vit-l14`` extractor (uint8 in, dgm-eval's
preprocessing included, features out) vs the plain timm forward on already-normalised tensors.

    python benchmarks/bench_dinov2.py                          # batch 32 of 256×256 images, 2 repeats
    python benchmarks/bench_dinov2.py --repeats 5 --size 512 --json out.jsonl

Setup, untimed: the full-size ViT-L/14 with random weights (``pretrained=False``: real weights are not
obtainable offline; the arithmetic is the same), one batch of uint8 images (``conftest.smooth_images``), and
the network input made from them the dgm-eval way (torchvision ``Resize((224, 224), BICUBIC)`` on each PIL
image, ``ToTensor``, ``Normalize``). One warm-up call each. Timed, interleaved A B A B (medians):

- evalkit: ``extractor(uint8 batch)["features"]`` (Pillow-exact bicubic resize on tensors, normalisation,
  forward, CLS token to numpy);
- timm: ``model.forward_features(x)[:, 0]`` on the prepared float32 batch, under ``torch.inference_mode``;
  the same module object, so only evalkit's preprocessing and bookkeeping differ.

Also printed: the preprocessing alone (evalkit's tensors vs dgm-eval's PIL + torchvision, per batch), the
overhead ratio (target ≤ 1.10×) and how far evalkit's features are from timm's on dgm-eval's input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Idle OpenMP threads sleep rather than spin (as tests/conftest.py sets): on a busy machine spinning threads
# made the many small matrix products of the resize 10-20x slower. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from _common import emit, fmt_s, interleaved, median, print_machine
from conftest import smooth_images

TARGET_RATIO = 1.10


def dgm_eval_inputs(images: np.ndarray) -> torch.Tensor:
    """dgm-eval's DINOv2Encoder.transform on each image (PIL resize, ToTensor, Normalize), stacked."""
    import torchvision.transforms as TF
    from PIL import Image

    resize = TF.Compose([TF.Resize((224, 224), TF.InterpolationMode.BICUBIC), TF.ToTensor()])
    norm = TF.Normalize(np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))
    return torch.stack([norm(resize(Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0))))) for a in images])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32, help="images per call (default 32)")
    p.add_argument("--size", type=int, default=256, help="input image side in pixels (default 256)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats per side (default 2)")
    p.add_argument("--arch", default="dinov2-vit-l14", choices=["dinov2-vit-l14", "dinov2-vit-b14"])
    p.add_argument("--json", help="append the result record (a JSON line) to this file")
    args = p.parse_args(argv)
    machine = print_machine()

    from evalkit.features import build_extractor

    ex = build_extractor(args.arch, pretrained=False, seed=0)
    images_np = smooth_images(args.batch, args.size, seed=1)
    images = torch.from_numpy(images_np)
    x = dgm_eval_inputs(images_np)

    def evalkit_call() -> np.ndarray:
        return ex(images)["features"]

    def timm_call() -> np.ndarray:
        with torch.inference_mode():
            return ex.model.forward_features(x)[:, 0].numpy()

    times, out = interleaved({"evalkit": evalkit_call, "timm": timm_call}, args.repeats, warmup=True)
    prep, _ = interleaved({"evalkit": lambda: ex.preprocess(images), "dgm-eval": lambda: dgm_eval_inputs(images_np)}, 3)
    ours, plain = out["evalkit"], out["timm"]
    agreement = float(np.linalg.norm(ours - plain) / np.linalg.norm(plain))
    m_ours, m_plain = median(times["evalkit"]), median(times["timm"])
    ratio = m_ours / m_plain
    print(f"{args.arch} random weights, batch {args.batch} of {args.size}×{args.size} uint8, {args.repeats} repeats")
    print(f"  evalkit extractor (preprocessing incl.): {fmt_s(m_ours)}  {args.batch / m_ours:.2f} images/s")
    print(f"  timm forward on normalised tensors:      {fmt_s(m_plain)}  {args.batch / m_plain:.2f} images/s")
    print(f"  ratio evalkit/timm: {ratio:.3f}× (target ≤ {TARGET_RATIO:.2f}×)  features rel diff: {agreement:.2e}")
    print(
        f"  preprocessing per batch: evalkit {fmt_s(median(prep['evalkit']))}, "
        f"dgm-eval PIL+torchvision {fmt_s(median(prep['dgm-eval']))}"
    )
    emit(
        {
            "bench": "dinov2",
            "arch": args.arch,
            "batch": args.batch,
            "size": args.size,
            "repeats": args.repeats,
            "evalkit_s": times["evalkit"],
            "timm_s": times["timm"],
            "ratio": ratio,
            "features_rel_diff": agreement,
            "preprocess_s": prep,
            "machine": machine,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
