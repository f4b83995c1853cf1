"""The command starts light: ``evalkit --help``, a usage error and ``evalkit list`` import no torch, pandas, scipy
or diffusers (each check runs in a fresh interpreter and reads ``sys.modules``); a command that needs torch imports
it with SIGINT/SIGTERM deferred; the lazy package ``__init__`` files still export every name they exported.

Start-up *times* are measured by ``benchmarks/bench_startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from evalkit.errors import ConfigError
from evalkit.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "diffusers", "transformers", "pandas", "pyarrow", "scipy", "matplotlib")
COMMANDS = ("run", "score", "list", "report", "check", "baseline", "stats", "weights", "zoo")


def _python(code: str, *, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that imports evalkit from this tree (and ``extra_path`` first)."""
    path = [str(p) for p in (extra_path, ROOT) if p is not None]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _run_main(argv: list[str]) -> tuple[int, str, list[str]]:
    """Exit code, stdout and the heavy modules loaded by ``evalkit.cli.main(argv)`` in a fresh interpreter."""
    r = _python(
        f"""
        import json, sys
        from evalkit.cli import main
        try:
            code = main({argv!r})
        except SystemExit as e:  # --help and usage errors leave through argparse
            code = e.code
        sys.stdout.flush()
        print("\\nLOADED " + json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        sys.exit(code)
        """
    )
    out, _, loaded = r.stdout.rpartition("\nLOADED ")
    assert loaded, r.stderr
    return r.returncode, out, json.loads(loaded)


@pytest.mark.parametrize(
    "argv,code",
    [(["--help"], 0), (["run", "--help"], 0), (["check", "--help"], 0), (["no-such-command"], 2), (["list"], 0)],
    ids=lambda a: " ".join(a) if isinstance(a, list) else str(a),
)
def test_help_usage_errors_and_list_import_no_heavy_library(argv, code):
    exit_code, out, loaded = _run_main(argv)
    assert exit_code == code
    assert loaded == [], f"evalkit {' '.join(argv)} imported {loaded}"
    if argv == ["--help"]:
        assert all(c in out for c in COMMANDS), out


def test_list_answers_from_the_registries_without_importing_the_parts():
    code, out, loaded = _run_main(["list"])
    assert code == 0 and loaded == []
    lines = {line.split(":")[0]: line for line in out.splitlines() if not line.startswith(" ")}
    assert {"adapters", "samplers", "metrics", "extractors", "suites"} <= set(lines)
    for name in ("mnist-net", "inception-clean", "clip", "lpips-alex"):
        assert name in lines["extractors"]
    for name in ("zoo", "noise", "diffusers"):
        assert name in lines["adapters"]
    assert "smoke" in lines["suites"]
    for line in ("ddim ", "heun ", "fd ", "kid ", "is ", "throughput "):
        assert f"\n  {line}" in out


