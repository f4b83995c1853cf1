"""``evalkit score GEN --ref REF``: score images you already have, as clean-fid's ``compute_fid(gen_dir, ref_dir)``,
into a run folder like ``evalkit run``'s.

GEN is a folder (recursive), a zip, a tar (a webdataset shard: ``key.png`` + optional ``key.txt`` prompt) or an
``.npz`` uint8 array; REF the same, a built-in dataset, or statistics (clean-fid's or pytorch-fid's ``.npz``,
torch-fidelity's cached ``.pt``, ``evalkit stats --out``). Both are read by the reference-set reader
(:mod:`evalkit.references`, decoding rules in :mod:`evalkit.references.sources`). The images become one cell,
``<name>__images__s0__g0``, of a suite built here and checked by the suite validator; :mod:`evalkit.run.image_cell`
reads them through the extractors and the runner does the rest, so the rows are those ``evalkit run`` writes for the
same images (same metric code, seed 0, batches of the same size: equal bit for bit) and ``evalkit report`` /
``evalkit check`` read the folder. Running the same command again reuses the finished cell.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalkit.errors import ConfigError, InputError, RunError
from evalkit.metrics.base import get_metric
from evalkit.references import ReferenceSet, ReferenceSetError
from evalkit.references.open import open_images, spec_for
from evalkit.registry import METRICS
from evalkit.run.image_cell import IMAGES_ADAPTER, SAMPLER, ScoreRunner, read_shard
from evalkit.run.preflight import PreflightError, preflight
from evalkit.suite import THROUGHPUT, SamplerSpec, Suite, parse_suite

DEFAULT_EXTRACTOR = (
    "inception"  # clean-fid's Inception (as `evalkit stats`): for metrics with no extractor of their own
)
STATS_METRICS = ("fd", "fd_inf")  # the metrics a statistics reference (mean and covariance) can serve
_WHERE = "evalkit score"
_PLACEHOLDER_SAMPLER = "ddim"  # validated, then replaced: a score cell has no sampler


def score_images(
    gen: str | Path,
    ref: str | Path,
    metrics: Sequence[str] | str,
    *,
    extractor: str | None = None,
    out: str | Path | None = None,
    prompts: str | Path | Sequence[str] | None = None,
    strict: bool = False,
    device: str = "cpu",
    batch_size: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Score the images ``gen`` against ``ref`` with ``metrics`` into the run folder ``out`` (default
    ``runs/score-<name>``) and return the result rows (``evalkit.store`` schema, one per metric row; ``attrs`` holds
    ``run_dir``, ``cell_id`` and ``reused``). ``extractor`` is that of every metric without its own (default
    ``inception``: clean-fid's); ``prompts`` a prompt file or list (one per image, in file-name order) for
    ``clip_score``, else ``key.txt`` files beside the images. Bad input is an :class:`~evalkit.errors.EvalkitError`
    naming the path or field (exit 2); a failed metric is a row with ``error`` set."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    gen_path, images, ref_spec = _open_inputs(gen, ref, strict)
    name = image_set_name(gen_path)
    out = Path(out) if out is not None else Path("runs") / f"score-{name}"
    if gen_path.is_dir() and out.resolve().is_relative_to(gen_path.resolve()):
        raise ConfigError(f"--out {out} is inside GEN {gen_path}: its grid.png would be read as an image")

    def build(n: int) -> Suite:
        texts = aligned_prompts(images, prompts)
        return score_suite(name, gen_path, images.fingerprint, n, ref_spec, metrics, extractor, texts, batch_size)

    runner = _runner(build(len(images)), out, images, ref_spec, device=device, batch_size=batch_size, progress=progress)
    reused = runner.cell_done()
    if not reused:
        runner = _read(runner, images, build, ref_spec, progress)
    summary = runner.run()
    cell_id = runner.cell.cell_id
    if summary.failed:
        where = runner.store.cell_dir(cell_id) / "cell.json"
        raise RunError(f"cell {cell_id} failed: {summary.failed[cell_id]} (traceback in {where})")
    from evalkit.store import read_run

    df = read_run(out).results
    df.attrs.update(run_dir=str(out), cell_id=cell_id, reused=reused)
    return df


def _open_inputs(gen: str | Path, ref: str | Path, strict: bool) -> tuple[Path, ReferenceSet, dict[str, Any]]:
    """GEN opened and scanned (a missing, empty or unreadable set fails here, before any network is built) and the
    reference spec REF names."""
    gen_path = _existing(gen, "GEN")
    ref_spec = spec_for(str(ref), strict=strict)
    if "path" in ref_spec:
        _existing(ref_spec["path"], "--ref")
    if "path" not in spec_for(str(gen_path)):
        raise InputError(f"GEN {gen_path} is a statistics file (mu/sigma); scoring needs the generated images")
    images = open_images(gen_path, strict=strict, role="generated images")
    len(images)  # the scan
    return gen_path, images, ref_spec


def _runner(suite: Suite, out: Path, images: ReferenceSet, ref_spec: dict[str, Any], **kw: Any) -> ScoreRunner:
    """The runner of the score cell, once everything checkable before a network is built was checked (exit 2)."""
    _stats_metrics(suite, ref_spec)
    runner = ScoreRunner(suite, out, images=images, **kw)
    if runner.dist.enabled:
        raise ConfigError("evalkit score runs in one process; start it without torchrun")
    problems = preflight(suite, base_dir=Path.cwd())
    if problems:
        raise PreflightError(_WHERE, problems)
    return runner


def image_set_name(path: Path) -> str:
    """The cell's model name: the folder or file name without archive suffixes, in safe characters."""
    stem = path.resolve().name
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip", ".npz"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "images"


