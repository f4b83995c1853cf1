"""Safe loading, no escape from the run folder, no network (issues 7, 15).

The loading scan reads evalkit's source; that no library evalkit hands a weights file to unpickles it is
checked at run time, extractor by extractor, in tests/features/test_no_pickle.py.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import evalkit
from evalkit.cli import main
from evalkit.features.weights import WeightsUntrustedError, resolve_weights
from evalkit.store import RunStore

PACKAGE = Path(evalkit.__file__).parent

# -- no unsafe deserialisation or code evaluation in evalkit's source ---------------------------------------

_PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
# Library parameters whose file the library unpickles (torch.load with weights_only=False or its default):
# torch-fidelity / torchmetrics ``feature_extractor_weights_path``, lpips ``LPIPS(model_path=)``.
# evalkit reads such files itself (evalkit.features.safe_load) and hands the libraries tensors; the libraries'
# own paths are exercised at run time by tests/features/test_no_pickle.py (this scan sees evalkit's source only).
_UNPICKLING_KWARGS = ("feature_extractor_weights_path", "model_path")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _safe_loader_classes(tree: ast.AST) -> set[str]:
    """PyYAML's safe loaders and the classes the module derives from them (e.g. a stricter SafeLoader)."""
    safe = {"SafeLoader", "CSafeLoader"}
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    grew = True
    while grew:
        new = {c.name for c in classes if any(_dotted(b).split(".")[-1] in safe for b in c.bases)} - safe
        safe |= new
        grew = bool(new)
    return safe


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Every call in ``source`` that could run code from a file: pickle-family loads, torch.load without
    weights_only=True, yaml.load without a SafeLoader, allow_pickle=True, eval/exec/compile of text."""
    found = []
    tree = ast.parse(source, filename)
    safe_loaders = _safe_loader_classes(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] in _PICKLE_MODULES - {"joblib"} for m in mods):
                found.append(f"{filename}:{node.lineno}: imports a pickle-family module")
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}: {name}("
        head, _, last = name.rpartition(".")
        if name in ("eval", "exec", "builtins.eval", "builtins.exec", "compile", "__import__"):
            found.append(where + " evaluates code")
        elif (
            (head.split(".")[0] in _PICKLE_MODULES and last.startswith("load"))
            or name.endswith("read_pickle")
            or name in ("torch.serialization.load",)
        ):
            found.append(where + " unpickles")
        elif name == "torch.load" and not _is_true(_kw(node, "weights_only")):
            found.append(where + " without weights_only=True")
        elif head in ("yaml", "ruamel.yaml") and last in (
            "load",
            "load_all",
            "unsafe_load",
            "full_load",
            "unsafe_load_all",
            "full_load_all",
        ):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if last not in ("load", "load_all") or loader is None or _dotted(loader).split(".")[-1] not in safe_loaders:
                found.append(where + " without SafeLoader")
        elif last in ("load_state_dict_from_url", "load_url") and not _is_true(_kw(node, "weights_only")):
            found.append(where + " unpickles a downloaded or cached file (torch.hub's default weights_only=False)")
        elif name in ("torch.hub.load", "hub.load") or last == "load_openai_model":
            found.append(where + " runs a library loader that executes or unpickles a file")
        if _is_true(_kw(node, "allow_pickle")):
            found.append(where + " with allow_pickle=True")
        if _is_true(_kw(node, "trust_remote_code")):
            found.append(where + " with trust_remote_code=True")
        for lib_kw in _UNPICKLING_KWARGS:
            value = _kw(node, lib_kw)
            if value is not None and not (isinstance(value, ast.Constant) and value.value is None):
                found.append(where + f" hands a file to a library that unpickles it ({lib_kw}=)")
    return found


def test_the_checker_catches_each_unsafe_pattern():
    bad = {
        "torch.load(p)": 1,
        "torch.load(p, weights_only=False)": 1,
        "torch.load(p, map_location='cpu')": 1,
        "pickle.load(f)": 1,
        "pickle.loads(b)": 1,
        "import pickle": 1,
        "from dill import loads": 1,
        "joblib.load(p)": 1,
        "pd.read_pickle(p)": 1,
        "eval(s)": 1,
        "exec(s)": 1,
        "compile(s, 'f', 'exec')": 1,
        "yaml.load(s)": 1,
        "yaml.load(s, Loader=yaml.Loader)": 1,
        "yaml.unsafe_load(s)": 1,
        "yaml.full_load(s)": 1,
        "class Mine(yaml.Loader): pass\nyaml.load(s, Loader=Mine)": 1,
        "np.load(p, allow_pickle=True)": 1,
        "fe.FeatureExtractorInceptionV3('inception-v3-compat', ['2048'], feature_extractor_weights_path=p)": 1,
        "FrechetInceptionDistance(feature_extractor_weights_path=str(p))": 1,
        "lpips.LPIPS(net='alex', model_path=p)": 1,
        "torch.hub.load_state_dict_from_url(url)": 1,
        "fe.load_state_dict_from_url(url, progress=True)": 1,
        "model_zoo.load_url(url)": 1,
        "torch.hub.load('repo', 'model')": 1,
        "open_clip.load_openai_model(p)": 1,
        "DiffusionPipeline.from_pretrained(p, trust_remote_code=True)": 1,
    }
    for src, n in bad.items():
        assert len(unsafe_calls(src)) == n, src
    good = [
        "torch.load(p, map_location='cpu', weights_only=True)",
        "yaml.safe_load(s)",
        "model.eval()",
        "yaml.load(s, Loader=yaml.SafeLoader)",
        "class Strict(yaml.SafeLoader): pass\nyaml.load(s, Loader=Strict)",
        "np.load(p, allow_pickle=False)",
        "np.load(p)",
        "safetensors.torch.load_file(p)",
        "json.loads(s)",
        "torch.hub.load_state_dict_from_url(url, weights_only=True)",
        "fe.FeatureExtractorInceptionV3('inception-v3-compat', ['2048'], feature_extractor_weights_path=None)",
        "torch.hub.download_url_to_file(url, dst, hash_prefix=h)",
        "DiffusionPipeline.from_pretrained(p)",
    ]
    for src in good:
        assert unsafe_calls(src) == [], src


def test_evalkit_source_has_no_unsafe_loading_or_eval():
    """evalkit's own calls only: a file handed to a library is checked where the library parameter is known to
    unpickle (``_UNPICKLING_KWARGS``); what the libraries do with it at run time is tests/features/test_no_pickle.py."""
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30
    found = [hit for f in files for hit in unsafe_calls(f.read_text(), str(f.relative_to(PACKAGE.parent)))]
    assert found == [], "unsafe deserialisation / eval in evalkit:\n" + "\n".join(found)


def test_suite_yaml_cannot_construct_python_objects(tmp_path, capsys):
    p = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    p.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["run", str(p), "--out", str(tmp_path / "run")]) == 2
    assert not marker.exists()
    assert "could not determine a constructor" in capsys.readouterr().err


# -- untrusted weight files are not loaded from shared search folders ---------------------------------------


def test_weights_found_implicitly_must_be_trustworthy(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_WEIGHTS_DIR", str(tmp_path))
    planted = tmp_path / "inception-2015-12-05.pt"  # inception-clean: no published hash to check against
    planted.write_bytes(b"not really a network")
    planted.chmod(0o644)
    assert resolve_weights("inception-clean").path == planted
    planted.chmod(0o666)  # anyone could have replaced it
    with pytest.raises(WeightsUntrustedError, match="writable by every user"):
        resolve_weights("inception-clean")
    planted.chmod(0o644)
    if os.getuid() == 0:  # only root can hand a file to another user
        os.chown(planted, 4242, 4242)
        with pytest.raises(WeightsUntrustedError, match="owned by another user"):
            resolve_weights("inception-clean")
    # an explicit path is the user's own choice
    assert resolve_weights("inception-clean", explicit=planted).path == planted


# -- names cannot escape the output folder -------------------------------------------------------------------


def _snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


ESCAPE_SUITE = """\
name: {name}
models:
  - {{name: "../../../x", adapter: noise}}
  - {{name: "/tmp/abs", adapter: noise}}
