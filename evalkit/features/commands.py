"""`evalkit weights`, `evalkit weights download` and `evalkit stats REF`: argparse wiring and handlers.

Cheap to import (libraries load inside the handlers). ``register(subparsers)`` adds both commands;
the CLI calls it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_ERROR = 2


def _err(msg: str) -> int:
    print(f"evalkit: error: {msg}", file=sys.stderr)
    return EXIT_ERROR


# -- evalkit weights ---------------------------------------------------------------------------------


def cmd_weights_list(args: argparse.Namespace) -> int:
    from evalkit.features.weights import ENV_WEIGHTS_DIR, REGISTRY, status

    rows = [status(name) for name in sorted(REGISTRY)]
    print(f"{ENV_WEIGHTS_DIR}={os.environ.get(ENV_WEIGHTS_DIR, '(not set)')}")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        entry = REGISTRY[r["name"]]
        where = r["path"] if r["status"] != "missing" else f"goes to {r['goes_to']}"
        print(f"{r['name']:<{width}}  {r['status']:<8}  {where}")
        print(f"{'':<{width}}  {'':<8}  file {entry.filename}; used by {entry.used_by}")
        if r["status"] == "mismatch":
            print(f"{'':<{width}}  {'':<8}  sha256 {r['sha256']} != {entry.sha256 or entry.sha256_prefix + '…'}")
    return 1 if any(r["status"] == "mismatch" for r in rows) else 0


def _torch_hub(entry_url: str) -> Callable[[], object]:
    def fetch() -> object:
        import torch.hub

        return torch.hub.load_state_dict_from_url(entry_url, progress=True, map_location="cpu")
    return fetch


def _downloaders() -> dict[str, Callable[[], object]]:
    """Each file through its library's own downloader, into that library's cache."""
    from evalkit.features.weights import REGISTRY

    def clean() -> object:
        from cleanfid.downloads_helper import check_download_inception

        return check_download_inception(fpath="/tmp")

    def torch_fidelity() -> object:
        import torch_fidelity.feature_extractor_inceptionv3 as fe

        return fe.load_state_dict_from_url(fe.URL_INCEPTION_V3, progress=True)

    def pytorch_fid() -> object:
        import pytorch_fid.inception as inc

        return inc.load_state_dict_from_url(inc.FID_WEIGHTS_URL, progress=True)

    def tv(weights_enum: str) -> Callable[[], object]:
        def fetch() -> object:
            import torchvision.models as m

            return getattr(m, weights_enum).IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
        return fetch

    def clip_openai() -> object:
        from open_clip.pretrained import download_pretrained_from_url

        return download_pretrained_from_url(REGISTRY["clip-vit-b-32-openai"].url)

    return {"inception-clean": clean, "inception-torch-fidelity": torch_fidelity, "inception-pytorch-fid": pytorch_fid,
            "lpips-alex-backbone": tv("AlexNet_Weights"), "lpips-vgg-backbone": tv("VGG16_Weights"),
            "lpips-squeeze-backbone": tv("SqueezeNet1_1_Weights"), "clip-vit-b-32-openai": clip_openai}


def cmd_weights_download(args: argparse.Namespace) -> int:
    from evalkit.features.weights import REGISTRY, get_entry, status

    names = args.names or sorted(REGISTRY)
    failed = 0
    for name in names:
        try:
            entry = get_entry(name)
        except KeyError as e:
            return _err(str(e.args[0]))
        if status(name)["status"] == "found" and not args.force:
            print(f"{name}: already present")
            continue
        try:
            if args.dir:  # a plain download into a folder of the user's choice (e.g. EVALKIT_WEIGHTS_DIR)
                import torch.hub

                Path(args.dir).mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(entry.url, str(Path(args.dir) / entry.filename),
                                               hash_prefix=entry.sha256_prefix, progress=True)
            else:
                _downloaders()[name]()
        except Exception as e:  # noqa: BLE001  (offline, HTTP errors, hash errors: report each and go on)
            failed += 1
            print(f"{name}: download failed: {e}", file=sys.stderr)
            continue
        print(f"{name}: {status(name)['status']}")
    return 1 if failed else 0


# -- evalkit stats REF ---------------------------------------------------------------------------------


def _reference_spec(ref: str, samples: int | None) -> dict:
    from evalkit.references import BUILTIN_DATASETS

    spec: dict = {"dataset": ref} if ref in BUILTIN_DATASETS else {"path": ref}
    if samples is not None:
        spec["samples"] = samples
    return spec


def cmd_stats(args: argparse.Namespace) -> int:
    from evalkit.features.base import build_extractor
    from evalkit.features.weights import WeightsError
    from evalkit.references import (
        ReferenceError,
        cache_path,
        default_cache_dir,
        open_reference,
        reference_features,
        save_reference_stats,
    )

    names = args.extractor or ["inception"]
    if args.weights and len(names) != 1:
        return _err("--weights applies to a single --extractor")
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    try:
        ref = open_reference(_reference_spec(args.ref, args.samples))
        options = {"weights": args.weights} if args.weights else {}
        extractors = [build_extractor(n, device=args.device, **options) for n in names]
        before = {e.name: cache_path(ref, e, cache_dir).is_file() for e in extractors}
        feats = reference_features(ref, extractors, cache_dir=cache_dir, batch_size=args.batch_size)
    except (ReferenceError, WeightsError, KeyError, ImportError) as e:
        return _err(str(e))
    print(f"reference {ref.name}: {len(ref)} images, fingerprint {ref.fingerprint[:16]}")
    for e in extractors:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feats[e.name].items())
        state = "cache hit" if before[e.name] else "computed"
        print(f"  {e.name} [{e.mode}, weights {e.weights_id[:24]}]: {state}: {shapes}")
        print(f"    {cache_path(ref, e, cache_dir)}")
    if args.out:
        e = extractors[0]
        if "features" not in feats[e.name]:
            return _err(f"--out writes FD statistics of 'features'; {e.name} has none")
        save_reference_stats(Path(args.out), feats[e.name]["features"], extractor=e)
        print(f"  FD statistics of {e.name} written to {args.out} (use as reference {{stats: {args.out}}})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `weights` (with `download`) and `stats` to the CLI's subparsers."""
    w = subparsers.add_parser("weights", help="list standard network weights (found / missing / mismatch)")
    w.set_defaults(func=cmd_weights_list)
    wsub = w.add_subparsers(dest="weights_command")
    d = wsub.add_parser("download", help="fetch weights with each library's own downloader (needs internet)")
    d.add_argument("names", nargs="*", help="registry names (default: all)")
    d.add_argument("--dir", help="download into this folder instead of the libraries' caches")
    d.add_argument("--force", action="store_true", help="download even if a verified file is present")
    d.set_defaults(func=cmd_weights_download)

    s = subparsers.add_parser("stats", help="precompute and cache reference features (FID statistics etc.)")
    s.add_argument("ref", help="image folder, .zip, or built-in dataset (mnist-heldout, mnist-train)")
    s.add_argument("--extractor", "-e", action="append", help="extractor name; repeatable (default: inception)")
    s.add_argument("--weights", help="explicit weights file for the extractor")
    s.add_argument("--samples", type=int, help="use the first N images")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="cpu")
    s.add_argument("--cache-dir", help="feature cache folder (default: $EVALKIT_CACHE_DIR or ~/.cache/evalkit)")
    s.add_argument("--out", help="also write mu/sigma of 'features' to this .npz (a {stats: FILE} reference)")
    s.set_defaults(func=cmd_stats)
