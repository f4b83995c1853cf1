"""`evalkit stats REF` (evalkit.references.commands): parsing, compute then cache hit, FD statistics, errors."""

from __future__ import annotations

import argparse

import numpy as np

from evalkit.cli import main
from evalkit.references.commands import register


def test_stats_arguments():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["stats", "mnist-heldout", "-e", "mnist-net"])
    assert args.extractor == ["mnist-net"] and args.strict is False
    assert parser.parse_args(["stats", "imgs/", "--strict"]).strict is True


def test_stats_computes_then_hits_the_cache_and_writes_fd_statistics(tmp_path, capsys):
    argv = [
        "stats",
        "mnist-heldout",
        "-e",
        "mnist-net",
        "--samples",
        "20",
        "--cache-dir",
        str(tmp_path / "c"),
        "--out",
        str(tmp_path / "s.npz"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "20 images" in out and "computed" in out
    assert main([*argv, "--strict"]) == 0  # a built-in dataset has nothing to decode: --strict changes nothing
    assert "cache hit" in capsys.readouterr().out
    with np.load(tmp_path / "s.npz") as z:
        assert z["mu"].shape == (64,) and z["sigma"].shape == (64, 64) and int(z["n"]) == 20


def test_stats_on_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "missing"), "-e", "mnist-net", "--cache-dir", str(tmp_path / "c")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "missing" in err[0] and err[0].startswith("evalkit: error:")