samplers: [ddim, {{name: euler, label: "../../y/.."}}]
steps: [2]
samples: 6
batch_size: 6
conditions: {{classes: 10}}
reference: {{dataset: mnist-heldout, samples: 60, name: "../../../../refname"}}
extractor: mnist-net
metrics: [fd]
grid_samples: 4
"""


def test_names_cannot_write_outside_the_run_folder(tmp_path, monkeypatch, capsys):
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    cache = tmp_path / "cache"
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(cache))
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)

    evil = work / "evil.yaml"
    evil.write_text(ESCAPE_SUITE.format(name='"../../evil"'))
    assert main(["run", str(evil), "-q"]) == 2  # the default folder would be runs/../../evil
    assert "plain suite name" in capsys.readouterr().err
    assert _snapshot(tmp_path) - before == {evil}

    ok = work / "ok.yaml"
    ok.write_text(ESCAPE_SUITE.format(name="ok"))
    assert main(["run", str(ok), "-q"]) == 0  # default --out: runs/ok
    run = work / "runs" / "ok"
    new = _snapshot(tmp_path) - before - {evil, ok}
    outside = sorted(
        str(p) for p in new if not (p.is_relative_to(run) or p.is_relative_to(cache)) and p not in (work / "runs",)
    )
    assert outside == [], f"written outside the run folder: {outside}"
    cells = sorted(p.name for p in (run / "cells").iterdir())
    assert len(cells) == 4 and all("/" not in c and not c.startswith(".") for c in cells)
    store = RunStore(run)
    assert {r["cell_id"] for r in store.iter_cells()} == {
        c.cell_id for c in __import__("evalkit.suite", fromlist=["load_suite"]).load_suite(ok).cells()
    }
    assert all(p.resolve().is_relative_to(cache.resolve()) for p in cache.rglob("*"))


# -- no network unless a command asks for a download ----------------------------------------------------------

SITECUSTOMIZE = """\
import os, socket

