"""b. End to end and c. shared pass: FID + KID + IS (+ PR) of N generated 64×64 images against N references,
evalkit in memory vs the usual workflows, on the same images and the same random-weight Inception.

    python benchmarks/bench_inception.py                       # N = 80, 3 interleaved repeats, parts b and c
    python benchmarks/bench_inception.py --n 2000 --repeats 1 --parts b
    python benchmarks/bench_inception.py --json out.jsonl

Setup, untimed: the tests' random FID Inception (tests/conftest.py) written as clean-fid's TorchScript
file and as the torch-fidelity/torchmetrics state dict; N generated and N reference uint8 images
(``conftest.smooth_images``, 64×64); every network built once and warmed up (TorchScript's first calls
compile). Per repeat, interleaved (one repeat = evalkit, then the workflows, rotating the order):

evalkit (timed once per repeat; b and c read the same pass)
    ``inception-clean`` extractor with the random weights: one forward per image (gen and ref), giving
    pool3 features and logits; then evalkit's ``fd`` (no bootstrap), ``kid`` and ``is`` metrics (b),
    plus ``pr`` (c). The FD reference cache is cleared first: every repeat is a cold start.

b. the usual folder workflow
    write both sets as PNGs → clean-fid ``compute_fid(gen, ref, mode="clean", custom_feat_extractor=the
    random InceptionV3W)`` and ``compute_kid(ref, gen, mode="clean")`` (compute_kid has no
    custom_feat_extractor: the same model is handed to it by replacing ``cleanfid.fid.build_feature_extractor``
    for the call; clean-fid's /tmp weights cache is left alone) → torchmetrics ``InceptionScore`` over the
    PNGs read back, with the torch-fidelity network (``NoTrainInceptionV3``, ``feature_extractor_weights_path``,
    ``antialias=False``: the torch-fidelity resize) since InceptionScore takes no weights path itself.

c. separate torchmetrics metric objects, each running its own network
    ``FrechetInceptionDistance``, ``KernelInceptionDistance`` (subset_size = min(N, 1000)), ``InceptionScore``
    (all with the random weights), and precision/recall from the ``prdc`` package on 2048-d features of
    its own torch-fidelity Inception; uint8 tensors in memory, batches of ``--batch-size``.

Inception forwards are counted with forward pre-hooks on every network (images, not calls).

Same numbers: FID and KID from clean-fid (mode clean) must equal evalkit's ``inception-clean`` to ≤1e-4
relative (KID: clean-fid draws its subsets from the global ``np.random``; it is seeded with evalkit's KID
seed right before, so both draw the same subsets — gen first, ref second, hence ``compute_kid(ref, gen)``).
IS: torchmetrics runs the torch-fidelity resize (TF1 bilinear), evalkit's clean pass the clean-fid
one (PIL bicubic), so the two IS values are NOT expected to be equal; what is checked is the convention:
evalkit's IS formula on torchmetrics' own logits, in torchmetrics' own permutation (``torch.randperm``,
seeded), equals torchmetrics' IS mean to ≤1e-4. Conventions that differ: torchmetrics shuffles with
``torch.randperm`` (evalkit/torch-fidelity: ``np.random.RandomState(seed).permutation``), splits with
``torch.chunk`` (ceil-sized chunks; evalkit ``[i·N//10, (i+1)·N//10)``: the same when 10 divides N),
reports std with ddof=1 (evalkit/torch-fidelity ddof=0) and computes in float32 (evalkit float64).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import emit, fmt_s, interleaved, median, print_machine, random_inception_files, rel

KID_SEED = 0
IS_SEED = 0


class ForwardCounter:
    """Counts images through a module's forward (a pre-hook reading the batch size)."""

    def __init__(self, module: Any, label: str) -> None:
        self.label, self.images, self.calls = label, 0, 0
        module.register_forward_pre_hook(self._hook)

    def _hook(self, module: Any, inputs: tuple) -> None:
        self.calls += 1
        self.images += int(inputs[0].shape[0])

    def wrap(self, owner: Any, attr: str) -> None:
        """Also count calls of ``owner.attr`` (a frozen TorchScript module takes no Python hooks)."""
        inner = getattr(owner, attr)

        def counted(x: Any) -> Any:
            self._hook(inner, (x,))
            return inner(x)

        setattr(owner, attr, counted)

    def reset(self) -> None:
        self.images = self.calls = 0


