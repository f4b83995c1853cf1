"""Code runs only where the user asked for it: ``--dry-run`` imports no ``module:function`` adapter, and
``python -m evalkit`` does not import modules from the working folder unless it is on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGIN = """\
from pathlib import Path
Path(__file__).with_name("IMPORTED").touch()

def make(device="cpu", **options):
    raise RuntimeError("not meant to run")
"""
SUITE = """\
name: probe
models: [{name: p, adapter: "cwd_probe_adapter:make"}]
samplers: [ddim]
steps: [1]
samples: 2
metrics: [throughput]
"""


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "cwd_probe_adapter.py").write_text(PLUGIN)
    (tmp_path / "probe.yaml").write_text(SUITE)
    return tmp_path


def _evalkit(cwd: Path, *args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    elif os.environ.get("PYTHONPATH"):  # keep the tree under test importable, never the working folder
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in os.environ["PYTHONPATH"].split(os.pathsep) if p and Path(p).resolve() != cwd.resolve()
        )
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_dry_run_does_not_import_a_module_function_adapter(tmp_path):
    folder = _folder(tmp_path)
    extra = os.pathsep.join(p for p in [str(folder), os.environ.get("PYTHONPATH", "")] if p)
    r = _evalkit(folder, "run", "probe.yaml", "--dry-run", pythonpath=extra)
    assert r.returncode == 0, r.stderr
    assert "not imported by --dry-run" in r.stdout
    assert not (folder / "IMPORTED").exists()


def test_python_m_evalkit_does_not_import_from_the_working_folder(tmp_path):
    folder = _folder(tmp_path)
    r = _evalkit(folder, "run", "probe.yaml", "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 2, r.stderr  # found by the preflight, before any cell (evalkit.run.preflight)
    assert "No module named 'cwd_probe_adapter'" in r.stderr
    assert not (folder / "IMPORTED").exists()
    # asked for explicitly, the working folder is importable
    extra = os.pathsep.join(p for p in [".", os.environ.get("PYTHONPATH", "")] if p)
    r = _evalkit(folder, "run", "probe.yaml", "--out", str(tmp_path / "out2"), "-q", pythonpath=extra)
    assert (folder / "IMPORTED").exists() and "not meant to run" in r.stderr
