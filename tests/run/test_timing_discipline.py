"""Timing discipline (issue 16): per-cell cost is the median of timed repeats of a fixed batch, warm-up batches
are untimed, extra batches are run only when a cell has too few full ones, the machine's load is recorded and
warned about, and torch's thread count is set for the cell and restored.

Durations are injected, never slept: a fake clock replaces :data:`evalkit.run.timing.clock` and the fake adapter
advances it by a known number of seconds inside each batch it generates."""

from __future__ import annotations

import json
import math
import os
import statistics

import numpy as np
import pytest
import torch

from evalkit.generate import Adapter, GeneratedBatch, GenerationRequest
from evalkit.generate.adapter import batched
from evalkit.run import timing
from evalkit.run.cell import Shard, generate_shard
from evalkit.run.costs import cost_rows, costs, timing_record
from evalkit.run.runner import Runner
from evalkit.run.timing import Repeat
from evalkit.store import read_run
from evalkit.suite import Cell, MetricSpec, ModelSpec, SamplerSpec, Suite, TimingSpec

CALLS = 4  # model calls the fake adapter reports per batch


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedAdapter(Adapter):
    """Yields grey images; each batch advances the fake clock by the next of ``durations`` seconds. Records
    every request's indices and the torch thread count it ran under."""

    name = "timed"

    def __init__(self, clock: FakeClock, durations: list[float]):
        self.clock, self.durations = clock, list(durations)
        self.requests: list[list[int]] = []
        self.threads: list[int] = []

    def generate(self, request: GenerationRequest):
        self.requests.append([int(i) for i in request.indices])
        for sl in batched(request.indices, request.batch_size):
            self.threads.append(torch.get_num_threads())
            self.clock.now += self.durations.pop(0)
            idx = request.indices[sl]
            yield GeneratedBatch(torch.full((len(idx), 3, 4, 4), 128, dtype=torch.uint8), idx, CALLS, CALLS)


class CountingExtractor:
    name, weights_id, mode, outputs = "count", "none", "native", ("mean",)

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, images: torch.Tensor) -> dict:
        self.images += len(images)
        return {"mean": images.float().mean(dim=(1, 2, 3)).numpy()}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing, "clock", fake)
    return fake


def _shard(clock, durations, *, n, batch_size, warm_up, spec, extractor=None):
    adapter = TimedAdapter(clock, durations)
    cell = Cell(ModelSpec("m", "timed"), SamplerSpec("ddim", "ddim"), 4, 1.0, n, 0)

    def request(idx):
        return GenerationRequest(idx, 0, "ddim", 4, 1.0, batch_size)

    shard = generate_shard(
        adapter,
        {"count": extractor} if extractor else {},
        cell,
        np.arange(n, dtype=np.int64),
        request=request,
        warm_up=warm_up,
        keep=4,
        device="cpu",
        batch_size=batch_size,
        timing=spec,
    )
    assert adapter.durations == [], "every injected duration was used"
    return shard, adapter


def test_repeats_are_the_cells_own_full_batches_after_the_warmup(clock):
    shard, adapter = _shard(clock, [9.0, 1.0, 6.0, 2.0], n=100, batch_size=25, warm_up=True, spec=TimingSpec())
    assert adapter.requests == [list(range(100))]  # 3 full batches after the warm-up: no extra batch
    per_image = [1 / 25, 6 / 25, 2 / 25]  # median 2/25, mean 3/25
    assert [r.seconds / r.images for r in shard.repeats] == pytest.approx(per_image)
    assert shard.warmup_s == 9.0 and shard.warmup_batches == 1 and shard.extra_batches == 0
    cost = costs([shard])
    assert cost["s_per_image"] == pytest.approx(np.median(per_image))
    assert cost["images_per_s"] == pytest.approx(1 / np.median(per_image))
    assert cost["ms_per_model_call"] == pytest.approx(1000 * 2.0 / CALLS)  # the median batch, per call
    rows = {r["metric"]: r for r in cost_rows([shard], cost)}
    s = rows["s_per_image"]
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((1 / 25, 6 / 25))  # the spread: fastest, slowest repeat
    assert s["std"] == pytest.approx(np.std(per_image, ddof=1))
    assert (rows["images_per_s"]["ci_low"], rows["images_per_s"]["ci_high"]) == pytest.approx((25 / 6, 25))
    assert (rows["ms_per_model_call"]["ci_low"], rows["ms_per_model_call"]["ci_high"]) == pytest.approx((250, 1500))
    rec = timing_record([shard], TimingSpec())
    assert rec["repeats"] == pytest.approx(per_image) and rec["median_s_per_image"] == pytest.approx(2 / 25)
    assert rec["spread_s_per_image"] == pytest.approx([1 / 25, 6 / 25])
    assert rec["fixed_batch"] == 25 and rec["warmup_batches"] == 1 and rec["extra_batches"] == 0


