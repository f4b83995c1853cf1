"""One exit-code contract for every command: bad usage, input, environment and I/O exit 2 with one line on
stderr and no traceback (``--debug`` shows it); interrupts end with one line too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own exits (usage errors)
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("places")
    (root / "a_file").write_text("x")
    (root / "a_dir").mkdir()
    readonly = root / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    corrupt = root / "corrupt_run"
    corrupt.mkdir()
    (corrupt / "results.parquet").write_bytes(b"PAR1 not really")
    suite = root / "tiny.yaml"
    suite.write_text(
        "name: tiny\nmodels: [{name: n, adapter: noise}]\nsamplers: [ddim]\nsteps: [1]\nsamples: 2\n"
        "metrics: [throughput]\n"
    )
    return {
        "root": str(root),
        "file": str(root / "a_file"),
        "dir": str(root / "a_dir"),
        "ro": str(readonly),
        "corrupt": str(corrupt),
        "suite": str(suite),
    }


BAD = [
    ["nosuch-command"],
    ["run"],
    ["run", "no-such-suite.yaml"],
    ["run", "{suite}", "--batch-size", "0"],
    ["run", "{suite}", "--batch-size", "x"],
    ["run", "{suite}", "--device", "nope"],
    ["run", "{suite}", "--out", "{file}"],
    ["run", "{suite}", "--out", "{file}/under"],
    ["run", "{suite}", "--out", "{ro}/run"],
    ["list", "bogus"],
    ["report"],
    ["report", "{root}/missing-run"],
    ["report", "{corrupt}"],
    ["check", "{corrupt}"],
    ["check", "{corrupt}", "--baseline", "{root}/missing.json"],
    ["check", "{corrupt}", "--baseline", "{dir}"],
    ["baseline", "{suite}", "--seeds", "1", "-o", "{root}/b.json"],
    ["baseline", "no-such-suite.yaml", "-o", "{root}/b.json"],
    ["stats", "{root}/missing-images", "-e", "mnist-net"],
    ["stats", "mnist-heldout", "-e", "no-such-extractor"],
    ["weights", "download", "no-such-weights"],
    ["zoo", "train", "mnist", "--steps", "x"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_arguments_exit_2_with_one_line_and_no_traceback(argv, places, capsys):
    if os.geteuid() == 0 and "{ro}" in " ".join(argv):
        pytest.skip("root writes into read-only folders")
    code, err = run_cli([a.format(**places) for a in argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("evalkit: error: "), err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(places, capsys):
    code, err = run_cli(["run", places["suite"], "--out", places["file"], "--debug"], capsys)
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("evalkit: error: ")


def test_disk_full_is_one_line_exit_2_and_keeps_finished_cells(places, capsys, monkeypatch, tmp_path):
    from evalkit.store import files

    out = tmp_path / "run"
    assert run_cli(["run", places["suite"], "--out", str(out), "-q"], capsys)[0] == 0
    done = sorted(p.name for p in (out / "cells").iterdir())
    real = files._write_replace

    def full(path, data):
        if path.name == "results.parquet":
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(files, "_write_replace", full)
    code, err = run_cli(["run", places["suite"], "--out", str(out), "-q"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "No space left on device" in err
    assert sorted(p.name for p in (out / "cells").iterdir()) == done  # nothing already computed is lost


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_in_the_first_moments_is_one_line(sig, code, places):
    """A signal while the command is still importing its libraries: one line, no library traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evalkit",
            "run",
            places["suite"],
            "--out",
            str(Path(places["root"]) / f"sig{int(sig)}"),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_report_into_an_existing_folder_is_one_line_exit_2(places, capsys, tmp_path):
    out = tmp_path / "run"
    assert run_cli(["run", places["suite"], "--out", str(out), "-q"], capsys)[0] == 0
    code, err = run_cli(["report", str(out), "-o", places["dir"]], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert places["dir"] in err
