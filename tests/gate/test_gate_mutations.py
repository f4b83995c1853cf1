"""A gate that cannot be fooled: each mutation of a run folder or a baseline is exit 2 — never a verdict.

One good run folder and one good baseline (the synthetic folders of test_check); each case changes one
thing the way a person, a stale file or an interrupted run would, then runs ``evalkit check RUN --baseline B``.
A stale or edited export is refused (exit 2, naming the file) even though results come from the cells:
the folder no longer says one thing, so nothing is judged.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gate_fixtures import good  # noqa: F401  (a fixture)
from test_check import suite, write_run

from evalkit.cli import main
from evalkit.store import read_run


def check(run: Path, baseline: Path, *extra: str) -> int:
    return main(["check", str(run), "--baseline", str(baseline), "-q", "--bootstrap", "50", *extra])


def copy_run(good, tmp: Path) -> Path:
    return Path(shutil.copytree(good[0], tmp / "run"))


def edit_baseline(good, tmp: Path, edit: Callable[[dict], None]) -> Path:
    """The good baseline (JSON + sidecar) copied to ``tmp`` with its JSON edited."""
    src = good[1]
    shutil.copy(src.with_suffix(".npz"), tmp / src.with_suffix(".npz").name)
    doc = json.loads(src.read_text())
    edit(doc)
    (tmp / src.name).write_text(json.dumps(doc))  # NaN is written as NaN, as a hand edit might
    return tmp / src.name


# -- the mutations: each returns (run, baseline, extra args, what the message must name) ------------------
def stale_parquet(good, tmp):
    """results.parquet of another run (a worse model) left in the folder: the cells are unchanged."""
    run, other = copy_run(good, tmp), write_run(tmp / "other", suite(), shift=1.0)
    shutil.copy(other / "results.parquet", run / "results.parquet")
    return run, good[1], [], "results.parquet disagrees with the cells"


def edited_parquet(good, tmp):
    run = copy_run(good, tmp)
    df = pd.read_parquet(run / "results.parquet")
    df.loc[df.metric == "fd", "value"] *= 3
    df.to_parquet(run / "results.parquet", index=False)
    return run, good[1], [], "results.parquet disagrees with the cells"


def cells_of_another_model(good, tmp):
    """run.json of another model implementation (an interrupted run of it) over the finished cells of this one."""
    run = copy_run(good, tmp)
    other = suite(models=[{"name": "m", "adapter": "zoo", "options": {"weights": "untrained"}}])
    manifest = json.loads((run / "run.json").read_text())
    manifest.update(config=other.to_config(), config_hash=other.config_hash())
    (run / "run.json").write_text(json.dumps(manifest))
    return run, good[1], [], "m__ddim__s4__g3 (cell hash"


def cells_of_other_samples(good, tmp):
    """Cells with 40 samples under a run.json that says 80 (a restart with other ``samples``, interrupted)."""
    run = write_run(tmp / "run", suite(samples=40))
    manifest = json.loads((run / "run.json").read_text())
    manifest.update(config=suite().to_config(), config_hash=suite().config_hash())
    (run / "run.json").write_text(json.dumps(manifest))
    return run, good[1], [], "made by another config than its run.json"


def _entry_edit(field: str, value) -> Callable:
    def mutate(good, tmp):
        def edit(doc):
            target = doc["entries"][0]
            for part in field.split(".")[:-1]:
                target = target[part]
            target[field.split(".")[-1]] = value

        return good[0], edit_baseline(good, tmp, edit), [], f"entries[0].{field}"

    return mutate


def empty_entries(good, tmp):
    return good[0], edit_baseline(good, tmp, lambda doc: doc.update(entries=[])), [], "entries: empty"


def duplicate_entry(good, tmp):
    baseline = edit_baseline(good, tmp, lambda doc: doc["entries"].append(dict(doc["entries"][0])))
    return good[0], baseline, [], "duplicate of entries[0]"


def pickled_sidecar(good, tmp):
    """A sidecar holding a pickled object array, its sha256 updated to match: never unpickled."""
    buf = io.BytesIO()
    np.savez(buf, **{"cells/m__ddim__s4__g3/mnist-net/features": np.array([{"a": 1}], dtype=object)})
    data = buf.getvalue()
    baseline = edit_baseline(good, tmp, lambda doc: doc.update(features_sha256=hashlib.sha256(data).hexdigest()))
    baseline.with_suffix(".npz").write_bytes(data)
    return good[0], baseline, [], "not a plain npz"


def baseline_directory(good, tmp):
    return good[0], good[1].parent, [], "is a directory"


MUTATIONS = {
    "stale parquet": stale_parquet,
    "edited parquet": edited_parquet,
    "NaN sigma": _entry_edit("sigma", math.nan),
    "NaN k": _entry_edit("tolerance.k", math.nan),
    "empty entries": empty_entries,
    "wrong direction": _entry_edit("direction", "sideways"),
    "cells of another model": cells_of_another_model,
    "cells of other samples": cells_of_other_samples,
    "value 'abc'": _entry_edit("value", "abc"),
    "duplicate entry": duplicate_entry,
    "pickled sidecar": pickled_sidecar,
    "baseline is a directory": baseline_directory,
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_mutation_is_exit_2_never_a_verdict(good, tmp_path, capsys, name):
    assert check(*good) == 0  # the unmutated pair passes
    capsys.readouterr()
    run, baseline, extra, named = MUTATIONS[name](good, tmp_path)
    rc = check(run, baseline, *extra)
    captured = capsys.readouterr()
    assert rc == 2, (name, rc, captured.out[-2000:])
    assert named in captured.err, captured.err
    assert "PASS" not in captured.out and "FAIL" not in captured.out


def test_an_edited_export_changes_no_number_and_is_named(good, tmp_path, capsys):
    """The verdict's numbers come from the cells: FD ×3 in results.parquet leaves them as they were; the
    edit is reported (and the check refuses the folder) rather than silently ignored."""
    before = read_run(good[0]).results
    run, baseline, _, _ = edited_parquet(good, tmp_path)
    after = read_run(run)
    pd.testing.assert_series_equal(after.results["value"], before["value"])
    disagrees = [p for p in after.export_problems if "disagrees with the cells" in p]
    assert len(disagrees) == 1, after.export_problems  # (and, once exports are stamped: "changed after written")
    pattern = r"fd of m__\S+ \[mnist-net\] is (\S+) there, (\S+) in the cell"
    there, in_cell = re.search(pattern, disagrees[0]).groups()
    assert float(there) == pytest.approx(3 * float(in_cell), rel=1e-5)
    assert check(run, baseline) == 2
    assert str(run / "results.parquet") in capsys.readouterr().err
