"""Results are derived, never trusted: the export is stamped, verified against run.json and the cells, and
cells that another config made are left out and named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from evalkit.store import RunStore, StoreError, read_run, sha256_file, tidy_frame
from evalkit.store.export import CSV, META_KEY, PARQUET, STAMP, write_export
from evalkit.store.folder import configs_seen, record_config

CONFIG = {"name": "t", "samples": 3, "seed": 0}


def _rows(cell: str, fd: float) -> list[dict]:
    model, sampler, steps, guidance = cell.split("__")
    base = {
        "cell_id": cell,
        "model": model,
        "sampler": sampler,
        "steps": int(steps[1:]),
        "guidance": float(guidance[1:]),
    }
    return [
        {**base, "metric": "fd", "value": fd, "extractor": "net"},
        {**base, "metric": "images_per_s", "value": 100.0, "extractor": ""},
    ]


def make_run(root: Path, *, stamped: bool = True, n: int = 3, cell_hash: str = "h-a") -> Path:
    """Two finished cells under a run.json, exported as the runner does (stamped, or as before: plain)."""
    store = RunStore(root)
    cells = ["m__ddim__s4__g3", "m__euler__s4__g3"]
    store.write_manifest(
        {
            "run_id": "r",
            "suite": "t",
            "config": CONFIG,
            "config_hash": "cfg-1",
            "cells": [
                {"cell_id": c, "model": "m", "sampler": c.split("__")[1], "steps": 4, "guidance": 3.0} for c in cells
            ],
        }
    )
    rows = []
    for i, c in enumerate(cells):
        store.write_cell(
            c,
            {"cell_id": c, "n": n, "seed": 0, "cell_hash": cell_hash},
            features={"net/f": [[0.0]]},
            rows=_rows(c, 10.0 + i),
        )
        rows += _rows(c, 10.0 + i)
    df = tidy_frame(rows)
    if stamped:
        write_export(store, df)
    else:  # as exports were written before they carried a stamp
        df.to_parquet(root / PARQUET, index=False)
        df.to_csv(root / CSV, index=False)
    return root


def test_the_export_carries_the_config_hash_and_cell_checksums_and_verifies(tmp_path):
    run = make_run(tmp_path / "run")
    stamp = json.loads(pq.read_schema(run / PARQUET).metadata[META_KEY])
    records = {c: RunStore(run).read_cell(c)["files"]["rows.json"] for c in ("m__ddim__s4__g3", "m__euler__s4__g3")}
    assert stamp["config_hash"] == "cfg-1" and stamp["cells"] == records
    side = json.loads((run / STAMP).read_text())
    assert side["files"] == {PARQUET: sha256_file(run / PARQUET), CSV: sha256_file(run / CSV)}
    data = read_run(run)
    assert data.export_problems == [] and data.warnings == []
    assert sorted(data.export()["value"]) == sorted(data.results["value"])


@pytest.mark.parametrize("stamped", [True, False], ids=["stamped", "plain export"])
@pytest.mark.parametrize("name", [PARQUET, CSV])
def test_an_edited_export_is_named_and_changes_no_result(tmp_path, name, stamped):
    run = make_run(tmp_path / "run", stamped=stamped)
    before = read_run(run).results
    df = pd.read_parquet(run / name) if name == PARQUET else pd.read_csv(run / name)
    df.loc[df.metric == "fd", "value"] *= 3
    df.to_parquet(run / name, index=False) if name == PARQUET else df.to_csv(run / name, index=False)
    data = read_run(run)
    pd.testing.assert_frame_equal(data.results, before)  # results come from the cells
    text = " | ".join(data.export_problems)
    assert f"{run / name} disagrees with the cells" in text and "fd of m__ddim__s4__g3 [net] is 30 there, 10" in text
    assert (f"{run / name} was changed after evalkit wrote it" in text) == stamped
    if name == PARQUET:
        with pytest.raises(StoreError, match="disagrees with the cells"):
            data.export()


def test_an_export_of_another_config_or_other_cells_is_stale(tmp_path):
    run = make_run(tmp_path / "run")
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, "config_hash": "cfg-2"}))
    assert any("was made by config cfg-1, but run.json is config cfg-2" in p for p in read_run(run).export_problems)

    run2 = make_run(tmp_path / "run2")
    RunStore(run2).write_cell(
        "m__euler__s4__g3",
        {"cell_id": "m__euler__s4__g3"},
        features={"net/f": [[0.0]]},
        rows=_rows("m__euler__s4__g3", 12.0),
    )  # the cell recomputed since the export
    problems = read_run(run2).export_problems
    assert any("made from other cells than the run's finished ones: m__euler__s4__g3" in p for p in problems)
    assert any("fd of m__euler__s4__g3 [net] is 11 there, 12" in p for p in problems)


def test_an_unreadable_export_is_reported_not_raised(tmp_path):
    run = make_run(tmp_path / "run", stamped=False)
    (run / PARQUET).write_bytes(b"not parquet")
    problems = read_run(run).export_problems
    assert len(problems) == 1 and f"{run / PARQUET} is unreadable" in problems[0]


def test_an_export_alone_is_checked_against_its_own_checksums(tmp_path):
    run = make_run(tmp_path / "run")
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in (PARQUET, CSV, STAMP):
        shutil.copy(run / name, alone / name)
    assert read_run(alone).export_problems == [] and len(read_run(alone).results) == 4
    (alone / CSV).write_text((alone / CSV).read_text().replace("10.0", "30.0"))
    assert read_run(alone).export_problems == [
        f"{alone / CSV} was changed after evalkit wrote it (its sha256 is not the one in {STAMP})"
    ]


@pytest.mark.parametrize(
    "record,why",
    [
        ({"n": 5}, "made with samples 5, run.json says 3"),
        ({"seed": 7}, "made with seed 7, run.json says 0"),
        ({"steps": 8}, "made for steps 8, run.json says 4"),
    ],
)
def test_cells_another_config_made_are_stale_and_left_out(tmp_path, record, why):
    run = make_run(tmp_path / "run")
    c = "m__ddim__s4__g3"
    RunStore(run).write_cell(
        c, {"cell_id": c, "n": 3, "seed": 0, **record}, features={"net/f": [[0.0]]}, rows=_rows(c, 10.0)
    )
    data = read_run(run)
    assert data.stale == {c: why} and data.status(c) == "stale" and data.status("m__euler__s4__g3") == "done"
    assert set(data.results.cell_id) == {"m__euler__s4__g3"}
    assert any(c in w and why in w for w in data.warnings)
    assert any(f"{run / PARQUET} disagrees with the cells" in p for p in data.export_problems)


def test_a_cell_hash_named_by_run_json_must_match(tmp_path):
    run = make_run(tmp_path / "run", cell_hash="h-old")
    manifest = json.loads((run / "run.json").read_text())
    for entry in manifest["cells"]:
        entry["cell_hash"] = "h-new"
    (run / "run.json").write_text(json.dumps(manifest))
    data = read_run(run)
    assert set(data.stale) == {"m__ddim__s4__g3", "m__euler__s4__g3"} and data.results.empty
    assert data.stale["m__ddim__s4__g3"] == "cell hash h-old != h-new in run.json"


# -- every config run into a folder -----------------------------------------------------------------------------
def _add_config(run: Path, config_hash: str, cells: dict[str, str]) -> None:
    """Record in run.json another config seen in the folder, with its cells and their hashes."""
    manifest = json.loads((run / "run.json").read_text())
    seen = configs_seen(manifest)
    seen[config_hash] = {"suite": "old", "config": {**CONFIG, "seed": 1}, "cells": [
        {"cell_id": c, "cell_hash": h} for c, h in cells.items()
    ]}  # fmt: skip
    (run / "run.json").write_text(json.dumps({**manifest, "configs": seen}))


def _old_cell(run: Path, cell: str, cell_hash: str, fd: float) -> None:
    RunStore(run).write_cell(
        cell,
        {"cell_id": cell, "n": 3, "seed": 1, "cell_hash": cell_hash},
        features={"net/f": [[0.0]]},
        rows=_rows(cell, fd),
    )


def test_a_run_json_without_configs_gives_its_own_config():
    manifest = {"config_hash": "cfg-1", "config": CONFIG, "suite": "t", "cells": [{"cell_id": "c"}], "created_at": "x"}
    assert configs_seen(manifest) == {
        "cfg-1": {"suite": "t", "config": CONFIG, "cells": [{"cell_id": "c"}], "first_run": "x", "last_run": None}
    }
    assert configs_seen({"run_id": "r"}) == {}
    first = record_config(manifest, "cfg-2", {"suite": "u"}, "t1")
    again = record_config({**manifest, "configs": first}, "cfg-2", {"suite": "u"}, "t2")
    assert (
        set(again) == {"cfg-1", "cfg-2"} and again["cfg-2"]["first_run"] == "t1" and again["cfg-2"]["last_run"] == "t2"
    )


def test_cells_of_other_configs_are_in_the_export_not_in_the_results(tmp_path):
    run = make_run(tmp_path / "run", stamped=False)
    _old_cell(run, "m__heun__s4__g3", "h-old", 20.0)
    _add_config(run, "cfg-0", {"m__heun__s4__g3": "h-old"})
    data = read_run(run)
    assert set(data.results.cell_id) == {"m__ddim__s4__g3", "m__euler__s4__g3"}  # run.json's config only
    assert set(data.all_results.cell_id) == {"m__ddim__s4__g3", "m__euler__s4__g3", "m__heun__s4__g3"}
    assert set(data.configs) == {"cfg-1", "cfg-0"}
    write_export(RunStore(run), tidy_frame([r for c in data.seen for r in RunStore(run).cell_rows(c)]))
    assert read_run(run).export_problems == []
    # an export of only run.json's config now misses a finished cell of the folder: named, not trusted
    write_export(
        RunStore(run), tidy_frame([r for c in data.results.cell_id.unique() for r in RunStore(run).cell_rows(c)])
    )
    assert any("no rows of finished cells m__heun__s4__g3" in p for p in read_run(run).export_problems)


def test_a_cell_recomputed_by_another_config_or_corrupt_is_left_out(tmp_path):
    run = make_run(tmp_path / "run", stamped=False)
    # the old config's cell m__ddim__s4__g3 was recomputed by the current config (another hash now): once, current
    _add_config(run, "cfg-0", {"m__ddim__s4__g3": "h-gone", "m__heun__s4__g3": "h-old"})
    _old_cell(run, "m__heun__s4__g3", "h-old", 20.0)
    (run / "cells" / "m__heun__s4__g3" / "rows.json").write_text("[]")  # corrupt: left out, never a crash
    data = read_run(run)
    assert sorted(data.all_results.cell_id.unique()) == ["m__ddim__s4__g3", "m__euler__s4__g3"]
    assert data.all_results[data.all_results.metric == "fd"].value.tolist() == [10.0, 11.0]


def test_failed_metric_rows_keep_their_error_and_n_is_an_integer(tmp_path):
    run = make_run(tmp_path / "run", stamped=False)
    c = "m__ddim__s4__g3"
    rows = [{**r, "n": 3} for r in _rows(c, 10.0)] + [
        {**_rows(c, 0)[0], "metric": "kid", "value": float("nan"), "error": "ValueError: too few samples", "n": 3}
    ]
    RunStore(run).write_cell(
        c, {"cell_id": c, "n": 3, "seed": 0, "cell_hash": "h-a"}, features={"net/f": [[0.0]]}, rows=rows
    )
    data = read_run(run)
    assert data.failed_metrics()[["cell_id", "metric", "error"]].values.tolist() == [
        [c, "kid", "ValueError: too few samples"]
    ]
    assert (data.results[data.results.metric != "kid"].error == "").all()  # rows written without one: ""
    assert str(data.results.n.dtype) == "Int64"