def batches(images: np.ndarray, size: int):
    import torch

    for i in range(0, images.shape[0], size):
        yield torch.from_numpy(np.ascontiguousarray(images[i : i + size]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=80, help="generated images and reference images, each (default 80)")
    p.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument("--parts", default="b,c", help="comma list of b (folder workflow), c (torchmetrics objects)")
    p.add_argument("--work", help="folder for weights and PNGs (default: a temporary folder)")
    p.add_argument("--json", help="append result records (JSON lines) to this file")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    warnings.filterwarnings("ignore")

    import torch
    from conftest import smooth_images

    print_machine()
    with contextlib.ExitStack() as stack:
        work = (
            Path(args.work)
            if args.work
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="evalkit-bench-")))
        )
        t0 = time.perf_counter()
        w = random_inception_files(work / "weights")
        gen_np = smooth_images(args.n, args.size, seed=100)
        ref_np = smooth_images(args.n, args.size, seed=200, shift=0.2)
        print(
            f"setup: random Inception files + {args.n}+{args.n} images of {args.size}px in "
            f"{fmt_s(time.perf_counter() - t0)}; "
            f"batch {args.batch_size}, torch threads {torch.get_num_threads()}",
            flush=True,
        )
        return run(args, parts, work, w, gen_np, ref_np)