_LOG = os.environ["EVALKIT_TEST_NET_LOG"]


def _blocked(what, detail):
    with open(_LOG, "a") as f:
        f.write(f"{what} {detail!r}\\n")
    raise OSError(f"network blocked by the test ({what} {detail!r})")


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _blocked("connect", address)
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _blocked("connect_ex", address)
    return _connect_ex(self, address)


socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo = lambda *a, **k: _blocked("getaddrinfo", a[:2])
socket.gethostbyname = lambda *a, **k: _blocked("gethostbyname", a)
socket.create_connection = lambda address, *a, **k: _blocked("create_connection", address)
"""


@pytest.mark.slow
def test_smoke_suite_runs_with_the_network_blocked(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        EVALKIT_TEST_NET_LOG=str(log),
        EVALKIT_CACHE_DIR=str(tmp_path / "cache"),
        OMP_NUM_THREADS="1",
        HOME=str(tmp_path / "home"),
    )

    # the guard works: a connection attempt is refused and recorded
    probe = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('example.org', 80))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode != 0 and "network blocked" in probe.stderr
    assert "example.org" in log.read_text()
    log.unlink()

    # the embedded smoke suite (every sampler, guidance and metric) with fewer samples and one step count
    smoke = yaml.safe_load((PACKAGE / "suites" / "smoke.yaml").read_text())
    smoke.update(samples=10, batch_size=10, grid_samples=10, steps=smoke["steps"][:1])
    suite = tmp_path / "smoke_small.yaml"
    suite.write_text(yaml.safe_dump(smoke))
    res = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", str(suite), "--out", str(tmp_path / "run"), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "8 cells computed, 0 reused, 0 failed" in res.stdout
    assert not log.exists(), f"network access attempted:\n{log.read_text()}"