def test_importing_the_packages_loads_no_heavy_library():
    packages = ["evalkit.features", "evalkit.generate", "evalkit.references", "evalkit.store", "evalkit.zoo"]
    packages += ["evalkit.metrics", "evalkit.gate", "evalkit.report", "evalkit.run", "evalkit.registry"]
    r = _python(
        f"""
        import importlib, json, sys
        for p in {packages!r}:
            importlib.import_module(p)
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


# -- every name the package __init__ files exported before they became lazy is still there ------------
EXPORTED = {
    "evalkit.features": ["Extractor", "available_extractors", "build_extractor", "register_extractor"],
    "evalkit.generate": ["Adapter", "GeneratedBatch", "GenerationRequest", "available_adapters", "build_adapter"],
    "evalkit.references": [
        "BUILTIN_DATASETS",
        "ArrayReference",
        "FileReference",
        "ReferenceSet",
        "ReferenceSetError",
        "StatsReference",
        "cache_key",
        "cache_path",
        "default_cache_dir",
        "open_reference",
        "reference_features",
        "save_reference_stats",
    ],
    "evalkit.store": [
        "RESULT_COLUMNS",
        "RunData",
        "RunStore",
        "StoreError",
        "atomic_write_bytes",
        "atomic_write_json",
        "join_features",
        "load_npz_checked",
        "npz_bytes",
        "read_run",
        "read_runs",
        "record_intact",
        "safe_component",
        "seal_record",
        "sha256_bytes",
        "sha256_file",
        "split_features",
        "tidy_frame",
    ],
    "evalkit.zoo": ["NULL_CLASS", "MnistNet", "ZooWeightsError", "load_mnist_net", "load_mnist_unet", "model_card"],
    "evalkit.metrics": [
        "MetricDef",
        "MetricInputs",
        "MetricValue",
        "available_metrics",
        "get_metric",
        "register_metric",
        *("classification", "clip_score", "cmmd", "fd_inf", "frechet", "inception_score", "kid", "lpips", "prdc"),
    ],
}


def test_every_exported_name_is_still_importable_from_a_fresh_interpreter():
    r = _python(
        f"""
        import importlib
        exported = {EXPORTED!r}
        for package, names in exported.items():
            module = importlib.import_module(package)
            for name in names:
                value = getattr(module, name)  # the lazy path, from cold
                assert getattr(module, name) is value, (package, name)
            assert set(getattr(module, "__all__", names)) <= set(dir(module)), package
            star = {{}}
            exec(f"from {{package}} import *", star)  # __all__ resolves through the lazy __getattr__ too
            assert set(getattr(module, "__all__", [])) <= set(star), package
        print("ok")
        """
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_unknown_names_are_still_attribute_errors():
    import evalkit.features
    import evalkit.generate
    import evalkit.references
    import evalkit.store
    import evalkit.zoo

    for package in (evalkit.features, evalkit.generate, evalkit.references, evalkit.store, evalkit.zoo):
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018


# -- the extractors declared by name are the ones their modules register ------------------------------
def test_declared_extractors_are_exactly_what_their_modules_register():
    import importlib

    import evalkit.features as features
    from evalkit.registry import EXTRACTORS

    for module in features.BUILTIN:
        importlib.import_module(f"evalkit.features.{module}")
    registered: dict[str, set[str]] = {}
    for name, factory in EXTRACTORS._items.items():
        module = getattr(factory, "__module__", "") or ""
        if module.startswith("evalkit.features."):
            registered.setdefault(module.rpartition(".")[2], set()).add(name)
    assert registered == {m: set(names) for m, names in features.BUILTIN.items()}
    assert all(callable(EXTRACTORS.get(n)) for names in features.BUILTIN.values() for n in names)


# -- Registry.declare ----------------------------------------------------------------------------------
@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write module ``name`` with ``body`` onto sys.path; removed from sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, body: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_a_declared_part_is_listed_without_import_and_imported_on_lookup(plugin_module, monkeypatch):
    reg = Registry("thing", builtins="evalkit.errors")
    monkeypatch.setitem(sys.modules, "startup_registry_holder", types.SimpleNamespace(REG=reg))
    module = plugin_module(
        "startup_declared_part",
        """
        from startup_registry_holder import REG

        def make():
            return "made"

        REG.register("part", make)
        """,
    )
    reg.declare("part", module)
    assert reg.names() == ["part"] and module not in sys.modules
    assert reg.get("part")() == "made" and module in sys.modules
    assert reg.get("part") is sys.modules[module].make


def test_a_declared_name_taken_by_another_module_is_registered_twice():
    reg = Registry("thing", builtins="evalkit.errors")
    reg.declare("part", "some.module")
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("part", lambda: None)  # defined here, not in some.module
    with pytest.raises(ConfigError, match="registered twice"):
        reg.declare("part", "other.module")


def test_a_declaration_its_module_does_not_keep_is_an_error(plugin_module):
    reg = Registry("thing", builtins="evalkit.errors")
    reg.declare("part", plugin_module("startup_empty_module", "X = 1\n"))
    with pytest.raises(ConfigError, match="does not register it"):
        reg.get("part")
    reg.declare("gone", "startup_no_such_module")
    with pytest.raises(ImportError, match="startup_no_such_module"):
        reg.get("gone")


# -- torch, when a command needs it, is imported with signals deferred -----------------------------------
FAKE_TORCH = """
import os, signal, time
os.kill(os.getpid(), signal.{sig})  # arrives while "torch" imports
time.sleep(0.2)
COMPLETE = True  # reached only if the signal did not interrupt the import
"""


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_the_torch_import_is_deferred_and_then_ends_the_command(tmp_path, sig, code):
    (tmp_path / "torch.py").write_text(FAKE_TORCH.format(sig=sig))
    r = _python(
        """
        import sys
        from evalkit.cli import main
        code = main(["run", "no-such-suite.yaml"])  # the handler would say: no such suite, exit 2
        print(code, sys.modules["torch"].COMPLETE)
        """,
        extra_path=tmp_path,
    )
    assert r.stdout.split() == [str(code), "True"], r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evalkit: error: "), r.stderr


def test_a_command_without_torch_does_not_import_it(tmp_path):
    (tmp_path / "torch.py").write_text("raise RuntimeError('torch imported')\n")
    r = _python(
        """
        from evalkit.cli import main
        print(main(["list"]))
        """,
        extra_path=tmp_path,
    )
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "0", r.stderr


# -- `evalkit run SUITE --dry-run` plans the built-in models from declarations: no torch, diffusers, pandas ----
def test_the_smoke_dry_run_imports_no_heavy_library_and_plans_what_the_adapter_counts(tmp_path):
    from evalkit.generate.zoo_adapter import ZooMnistAdapter
    from evalkit.suite import load_suite

    code, out, loaded = _run_main(["run", "suites/smoke.yaml", "--dry-run", "--out", str(tmp_path / "run")])
    assert code == 0, out
    assert loaded == [], f"evalkit run suites/smoke.yaml --dry-run imported {loaded}"
    assert not (tmp_path / "run").exists()
    found = re.findall(r"^  (\S+) +model calls/sample +(\d+)   batched calls (\d+)$", out, flags=re.MULTILINE)
    planned = {cell: (int(per), int(calls)) for cell, per, calls in found}
    # the full path: the built adapter (trained weights, their recorded schedule) asked cell by cell
    suite, adapter = load_suite(ROOT / "suites" / "smoke.yaml"), ZooMnistAdapter()
    expected = {}
    for cell in suite.cells():
        per = adapter.expected_model_calls(cell.sampler.name, cell.steps, cell.sampler.options)
        expected[cell.cell_id] = (per, per * -(-cell.n // suite.batch_size))
    assert planned == expected
    assert f"total batched model calls (estimate): {sum(c for _, c in expected.values())}\n" in out
    assert f"suite smoke: {len(expected)} cells × {suite.samples} samples, batch {suite.batch_size}\n" in out


def test_a_real_run_still_imports_torch_with_signals_deferred_and_a_dry_run_does_not(tmp_path):
    (tmp_path / "torch.py").write_text("raise RuntimeError('torch imported')\n")
    r = _python(
        f"""
        from evalkit.cli import main
        print(main(["run", "suites/smoke.yaml", "--dry-run", "--out", {str(tmp_path / "run")!r}]))
        """,
        extra_path=tmp_path,
    )
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "0", r.stderr
    from evalkit.cli import _needs_torch, build_parser

    parser = build_parser()
    assert _needs_torch(parser.parse_args(["run", "smoke"]))
    assert not _needs_torch(parser.parse_args(["run", "smoke", "--dry-run"]))