def run(
    args: argparse.Namespace, parts: set[str], work: Path, w: dict[str, Path], gen_np: np.ndarray, ref_np: np.ndarray
) -> int:
    import torch
    from conftest import write_pngs

    from evalkit.features.inception import InceptionExtractor
    from evalkit.metrics import MetricInputs, get_metric
    from evalkit.metrics.frechet import clear_reference_cache

    n, bs = args.n, args.batch_size
    kid_size = min(n, 1000)
    ok = True

    # -- evalkit ------------------------------------------------------------------------------------
    ex = InceptionExtractor("clean", weights=w["clean"])
    ek_count = ForwardCounter(ex.net, "evalkit inception-clean")
    if getattr(ex, "_cpu_layers", None) is not None:  # the CPU path runs the frozen, optimised layers
        ek_count.wrap(ex, "_cpu_layers")
    ex(torch.from_numpy(gen_np[:2]))  # warm-up (TorchScript compiles on its first calls)
    ek_parts: dict[str, list[float]] = {"extract": [], "metrics_b": [], "pr": []}

    def evalkit_pass() -> dict[str, Any]:
        clear_reference_cache()
        t0 = time.perf_counter()
        feats = {}
        for side, imgs in (("gen", gen_np), ("ref", ref_np)):
            outs = [ex(b) for b in batches(imgs, bs)]
            feats[side] = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        t1 = time.perf_counter()
        fd = get_metric("fd").compute(MetricInputs(gen=feats["gen"], ref=feats["ref"], options={"bootstrap": 0}))["fd"]
        kid = get_metric("kid").compute(
            MetricInputs(gen=feats["gen"], ref=feats["ref"], options={"kid_seed": KID_SEED})
        )["kid"]
        is_ = get_metric("is").compute(MetricInputs(gen=feats["gen"], options={"is_seed": IS_SEED}))["is"]
        t2 = time.perf_counter()
        pr = get_metric("pr").compute(MetricInputs(gen=feats["gen"], ref=feats["ref"]))
        t3 = time.perf_counter()
        ek_parts["extract"].append(t1 - t0)
        ek_parts["metrics_b"].append(t2 - t1)
        ek_parts["pr"].append(t3 - t2)
        return {
            "fid": fd.value,
            "kid": kid.value,
            "kid_std": kid.std,
            "is": is_.value,
            "is_std": is_.std,
            "precision": pr["precision"].value,
            "recall": pr["recall"].value,
        }

    fns = {"evalkit": evalkit_pass}
    counters = {"evalkit": [ek_count]}

    # -- b: PNG folders → clean-fid FID + KID → torchmetrics IS ------------------------------------
    if "b" in parts:
        import cleanfid.fid as cfid
        from cleanfid.inception_torchscript import InceptionV3W
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.image.inception import InceptionScore

        cf_model = InceptionV3W(str(w["dir"]), download=False, resize_inside=False).eval()
        cf_count = ForwardCounter(cf_model, "clean-fid InceptionV3W")
        tm_is_net = NoTrainInceptionV3(
            "inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(w["tf"]), antialias=False
        )
        tm_is = InceptionScore(feature=tm_is_net, splits=10)
        tmb_count = ForwardCounter(tm_is_net, "torchmetrics IS network")
        with torch.no_grad():  # warm-up
            cf_model(torch.zeros(2, 3, 299, 299))
            tm_is_net(torch.from_numpy(gen_np[:2]))
        real_kernel_distance, real_build = cfid.kernel_distance, cfid.build_feature_extractor
        folder_state: dict[str, Any] = {}

        def seeded_kernel_distance(*a: Any, **k: Any) -> float:
            np.random.seed(KID_SEED)
            return real_kernel_distance(*a, **k)

        def folder_workflow() -> dict[str, Any]:
            from PIL import Image

            root = work / "pngs"
            import shutil

            if root.exists():
                shutil.rmtree(root)
            gdir, rdir = write_pngs(gen_np, root / "gen"), write_pngs(ref_np, root / "ref")
            common = dict(
                mode="clean",
                device=torch.device("cpu"),
                num_workers=0,
                batch_size=bs,
                verbose=False,
                use_dataparallel=False,
            )
            with contextlib.redirect_stdout(sys.stderr):
                fid = cfid.compute_fid(str(gdir), str(rdir), custom_feat_extractor=cf_model, **common)
                cfid.kernel_distance = seeded_kernel_distance
                cfid.build_feature_extractor = lambda *a, **k: cf_model
                try:
                    kid = cfid.compute_kid(str(rdir), str(gdir), **common)
                finally:
                    cfid.kernel_distance, cfid.build_feature_extractor = real_kernel_distance, real_build
            tm_is.reset()
            files = sorted(gdir.glob("*.png"))
            for i in range(0, len(files), bs):
                imgs = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files[i : i + bs]])
                tm_is.update(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous())
            torch.manual_seed(IS_SEED)
            is_mean, is_std = tm_is.compute()
            folder_state["is_logits"] = torch.cat(tm_is.features).double().numpy()
            return {"fid": float(fid), "kid": float(kid), "is": float(is_mean), "is_std": float(is_std)}

        fns["b: PNG+clean-fid+torchmetrics IS"] = folder_workflow
        counters["b: PNG+clean-fid+torchmetrics IS"] = [cf_count, tmb_count]

    # -- c: torchmetrics objects, each with its own network; PR from prdc ---------------------------
    if "c" in parts:
        import prdc
        from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
        from torchmetrics.image.inception import InceptionScore
        from torchmetrics.image.kid import KernelInceptionDistance

        tm_fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(w["tf"]))
        tm_kid = KernelInceptionDistance(
            feature=NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(w["tf"])),
            subset_size=kid_size,
        )
        tm_isc = InceptionScore(
            feature=NoTrainInceptionV3(
                "inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(w["tf"])
            )
        )
        pr_net = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(w["tf"]))
        c_counters = [
            ForwardCounter(m, label)
            for m, label in (
                (tm_fid.inception, "torchmetrics FID network"),
                (tm_kid.inception, "torchmetrics KID network"),
                (tm_isc.inception, "torchmetrics IS network"),
                (pr_net, "prdc's network"),
            )
        ]
        with torch.no_grad():
            for c_net in (tm_fid.inception, tm_kid.inception, tm_isc.inception, pr_net):
                c_net(torch.from_numpy(gen_np[:2]))

        def torchmetrics_objects() -> dict[str, Any]:
            for m in (tm_fid, tm_kid, tm_isc):
                m.reset()
            feats: dict[str, list[np.ndarray]] = {"gen": [], "ref": []}
            for side, imgs, real in (("ref", ref_np, True), ("gen", gen_np, False)):
                for b in batches(imgs, bs):
                    tm_fid.update(b, real=real)
                    tm_kid.update(b, real=real)
                    if not real:
                        tm_isc.update(b)
                    with torch.no_grad():
                        feats[side].append(pr_net(b).double().numpy())
            torch.manual_seed(KID_SEED)
            kid_mean, _ = tm_kid.compute()
            torch.manual_seed(IS_SEED)
            is_mean, _ = tm_isc.compute()
            with contextlib.redirect_stdout(sys.stderr):
                pr = prdc.compute_prdc(np.concatenate(feats["ref"]), np.concatenate(feats["gen"]), nearest_k=3)
            return {
                "fid": float(tm_fid.compute()),
                "kid": float(kid_mean),
                "is": float(is_mean),
                "precision": float(pr["precision"]),
                "recall": float(pr["recall"]),
            }

        fns["c: torchmetrics objects+prdc"] = torchmetrics_objects
        counters["c: torchmetrics objects+prdc"] = c_counters

    for cs in counters.values():
        for c in cs:
            c.reset()
    times, vals = interleaved(fns, args.repeats)
    ek = vals["evalkit"]
    t_b = [e + m for e, m in zip(ek_parts["extract"], ek_parts["metrics_b"])]
    t_c = [e + m + q for e, m, q in zip(ek_parts["extract"], ek_parts["metrics_b"], ek_parts["pr"])]
    fwd = {k: sum(c.images for c in cs) // args.repeats for k, cs in counters.items()}
    print(
        f"evalkit (one inception-clean pass, in memory): extraction {fmt_s(median(ek_parts['extract']))}, "
        f"FID+KID+IS {fmt_s(median(ek_parts['metrics_b']))}, PR {fmt_s(median(ek_parts['pr']))}; "
        f"{fwd['evalkit']} Inception image-forwards per repeat",
        flush=True,
    )
    print(
        f"evalkit values: FID {ek['fid']:.8g}  KID {ek['kid']:.8g}  IS {ek['is']:.8g}  "
        f"precision {ek['precision']:.4g}  recall {ek['recall']:.4g}"
    )

    if "b" in parts:
        key = "b: PNG+clean-fid+torchmetrics IS"
        th, mb = vals[key], median(t_b)
        mref = median(times[key])
        d_fid, d_kid = rel(ek["fid"], th["fid"]), rel(ek["kid"], th["kid"])
        # IS convention check: evalkit's IS formula on torchmetrics' logits in torchmetrics' permutation
        from evalkit.metrics.inception_score import inception_score_splits

        torch.manual_seed(IS_SEED)
        perm = torch.randperm(n).numpy()
        ek_on_tm = inception_score_splits(folder_state["is_logits"][perm], splits=10, shuffle=False)
        d_is_conv = rel(float(ek_on_tm.mean()), th["is"])
        passed = mref / mb >= 2.0 and d_fid <= 1e-4 and d_kid <= 1e-4 and (n % 10 != 0 or d_is_conv <= 1e-4)
        ok &= passed
        print(
            f"b. END TO END N={n} {args.size}px: evalkit {fmt_s(mb)} vs PNG+clean-fid FID/KID+torchmetrics IS "
            f"{fmt_s(mref)} (medians of {args.repeats}) -> {mref / mb:.2f}x faster (target 2x); "
            "Inception image-forwards "
            f"{fwd['evalkit']} vs {fwd[key]}; {'PASS' if passed else 'FAIL'}"
        )
        print(
            f"   FID evalkit {ek['fid']:.10g} vs clean-fid {th['fid']:.10g} rel {d_fid:.2e} (<=1e-4); "
            f"KID {ek['kid']:.10g} vs {th['kid']:.10g} rel {d_kid:.2e} (<=1e-4)"
        )
        print(
            f"   IS evalkit (clean resize) {ek['is']:.6g} vs torchmetrics (TF1 resize) {th['is']:.6g} (different "
            f"preprocessing, not expected equal); evalkit's IS formula on torchmetrics' logits and permutation "
            f"{ek_on_tm.mean():.8g} vs {th['is']:.8g} rel {d_is_conv:.2e}; std ddof=0 {ek_on_tm.std():.5g} vs "
            f"torchmetrics ddof=1 {th['is_std']:.5g} (= {ek_on_tm.std(ddof=1):.5g} with ddof=1)",
            flush=True,
        )
        emit(
            {
                "bench": "end_to_end",
                "n": n,
                "size": args.size,
                "repeats": args.repeats,
                "evalkit_s": t_b,
                "reference_s": times[key],
                "median_evalkit_s": mb,
                "median_reference_s": mref,
                "ratio": mref / mb,
                "forwards_evalkit": fwd["evalkit"],
                "forwards_reference": fwd[key],
                "evalkit": ek,
                "reference": th,
                "rel_fid": d_fid,
                "rel_kid": d_kid,
                "rel_is_convention": d_is_conv,
            },
            args.json,
        )
    if "c" in parts:
        key = "c: torchmetrics objects+prdc"
        th, mc = vals[key], median(t_c)
        mref = median(times[key])
        print(
            f"c. SHARED PASS N={n} {args.size}px, FID+KID+IS+PR: evalkit {fmt_s(mc)} vs 4 torchmetrics/prdc "
            f"objects {fmt_s(mref)} (medians of {args.repeats}) -> {mref / mc:.2f}x faster; Inception image-forwards "
            f"{fwd['evalkit']} vs {fwd[key]} ("
            + ", ".join(f"{c.label} {c.images // args.repeats}" for c in counters[key])
            + ")"
        )
        print(
            f"   torchmetrics values (torch-fidelity network, its default antialiased resize): FID {th['fid']:.6g} "
            f"KID {th['kid']:.6g} IS {th['is']:.6g} precision {th['precision']:.4g} recall {th['recall']:.4g}",
            flush=True,
        )
        emit(
            {
                "bench": "shared_pass",
                "n": n,
                "size": args.size,
                "repeats": args.repeats,
                "evalkit_s": t_c,
                "reference_s": times[key],
                "median_evalkit_s": mc,
                "median_reference_s": mref,
                "ratio": mref / mc,
                "forwards_evalkit": fwd["evalkit"],
                "forwards_reference": fwd[key],
                "forwards_reference_by_network": {c.label: c.images // args.repeats for c in counters[key]},
                "evalkit": ek,
                "reference": th,
            },
            args.json,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
