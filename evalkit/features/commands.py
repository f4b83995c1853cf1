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

from evalkit.errors import EXIT_OK, EXIT_USAGE

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
        if r["status"] in ("mismatch", "custom"):  # custom: loaded, but its results are marked not comparable
            print(f"{'':<{width}}  {'':<8}  sha256 {r['sha256']} != {entry.sha256 or entry.sha256_prefix + '…'}")
    return EXIT_USAGE if any(r["status"] == "mismatch" for r in rows) else EXIT_OK


def _downloaders() -> dict[str, Callable[[], object]]:
    """Each file into its library's cache, downloaded only: nothing is loaded (the torch-hub helpers the
    libraries use, ``load_state_dict_from_url``, would unpickle the file, or a file planted in the cache)."""
    from evalkit.features.weights import REGISTRY, _torch_hub_dir

    def clean() -> object:
        from cleanfid.downloads_helper import check_download_inception

        return check_download_inception(fpath="/tmp")

    def hub(name: str) -> Callable[[], object]:
        def fetch() -> object:
            import torch.hub

            entry = REGISTRY[name]
            target = _torch_hub_dir() / entry.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(entry.url, str(target), hash_prefix=entry.sha256_prefix, progress=True)
            return target

        return fetch

    def clip_openai() -> object:
        from open_clip.pretrained import download_pretrained_from_url

        return download_pretrained_from_url(REGISTRY["clip-vit-b-32-openai"].url)

    def pick_score() -> object:
        from huggingface_hub import snapshot_download

        from evalkit.features.weights import ENV_WEIGHTS_DIR

        folder = os.environ.get(ENV_WEIGHTS_DIR)
        if not folder:
            raise RuntimeError(f"set {ENV_WEIGHTS_DIR} (PickScore_v1/ goes there) or pass --dir")
        return snapshot_download("yuvalkirstain/PickScore_v1", local_dir=str(Path(folder) / "PickScore_v1"))

    hub_files = ("inception-torch-fidelity", "inception-pytorch-fid") + tuple(
        f"lpips-{n}-backbone" for n in ("alex", "vgg", "squeeze")
    )
    return {
        "inception-clean": clean,
        **{n: hub(n) for n in hub_files},
        "clip-vit-b-32-openai": clip_openai,
        "pickscore-v1": pick_score,
    }


def _plain_download(name: str) -> Path:
    """An entry without a library downloader: its URL into the first place evalkit looks for it (``--dir`` aside):
    ``$EVALKIT_WEIGHTS_DIR``, else the library cache it is searched in."""
    import torch.hub

    from evalkit.features.weights import ENV_WEIGHTS_DIR, get_entry

    entry = get_entry(name)
    places = entry.search_paths()
    if not places:
        raise RuntimeError(f"no place to put {entry.filename}: set {ENV_WEIGHTS_DIR} or pass --dir")
    target = places[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(entry.url, str(target), hash_prefix=entry.sha256_prefix, progress=True)
    return target


def cmd_weights_download(args: argparse.Namespace) -> int:
    from evalkit.features.weights import REGISTRY, get_entry, status

    names = args.names or sorted(REGISTRY)
    failed = 0
    for name in names:
        entry = get_entry(name)  # an unknown name: UnknownNameError, exit 2
        if status(name)["status"] == "found" and not args.force:
            print(f"{name}: already present")
            continue
        try:
            if args.dir:  # a plain download into a folder of the user's choice (e.g. EVALKIT_WEIGHTS_DIR)
                import torch.hub

                Path(args.dir).mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(
                    entry.url, str(Path(args.dir) / entry.filename), hash_prefix=entry.sha256_prefix, progress=True
                )
            else:
                _downloaders().get(name, lambda name=name: _plain_download(name))()
        except Exception as e:
            failed += 1
            print(f"{name}: download failed: {e}", file=sys.stderr)
            continue
        print(f"{name}: {status(name)['status']}")
    return EXIT_USAGE if failed else EXIT_OK  # a download is I/O: exit 2, as every environment error


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `weights` (with `download`) to the CLI's subparsers."""
    w = subparsers.add_parser("weights", help="list standard network weights (found / missing / mismatch)")
    w.set_defaults(func=cmd_weights_list)
    wsub = w.add_subparsers(dest="weights_command")
    d = wsub.add_parser("download", help="fetch weights with each library's own downloader (needs internet)")
    d.add_argument("names", nargs="*", help="registry names (default: all)")
    d.add_argument("--dir", help="download into this folder instead of the libraries' caches")
    d.add_argument("--force", action="store_true", help="download even if a verified file is present")
    d.set_defaults(func=cmd_weights_download)
