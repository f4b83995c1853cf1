"""Adapter faults and bounded memory (issue 7).

A ``module:function`` plugin adapter defined here misbehaves on purpose, mid-cell (sample 12 of 20,
after two good batches): an exception, NaN/Inf, out-of-range floats, a wrong shape, a wrong dtype, a
wrong image count, samples out of order, too few samples. Each fault marks only its own cell failed,
with an error naming the cell and the samples; the other cells finish and the exit code is 1.
(test_runner.py covers check_images() itself and an exception raised before the first batch.)

A second plugin counts how many of its image batches are alive at once: the runner streams them, so
the count stays a small constant whatever the number of batches.
"""

from __future__ import annotations

import os
import sys
import textwrap
import weakref

import numpy as np
import pandas as pd
import pytest
import torch

from evalkit.cli import main
from evalkit.generate.adapter import Adapter, GeneratedBatch, batched
from evalkit.generate.zoo_adapter import NoiseAdapter
from evalkit.store import RunStore

sys.path.insert(0, os.path.dirname(__file__))  # the plugins below are found as "<this module>:<function>"

AT = 12  # the misbehaving sample; batches of 5 → the third batch (samples 10..14)


def faulty_adapter(device: str = "cpu", fault: str = "none") -> Adapter:
    class Faulty(NoiseAdapter):
        def generate(self, request):
            for batch in super().generate(request):
                idx = np.asarray(batch.indices)
                if AT in idx:
                    k = int(np.flatnonzero(idx == AT)[0])
                    imgs = batch.images.float() / 255
                    if fault == "raise":
                        raise RuntimeError(f"adapter exploded at sample {AT} on purpose")
                    if fault in ("nan", "inf"):
                        imgs[k, 1, 3, 4] = float(fault)
                        batch.images = imgs
                    elif fault == "range":
                        imgs[k] = imgs[k] * 2 + 0.5
                        batch.images = imgs
                    elif fault == "negative":
                        imgs[k, 0, 0, 0] = -0.25
                        batch.images = imgs
                    elif fault == "shape":
                        batch.images = batch.images[:, :1]
                    elif fault == "hwc":
                        batch.images = batch.images.permute(0, 2, 3, 1).contiguous()
                    elif fault == "dtype":
                        batch.images = batch.images.to(torch.int32)
                    elif fault == "count":
                        batch.images = batch.images[:-1]
                    elif fault == "order":
                        batch.indices = idx[::-1].copy()
                        batch.images = batch.images.flip(0)
                    elif fault == "short":
                        return
                yield batch

    return Faulty(device=device)


# fault → what the stored error must say (cell id is checked for all)
FAULTS = {
    "raise": [r"RuntimeError: adapter exploded at sample 12 on purpose", "Traceback"],
    "nan": [r"samples 10..14: NaN/Inf in samples [12]"],
    "inf": [r"samples 10..14: NaN/Inf in samples [12]"],
    "range": [r"samples 10..14: float images must lie in [0, 1]; samples [12] do not"],
    "negative": [r"samples 10..14: float images must lie in [0, 1]; samples [12] do not"],
    "shape": [r"samples 10..14: expected images of shape (B, 3, H, W); got (5, 1, 32, 32)"],
    "hwc": [r"samples 10..14: expected images of shape (B, 3, H, W); got (5, 32, 32, 3)"],
    "dtype": [r"samples 10..14: expected uint8 or float images; got torch.int32"],
    "count": [r"samples 10..14: 4 images for 5 sample indices"],
    "order": [r"adapter yielded samples out of order (expected from index 10)"],
    "short": [r"adapter produced 10 samples, expected 20"],
}


def _suite(tmp_path, models: str, samples: int = 20, batch: int = 5, metrics: str = "[fd, throughput]"):
    p = tmp_path / "s.yaml"
    p.write_text(
        textwrap.dedent(f"""\
        name: faults
        models: {models}
        samplers: [ddim]
        steps: [2]
        samples: {samples}
        batch_size: {batch}
        conditions: {{classes: 10}}
        reference: {{dataset: mnist-heldout, samples: 100}}
        extractor: mnist-net
        metrics: {metrics}
        grid_samples: 4
    """)
    )
    return p


