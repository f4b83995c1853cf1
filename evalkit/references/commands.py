"""`evalkit stats REF`: precompute and cache reference features (FID statistics etc.)."""

from __future__ import annotations

import argparse
from pathlib import Path

from evalkit.errors import ConfigError


def _reference_spec(ref: str, samples: int | None, builtin: tuple[str, ...], strict: bool = False) -> dict:
    spec: dict = {"dataset": ref} if ref in builtin else {"path": ref}
    if samples is not None:
        spec["samples"] = samples
    if strict and "path" in spec:  # built-in datasets are arrays: nothing to decode
        spec["strict"] = True
    return spec


def cmd_stats(args: argparse.Namespace) -> int:
    from evalkit.features.base import build_extractor
    from evalkit.references.cache import cache_path, default_cache_dir, reference_features, save_reference_stats
    from evalkit.references.open import open_reference
    from evalkit.references.sets import BUILTIN_DATASETS

    names = args.extractor or ["inception"]
    if args.weights and len(names) != 1:
        raise ConfigError("--weights applies to a single --extractor")
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    strict = getattr(args, "strict", False)  # a Namespace built in code may predate --strict
    ref = open_reference(_reference_spec(args.ref, args.samples, BUILTIN_DATASETS, strict=strict))
    options = {"weights": args.weights} if args.weights else {}
    extractors = [build_extractor(n, device=args.device, **options) for n in names]
    before = {e.name: cache_path(ref, e, cache_dir).is_file() for e in extractors}
    feats = reference_features(ref, extractors, cache_dir=cache_dir, batch_size=args.batch_size)
    print(f"reference {ref.name}: {len(ref)} images, fingerprint {ref.fingerprint[:16]}")
    for e in extractors:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feats[e.name].items())
        state = "cache hit" if before[e.name] else "computed"
        print(f"  {e.name} [{e.mode}, weights {e.weights_id[:24]}]: {state}: {shapes}")
        print(f"    {cache_path(ref, e, cache_dir)}")
    if args.out:
        e = extractors[0]
        if "features" not in feats[e.name]:
            raise ConfigError(f"--out writes FD statistics of 'features'; {e.name} has none")
        save_reference_stats(Path(args.out), feats[e.name]["features"], extractor=e)
        print(f"  FD statistics of {e.name} written to {args.out} (use as reference {{stats: {args.out}}})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `stats` to the CLI's subparsers."""
    s = subparsers.add_parser("stats", help="precompute and cache reference features (FID statistics etc.)")
    s.add_argument("ref", help="image folder, .zip, or built-in dataset (mnist-heldout, mnist-train)")
    s.add_argument("--extractor", "-e", action="append", help="extractor name; repeatable (default: inception)")
    s.add_argument("--weights", help="explicit weights file for the extractor")
    s.add_argument("--samples", type=int, help="use the first N images")
    s.add_argument(
        "--strict",
        action="store_true",
        help="a corrupt or undecodable image is an error naming the file (default: skipped with a "
        "warning); applies on a cache hit too",
    )
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="cpu")
    s.add_argument("--cache-dir", help="feature cache folder (default: $EVALKIT_CACHE_DIR or ~/.cache/evalkit)")
    s.add_argument("--out", help="also write mu/sigma of 'features' to this .npz (a {stats: FILE} reference)")
    s.set_defaults(func=cmd_stats)
