"""``evalkit check``'s arguments are checked before any work: exit 2 and one line, no table, no verdict.

``--confidence`` in (0, 1), ``--bootstrap`` >= 1, ``--k`` finite > 0, and every output (``--junit``,
``--markdown``, ``$GITHUB_STEP_SUMMARY``) writable — before, a read-only ``--junit`` printed PASS and then
died with a traceback (exit 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_fixtures import good  # noqa: F401  (a fixture)

from evalkit.cli import main
from evalkit.gate.baseline import CheckConfigError
from evalkit.gate.commands import run_check

BAD_OPTIONS = [
    (["--confidence", "0"], "--confidence 0.0: must be between 0 and 1"),
    (["--confidence", "1"], "--confidence 1.0: must be between 0 and 1"),
    (["--confidence", "1.5"], "--confidence 1.5"),
    (["--confidence", "nan"], "--confidence nan"),
    (["--bootstrap", "0"], "--bootstrap 0: must be at least 1"),
    (["--bootstrap", "-3"], "--bootstrap -3"),
    (["--k", "0"], "--k 0.0: must be a finite number > 0"),
    (["--k", "-1"], "--k -1.0"),
    (["--k", "nan"], "--k nan"),
    (["--k", "inf"], "--k inf"),
]


def _check(good, *extra: str) -> int:
    return main(["check", str(good[0]), "--baseline", str(good[1]), "-q", "--bootstrap", "50", *extra])


def _one_line_and_no_work(capsys, named: str) -> None:
    out, err = capsys.readouterr()
    assert out == "", out[:500]  # nothing judged, no table
    assert err.count("\n") == 1 and err.startswith("evalkit: error: ") and named in err, err


@pytest.mark.parametrize("args,named", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_a_bad_option_is_exit_2_before_any_work(good, capsys, args, named):
    assert _check(good, *args) == 2
    _one_line_and_no_work(capsys, named)


def _not_writable(tmp: Path) -> dict[str, Path]:
    (tmp / "a-file").write_text("x")
    return {"a directory": tmp, "under a file": tmp / "a-file" / "out.xml"}


@pytest.mark.parametrize("where", ["a directory", "under a file"])
@pytest.mark.parametrize("flag", ["--junit", "--markdown"])
def test_an_output_that_cannot_be_written_is_exit_2_before_any_work(good, tmp_path, capsys, flag, where):
    path = _not_writable(tmp_path)[where]
    assert _check(good, flag, str(path)) == 2
    _one_line_and_no_work(capsys, f"{flag} {path}: cannot be written")


def test_an_unwritable_step_summary_is_exit_2_before_any_work(good, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))
    assert _check(good) == 2
    _one_line_and_no_work(capsys, "GITHUB_STEP_SUMMARY")


def test_a_writable_output_is_probed_without_leaving_a_file(good, tmp_path, capsys):
    junit, md = tmp_path / "new" / "j.xml", tmp_path / "m.md"
    assert _check(good, "--junit", str(junit), "--markdown", str(md)) == 0
    assert junit.read_text().startswith("<?xml") and md.read_text().startswith("### evalkit check")
    assert _check(good, "--k", "nan", "--junit", str(tmp_path / "other.xml")) == 2
    assert not (tmp_path / "other.xml").exists()  # the probe removed the file it created


def test_the_python_api_checks_the_same_options(good):
    with pytest.raises(CheckConfigError, match="--confidence 2"):
        run_check(good[0], good[1], confidence=2)
    with pytest.raises(CheckConfigError, match="--bootstrap 0"):
        run_check(good[0], good[1], n_resamples=0)


def test_baseline_tolerance_options_must_be_finite(tmp_path, capsys):
    out = tmp_path / "b.json"
    for flag, value in (("--k", "nan"), ("--rel", "inf"), ("--abs", "-1")):
        assert main(["baseline", "no-such-suite.yaml", "--seeds", "3", "-o", str(out), flag, value, "-q"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{flag} " in err and "finite non-negative" in err, err
    assert not out.exists()