def test_each_adapter_fault_fails_only_its_cell_naming_cell_and_samples(tmp_path, capsys):
    models = [{"name": "good", "adapter": f"{__name__}:faulty_adapter"}]
    models += [{"name": f"bad-{f}", "adapter": f"{__name__}:faulty_adapter", "options": {"fault": f}} for f in FAULTS]
    out = tmp_path / "run"
    assert main(["run", str(_suite(tmp_path, repr(models))), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    store = RunStore(out)
    assert store.read_cell("good__ddim__s2__g1")["status"] == "done"
    for fault, expected in FAULTS.items():
        cell_id = f"bad-{fault}__ddim__s2__g1"
        rec = store.read_cell(cell_id)
        assert rec["status"] == "failed", fault
        assert "Traceback" in rec["error"], fault  # the whole traceback is kept in the store
        for text in expected:
            assert text in rec["error"], f"{fault}: {text!r} not in {rec['error'][-300:]!r}"
        if fault != "raise":
            assert f"cell {cell_id}" in rec["error"], fault
        assert f"FAILED {cell_id}" in err, fault
        assert not (store.cell_dir(cell_id) / "features.npz").exists()
    df = pd.read_parquet(out / "results.parquet")
    assert set(df.model) == {"good"}
    assert RunStore(out).read_manifest()["status"] == {"done": 1, "failed": len(FAULTS), "total": len(FAULTS) + 1}


# -- bounded memory ----------------------------------------------------------------------------------------

LIVE: dict[str, int] = {}


def tracked_adapter(device: str = "cpu") -> Adapter:
    """Yields uint8 batches backed by numpy arrays it keeps weak references to; records how many of
    its batches are alive (referenced by anyone) each time it makes a new one."""

    class Tracked(Adapter):
        name = "tracked"

        def __init__(self) -> None:
            self.refs: list[weakref.ref] = []

        def generate(self, request):
            for sl in batched(request.indices, request.batch_size):
                idx = request.indices[sl]
                arr = np.zeros((len(idx), 3, 32, 32), dtype=np.uint8)
                arr[:, :, 8:24, 14:18] = 255 - (idx % 7)[:, None, None, None]  # a bar, so features vary a bit
                self.refs.append(weakref.ref(arr))
                alive = sum(r() is not None for r in self.refs)
                LIVE["max_alive"] = max(LIVE.get("max_alive", 0), alive)
                LIVE["batches"] = LIVE.get("batches", 0) + 1
                batch = GeneratedBatch(torch.from_numpy(arr), np.asarray(idx), 1, 1)
                del arr  # the generator frame must not keep the previous batch alive
                yield batch
                del batch

    return Tracked()


@pytest.mark.parametrize("batches", [8, 60])
def test_generated_images_are_streamed_not_accumulated(batches, tmp_path):
    LIVE.clear()
    models = [{"name": "t", "adapter": f"{__name__}:tracked_adapter"}]
    out = tmp_path / "run"
    suite = _suite(tmp_path, repr(models), samples=4 * batches, batch=4, metrics="[fd]")
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    assert LIVE["batches"] == batches  # the warm-up batch is the cell's own first batch (untimed), not an extra call
    # the batch being made, the one the runner still holds, and at most one more; never all of them
    assert LIVE["max_alive"] <= 3, f"{LIVE['max_alive']} of {batches} batches alive at once"


# -- NaN from the model itself (issue 15) ------------------------------------------------------------------


def test_nan_images_from_the_zoo_model_fail_the_cell_naming_the_samples(tmp_path, capsys):
    """guidance 1e30 overflows the zoo model's sampling loop to NaN pixels from the second step on (one step gives
    huge but finite values); they used to be clamped to black and scored (exit 0, FD ~2500). The shared loop's
    conversion refuses them: the cell fails naming its samples, the run exits 1."""
    p = tmp_path / "nan.yaml"
    p.write_text(
        textwrap.dedent("""\
        name: nan
        models: [{name: mnist, adapter: zoo}]
        samplers: [ddim]
        steps: [2]
        guidance: [1.0, 1.0e+30]
        samples: 4
        batch_size: 4
        conditions: {classes: 10}
        reference: {dataset: mnist-heldout, samples: 20}
        extractor: mnist-net
        metrics: [fd]
        grid_samples: 4
    """)
    )
    out = tmp_path / "run"
    assert main(["run", str(p), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    store = RunStore(out)
    assert store.read_cell("mnist__ddim__s2__g1")["status"] == "done"  # guidance 1 is fine
    bad = next(c for c in store.iter_cells() if c["cell_id"] != "mnist__ddim__s2__g1")
    assert bad["status"] == "failed"
    assert "GenerationError" in bad["error"] and "NaN/Inf pixels in 4 of 4 images (samples 0, 1, 2, 3)" in bad["error"]
    assert f"FAILED {bad['cell_id']}" in err
    df = pd.read_parquet(out / "results.parquet")
    assert set(df.guidance) == {1.0}  # no number for the NaN cell


def _diffusers_test_module():
    """tests/generate/test_adapter_diffusers.py, for its tiny random Stable-Diffusion pipeline fixture."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "generate" / "test_adapter_diffusers.py"
    spec = importlib.util.spec_from_file_location("_evalkit_tiny_diffusers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny_sd = _diffusers_test_module().tiny_sd  # a pytest fixture: the pipeline folder, built once for this module


def _nan_request(n: int, *, labels=None, prompts=None):
    from evalkit.generate import GenerationRequest

    return GenerationRequest(
        indices=np.arange(5, 5 + n), seed=7, sampler="ddim", steps=2, guidance=1e30, batch_size=n,
        labels=labels, prompts=prompts,
    )  # fmt: skip


def test_nan_images_from_diffusers_pipelines_are_refused_naming_the_samples(tiny_sd, tmp_path):
    """Both diffusers paths: a text-to-image pipeline's own loop (output_type "np") and evalkit's shared loop
    for a class-conditional pipeline (the zoo UNet saved as a DDPMPipeline)."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from evalkit import zoo
    from evalkit.errors import RunError
    from evalkit.generate import build_adapter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only spin on a shared machine
    try:
        t2i = build_adapter("diffusers", path=str(tiny_sd))
        with pytest.raises(RunError, match=r"NaN/Inf pixels in 3 of 3 images \(samples 5, 6, 7\)") as err:
            list(t2i.generate(_nan_request(3, prompts=["a red bus", "a cat", "a bowl"])))
        assert type(err.value).__name__ == "GenerationError"
        unet, schedule = zoo.load_mnist_unet(trained=True)
        DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_config(schedule)).save_pretrained(tmp_path / "mnist")
        cc = build_adapter("diffusers", path=str(tmp_path / "mnist"), null_class=zoo.NULL_CLASS)
        with pytest.raises(RunError, match=r"NaN/Inf pixels in 2 of 2 images \(samples 5, 6\)"):
            list(cc.generate(_nan_request(2, labels=np.array([3, 4]))))
    finally:
        torch.set_num_threads(threads)