def score_suite(
    name: str,
    gen_path: Path,
    fingerprint: str,
    n: int,
    ref_spec: dict[str, Any],
    metrics: list[str],
    extractor: str | None,
    prompts: list[str] | None,
    batch_size: int | None,
) -> Suite:
    """The suite of one score cell, validated by the suite validator (metric and extractor names, reference,
    prompts), then given the cell's axes: sampler ``images``, 0 steps, guidance 0."""
    known = METRICS.names()
    own = {m for m in metrics if m not in known or m == THROUGHPUT or get_metric(m).default_extractor is not None}
    specs = [m if m in own else {"name": m, "extractor": extractor or DEFAULT_EXTRACTOR} for m in metrics]
    options = {"path": str(gen_path.resolve()), "sha256": fingerprint}
    raw: dict[str, Any] = {
        "name": f"score-{name}",
        "models": [{"name": name, "adapter": IMAGES_ADAPTER, "options": options}],
        "samplers": [_PLACEHOLDER_SAMPLER],
        "steps": [1],
        "samples": n,
        "metrics": specs,
        "reference": ref_spec,
    }
    if prompts is not None:
        raw["conditions"] = {"prompts": prompts}
    if batch_size is not None:
        raw["batch_size"] = batch_size
    suite = parse_suite(raw, file=_WHERE)
    if extractor is not None and all(m.extractor != extractor for m in suite.metrics):
        raise ConfigError(
            f"-e {extractor}: no metric of {', '.join(metrics)} reads it (it is the extractor of the metrics without "
            "one of their own: fd, kid, is, pr, ...; clip_score and cmmd read clip)"
        )
    return dataclasses.replace(suite, samplers=[SamplerSpec(SAMPLER, SAMPLER)], steps=[0], guidance=[0.0])


def aligned_prompts(images: ReferenceSet, given: str | Path | Sequence[str] | None) -> list[str] | None:
    """One prompt per image still in ``images``: from ``given`` (a prompt file or list, one per image file found, in
    file-name order; or per array row), else from ``key.txt`` beside every ``key.png``; None where there are none."""
    found = list(getattr(images, "found", None) or range(len(images)))
    files = list(getattr(images, "files", None) or range(len(images)))
    if given is None:
        table = images.prompts() if hasattr(images, "prompts") else {}
        if not table:
            return None
        missing = [f for f in files if f not in table]
        if missing:
            warnings.warn(
                f"{len(files) - len(missing)} of {len(files)} images have a prompt file beside them, but "
                f"{missing[0]!r} and {len(missing) - 1} other(s) have none: prompts not used (pass --prompts)",
                stacklevel=3,
            )
            return None
        return [table[f] for f in files]
    texts = _read_prompts(given)
    if len(texts) != len(found):
        raise InputError(
            f"--prompts {_shown(given)}: {len(texts)} prompts for {len(found)} images in {images.name}; expected "
            "one prompt per image, in the sorted order of the image file names"
        )
    by_image = dict(zip(found, texts))
    return [by_image[f] for f in files]


