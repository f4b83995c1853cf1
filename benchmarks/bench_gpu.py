"""f. GPU throughput: FID Inception images/s at batch 256 (fp32, TF32, bf16 autocast, channels_last) for
evalkit's extractor vs torchmetrics, and the built-in zoo model's NFE/s. Skips cleanly without a GPU.

    python benchmarks/bench_gpu.py                  # exits 0 with "SKIPPED: no CUDA device" on a CPU machine
    python benchmarks/bench_gpu.py --batch 256 --batches 10 --json out.jsonl

Network: the tests' random-weight FID Inception (torch-fidelity layout, the ``legacy_tensorflow`` mode:
its resize runs on the GPU inside the network; ``clean`` resizes with PIL on the CPU, so it is not a GPU
benchmark). Inputs: uint8 (B, 3, 64, 64) already on the device. Every variant is warmed up, timed with
CUDA synchronised, and the variants are interleaved over ``--rounds`` rounds; medians reported.
Numeric drift of the reduced-precision variants is printed as the max relative difference of pool3
features vs fp32 (FID itself is not meaningful on one batch).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, interleaved, median, print_machine, random_inception_files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=8, help="batches per timed measurement (default 8)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--json")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("f. GPU: SKIPPED: no CUDA device (torch.cuda.is_available() is False); nothing measured")
        return 0
    print_machine()
    print(f"# device: {torch.cuda.get_device_name(0)}", flush=True)
    dev = torch.device("cuda")
    with tempfile.TemporaryDirectory(prefix="evalkit-gpu-") as tmp:
        w = random_inception_files(Path(tmp) / "weights")
        return run(args, w, dev)


def run(args: argparse.Namespace, w: dict[str, Path], dev) -> int:
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    from evalkit.features.inception import InceptionExtractor

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(dev)
    ex = InceptionExtractor("legacy_tensorflow", device=dev, weights=w["tf"])
    net = ex.net
    tm = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(w["tf"]), antialias=False).to(dev)

    def set_tf32(on: bool) -> None:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on

    def timed(fn, precision: str = "fp32", channels_last: bool = False):
        def go():
            set_tf32(precision == "tf32")
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            net.to(memory_format=fmt)
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
            torch.cuda.synchronize()
            with torch.inference_mode(), ctx:
                for _ in range(args.batches):
                    out = fn()
            torch.cuda.synchronize()
            return out

        return go

    def net_call():
        return net(imgs)[0]

    variants = {
        "evalkit extractor fp32 (incl. copy to host)": timed(lambda: ex(imgs)["features"]),
        "network fp32": timed(net_call),
        "network tf32": timed(net_call, "tf32"),
        "network bf16 autocast": timed(net_call, "bf16"),
        "network fp32 channels_last": timed(net_call, "fp32", True),
        "network bf16 channels_last": timed(net_call, "bf16", True),
        "torchmetrics FID.update fp32": timed(lambda: tm.update(imgs, real=False)),
    }
    for fn in variants.values():  # warm-up (cudnn autotuning, allocator)
        fn()
    times, outs = interleaved(variants, args.rounds)
    set_tf32(False)
    net.to(memory_format=torch.contiguous_format)
    ref = outs["network fp32"].float()
    for name in variants:
        ips = args.batch * args.batches / median(times[name])
        out = outs[name]
        drift = ""
        if isinstance(out, torch.Tensor) and out.shape == ref.shape:
            drift = f", max rel diff vs fp32 {((out.float() - ref).abs().max() / ref.abs().max()).item():.1e}"
        print(f"f. Inception {name}: {ips:.0f} images/s at batch {args.batch}{drift}", flush=True)
        emit(
            {
                "bench": "gpu_inception",
                "variant": name,
                "batch": args.batch,
                "images_per_s": ips,
                "times_s": times[name],
            },
            args.json,
        )

    import numpy as np

    from evalkit.generate import GenerationRequest
    from evalkit.generate.zoo_adapter import ZooMnistAdapter

    model = ZooMnistAdapter(weights="trained", device=str(dev))
    for sampler, steps, guidance in (("ddim", 8, 3.0), ("heun", 8, 3.0)):
        req = GenerationRequest(
            indices=np.arange(args.batch),
            seed=0,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            batch_size=args.batch,
            labels=np.arange(args.batch) % 10,
            device=str(dev),
        )
        list(model.generate(req))  # warm-up
        ts = []
        for _ in range(args.rounds):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            batches = list(model.generate(req))
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        nfe = batches[-1].nfe
        print(
            f"f. zoo mnist {sampler} {steps} steps guidance {guidance:g}, batch {args.batch}: "
            f"{args.batch / median(ts):.0f} images/s, {args.batch * nfe / median(ts):.0f} NFE/s (NFE {nfe}/image)",
            flush=True,
        )
        emit(
            {
                "bench": "gpu_zoo",
                "sampler": sampler,
                "steps": steps,
                "batch": args.batch,
                "nfe": nfe,
                "images_per_s": args.batch / median(ts),
                "nfe_per_s": args.batch * nfe / median(ts),
            },
            args.json,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