def test_extra_batches_only_when_a_cell_has_too_few_full_ones(clock):
    """30 samples in batches of 20: the full batch is the warm-up, the 10 left are not a full batch, so three
    extra batches of 20 are timed; their images are neither extracted nor counted as samples."""
    ex = CountingExtractor()
    shard, adapter = _shard(
        clock, [9.0, 0.5, 1.0, 4.0, 2.0], n=30, batch_size=20, warm_up=True, spec=TimingSpec(), extractor=ex
    )
    assert adapter.requests == [list(range(30))] + [list(range(20))] * 3
    assert ex.images == 30 and shard.features["count/mean"].shape == (30,)
    assert [r.seconds / r.images for r in shard.repeats] == pytest.approx([1 / 20, 4 / 20, 2 / 20])
    assert costs([shard])["s_per_image"] == pytest.approx(0.1)
    assert shard.generate_s == 0.5 and shard.extra_s == 7.0 and shard.warmup_s == 9.0
    assert shard.extra_batches == 3 and len(shard.indices) == 30


def test_a_later_cell_times_its_first_batch_and_a_tiny_cell_owes_its_warmups(clock):
    shard, adapter = _shard(clock, [1.0, 2.0, 3.0], n=50, batch_size=25, warm_up=False, spec=TimingSpec())
    assert [r.seconds for r in shard.repeats] == [1.0, 2.0, 3.0] and shard.warmup_batches == 0
    assert adapter.requests[1:] == [list(range(25))]  # one extra batch
    # 5 samples (the fixed batch is 5), 2 warm-ups asked: the cell's own batch and one extra are untimed
    shard, adapter = _shard(
        clock, [9.0, 8.0, 1.0, 3.0], n=5, batch_size=25, warm_up=True, spec=TimingSpec(repeats=2, warmup=2)
    )
    assert adapter.requests == [list(range(5))] * 4
    assert [r.seconds / r.images for r in shard.repeats] == [1 / 5, 3 / 5]
    assert shard.warmup_batches == 2 and shard.warmup_s == 17.0


def test_one_repeat_has_no_spread(clock):
    shard, _ = _shard(clock, [2.0], n=25, batch_size=25, warm_up=False, spec=TimingSpec(repeats=1))
    cost = costs([shard])
    rows = {r["metric"]: r for r in cost_rows([shard], cost)}
    assert rows["s_per_image"]["value"] == pytest.approx(2 / 25)
    for name in ("s_per_image", "images_per_s", "ms_per_model_call"):
        assert all(math.isnan(rows[name][k]) for k in ("std", "ci_low", "ci_high")), rows[name]
    rec = timing_record([shard], TimingSpec(repeats=1))
    assert rec["spread_s_per_image"] == [None, None] and rec["std_s_per_image"] is None


def test_ranks_pool_their_repeats_and_their_rates_add():
    def shard(*seconds):
        return Shard(np.arange(10), {}, np.zeros((0, 3, 1, 1), np.uint8), repeats=[Repeat(s, 10, 2) for s in seconds])

    cost = costs([shard(1.0, 3.0), shard(2.0)])
    assert cost["s_per_image"] == pytest.approx(0.2)  # median of 0.1, 0.3, 0.2
    assert cost["images_per_s"] == pytest.approx(2 / 0.2)


def test_threads_are_set_for_the_cell_and_restored(clock):
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    shard, adapter = _shard(
        clock, [1.0, 1.0], n=4, batch_size=2, warm_up=False, spec=TimingSpec(repeats=2, threads=want)
    )
    assert adapter.threads == [want, want] and torch.get_num_threads() == before
    rec = timing_record([shard], TimingSpec(threads=want))
    assert rec["threads"] == want and rec["torch_threads"] == want


# -- through the runner: the load warning, the progress bar --------------------------------------------------


def noise_adapter(device="cpu"):
    from evalkit.generate.zoo_adapter import NoiseAdapter

    return NoiseAdapter(resolution=8, device=device)


def _suite(repeats: int = 2) -> Suite:
    return Suite(
        name="t",
        models=[ModelSpec("noise", f"{__name__}:noise_adapter")],
        samplers=[SamplerSpec("ddim", "ddim")],
        steps=[2],
        guidance=[1.0],
        samples=6,
        metrics=[MetricSpec("throughput", None)],
        batch_size=3,
        timing=TimingSpec(repeats=repeats),
    )