def _read_prompts(given: str | Path | Sequence[str]) -> list[str]:
    if not isinstance(given, (str, Path)):
        return [str(t) for t in given]
    from evalkit.suite.prompts import PromptFileError, resolve_prompts

    try:
        return resolve_prompts(str(given), Path.cwd())
    except PromptFileError as e:
        field = "" if e.field == "conditions.prompts" else f"{e.field}: "
        raise InputError(f"--prompts {e.file}: {field}{e.message}") from None


def _shown(given: Any) -> str:
    return str(given) if isinstance(given, (str, Path)) else f"(a list of {len(given)})"


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} {p}: no such file or folder")
    return p


def _stats_metrics(suite: Suite, ref_spec: dict[str, Any]) -> None:
    """A statistics reference serves FD only: any other metric comparing with the reference is refused (exit 2)."""
    if "stats" not in ref_spec:
        return
    need = [m.name for m in suite.metrics if m.name != THROUGHPUT and get_metric(m.name).needs_reference]
    bad = [m for m in need if m not in STATS_METRICS]
    if bad:
        raise InputError(
            f"--ref {ref_spec['stats']} is a statistics file (mean and covariance): it serves "
            f"{', '.join(STATS_METRICS)} only; {', '.join(bad)} compare(s) with reference images (give --ref a "
            "folder, zip, tar or .npz of them)"
        )


def _read(
    runner: ScoreRunner, images: ReferenceSet, build: Callable[[int], Suite], ref_spec: dict[str, Any], progress: bool
) -> ScoreRunner:
    """The images through the extractors (after the reference: a bad one fails before they are read). Where some
    turned out undecodable the cell has fewer samples: a runner for the suite of those is returned."""
    reference = runner.reference_features()
    check = _dimension_check(runner.suite, reference, ref_spec) if "stats" in ref_spec else None
    keep = min(runner.suite.grid_samples, runner.suite.samples)
    shard = read_shard(
        images,
        runner.extractors(),
        batch_size=runner.batch_size,
        keep=keep,
        device=runner.device,
        check=check,
        progress=progress,
    )
    if len(shard.indices) == runner.suite.samples:
        runner.shard = shard
        return runner
    suite = build(len(shard.indices))
    return ScoreRunner(
        suite, runner.store.root, images=images, shard=shard, device=runner.device, progress=runner.progress
    )


def _dimension_check(
    suite: Suite, reference: dict[str, dict[str, np.ndarray]], ref_spec: dict[str, Any]
) -> Callable[[dict[str, np.ndarray]], None]:
    """Checks the first batch's features against the statistics' dimension (exit 2 before the rest is read)."""

    def check(first: dict[str, np.ndarray]) -> None:
        for spec in suite.metrics:
            if spec.name not in STATS_METRICS:
                continue
            key = str(spec.options.get("read", "features"))
            mu = reference.get(str(spec.extractor), {}).get(f"{key}.mu")
            got = first.get(f"{spec.extractor}/{key}")
            if mu is None or got is None:
                continue  # the metric names what is missing
            dim = int(np.prod(got.shape[1:]))
            if dim != int(np.asarray(mu).shape[0]):
                raise ReferenceSetError(
                    f"--ref {ref_spec['stats']}: statistics of dimension {np.asarray(mu).shape[0]} (mu), but extractor "
                    f"{spec.extractor} gives {dim}-dimensional {key!r}; statistics of another network or layer? "
                    "(choose the extractor with -e)"
                )

    return check