@pytest.mark.parametrize("load, warned", [(3.5, True), (1.5, False)])
def test_a_load_above_the_usable_cores_is_warned_recorded_and_read_back(tmp_path, monkeypatch, capsys, load, warned):
    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 1.0, 0.5))
    monkeypatch.setattr(timing, "usable_cores", lambda: 2)
    out = tmp_path / "run"
    assert Runner(_suite(), out, device="cpu", progress=True).run().exit_code == 0
    rec = json.loads((out / "cells" / "noise__ddim__s2__g1" / "cell.json").read_text())
    t = rec["timing"]
    assert t["load_before"] == [load, 1.0, 0.5] and t["load_peak_1m"] == load and t["usable_cores"] == 2
    assert t["cpu_model"] and t["logical_cores"] == os.cpu_count() and t["torch_threads"] >= 1
    err = capsys.readouterr().err
    assert "  samples: " in err and "sample/s" in err  # the per-cell progress bar, with its rate
    expected = "machine load 3.5 (1-minute average) exceeded the 2 usable cores"
    assert (expected in err) is warned
    assert any(expected in w for w in t["warnings"]) is warned
    assert any(expected in w and "noise__ddim__s2__g1" in w for w in read_run(out).warnings) is warned
    env = json.loads((out / "run.json").read_text())["environment"]
    assert env["load_average"] == [load, 1.0, 0.5] and env["cpu_model"] == t["cpu_model"]


def test_quiet_shows_no_bars(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    assert Runner(_suite(repeats=1), tmp_path / "run", device="cpu", progress=False).run().exit_code == 0
    assert "  samples: " not in capsys.readouterr().err


def test_rows_carry_the_median_and_spread(tmp_path, monkeypatch):
    """The stored rows agree with the cell record's repeats (computed independently here)."""
    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    out = tmp_path / "run"
    assert Runner(_suite(repeats=3), out, device="cpu").run().exit_code == 0
    data = read_run(out)
    reps = data.cells["noise__ddim__s2__g1"]["timing"]["repeats"]
    assert len(reps) == 3  # 2 own full batches, the first the warm-up: 1 repeat, and 2 extra batches
    row = data.results.set_index("metric").loc["s_per_image"]
    assert row["value"] == pytest.approx(statistics.median(reps))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((min(reps), max(reps)))
    assert (data.results["s_per_image"] == row["value"]).all()


# -- sampler settings: each cell records its schedule; mixed spacings are warned about ----------------------


def _zoo_suite(*samplers: SamplerSpec) -> Suite:
    return Suite(
        name="spacing",
        models=[ModelSpec("mnist", "zoo")],
        samplers=list(samplers),
        steps=[2],
        guidance=[1.0],
        samples=2,
        metrics=[MetricSpec("throughput", None)],
        conditions={"classes": list(range(10))},
        batch_size=2,
        timing=TimingSpec(repeats=1),
    )


def test_cells_record_their_schedule_and_mixed_spacings_are_warned(tmp_path):
    out = tmp_path / "mixed"
    suite = _zoo_suite(SamplerSpec("ddim", "ddim"), SamplerSpec("euler", "euler"))
    assert Runner(suite, out, device="cpu").run().exit_code == 0
    data = read_run(out)
    ddim, euler = data.cells["mnist__ddim__s2__g1"]["schedule"], data.cells["mnist__euler__s2__g1"]["schedule"]
    assert (ddim["timestep_spacing"], ddim["timesteps"]) == ("leading", [500, 0])  # 1000 // 2 · [1, 0]
    assert (euler["timestep_spacing"], euler["timesteps"]) == ("linspace", [999.0, 0.0])
    said = [w for w in data.warnings if "space their timesteps differently" in w]
    assert len(said) == 1
    assert "ddim uses leading spacing (first t = 500 at 2 steps), euler uses linspace spacing (first t = 999" in said[0]
    assert "Lin et al. 2024" in said[0] and "timestep_spacing" in said[0]

    same = tmp_path / "same"
    trailing = {"timestep_spacing": "trailing"}
    suite = _zoo_suite(SamplerSpec("ddim", "ddim", trailing), SamplerSpec("euler", "euler", trailing))
    assert Runner(suite, same, device="cpu").run().exit_code == 0
    data = read_run(same)
    assert data.cells["mnist__ddim__s2__g1"]["schedule"]["timesteps"] == [999, 499]
    assert not [w for w in data.warnings if "space their timesteps" in w]


@pytest.mark.parametrize(
    "n,batch,warmup,repeats",
    [(200, 50, 1, 3), (30, 25, 1, 3), (10, 25, 1, 3), (60, 25, 2, 3), (30, 25, 0, 1), (7, 3, 3, 5)],
)
def test_the_dry_run_counts_the_timing_batches_the_timer_asks_for(n, batch, warmup, repeats):
    """evalkit.run.dry_run.timing_batches (arithmetic) against BatchTimer's own booking of the cell's batches."""
    from evalkit.run.dry_run import timing_batches

    for warm in (True, False):
        timer = timing.BatchTimer("cpu", warmup=warmup if warm else 0, fixed=min(batch, n))
        for start in range(0, n, batch):
            with timer.measure():
                pass
            timer.book(min(batch, n - start), 1)
        spec = TimingSpec(repeats=repeats, warmup=warmup)
        assert timing_batches(n, batch, spec, warm=warm) == timer.owed(repeats)
