"""Third-party adapters: the ``evalkit.adapters`` entry point group and ``module:function`` callables.

The entry point test installs nothing: it writes a tiny distribution (a module plus a
``*.dist-info`` folder with ``entry_points.txt``) into tmp_path and puts that folder on sys.path,
which is all importlib.metadata needs to discover it, exactly as it discovers an installed package.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from evalkit.cli import main
from evalkit.generate import available_adapters, build_adapter
from evalkit.run.runner import Runner
from evalkit.suite import load_suite, parse_suite

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PLUGIN = '''
"""A third-party adapter package: constant-colour images whose shade is the class label."""
import numpy as np
import torch

from evalkit.generate import Adapter, GeneratedBatch
from evalkit.generate.adapter import batched


class Flat(Adapter):
    name = "flat"

    def __init__(self, device="cpu", size=8):
        self.size = size

    def info(self):
        return {"adapter": "flat", "size": self.size, "from": "evalkit_flat_plugin"}

    def expected_model_calls(self, sampler, steps, options):
        return steps

    def generate(self, request):
        for sl in batched(request.indices, request.batch_size):
            idx = request.indices[sl]
            shade = torch.as_tensor(request.labels[sl] * 25, dtype=torch.uint8).view(-1, 1, 1, 1)
            yield GeneratedBatch(shade.expand(len(idx), 3, self.size, self.size).contiguous(), np.asarray(idx),
                                 request.steps, request.steps)


def make(device="cpu", **options):
    return Flat(device=device, **options)
'''


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    (site / "evalkit_flat_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "evalkit_flat_plugin.py").write_text(PLUGIN)
    (site / "evalkit_flat_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: evalkit-flat-plugin\nVersion: 1.0\n"
    )
    (site / "evalkit_flat_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[evalkit.adapters]\nflat = evalkit_flat_plugin:make\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return site


SUITE = """\
name: plug
models: [{name: f, adapter: flat, options: {size: 12}}]
samplers: [ddim]
steps: [3]
guidance: [1]
samples: 10
batch_size: 4
conditions: {classes: 10}
metrics: [throughput]
grid_samples: 10
"""


def test_entry_point_adapter_is_found_validated_and_run(plugin_dist, tmp_path, capsys):
    assert "flat" in available_adapters()
    assert type(build_adapter("flat")).__name__ == "Flat"
    suite_file = tmp_path / "plug.yaml"
    suite_file.write_text(SUITE)
    suite = load_suite(suite_file)
    assert suite.models[0].adapter == "flat"
    out = tmp_path / "run"
    assert Runner(suite, out, device="cpu").run().exit_code == 0
    df = pd.read_parquet(out / "results.parquet")
    assert df.set_index("metric").loc[["model_calls", "nfe"], "value"].tolist() == [3, 3]
    assert (out / "cells" / "f__ddim__s3__g1" / "grid.png").is_file()
    assert main(["list", "adapters"]) == 0 and "flat" in capsys.readouterr().out


def test_unknown_adapter_lists_the_plugins(plugin_dist):
    from evalkit.suite import SuiteError

    raw = {
        "name": "x",
        "models": [{"adapter": "flta"}],
        "samplers": ["ddim"],
        "steps": [1],
        "samples": 1,
        "metrics": ["throughput"],
    }
    with pytest.raises(SuiteError, match=r"unknown adapter 'flta'; expected one of: .*flat.*'module:function'"):
        parse_suite(raw)


def test_example_adapter_suite_runs(tmp_path, monkeypatch):
    """examples/my_adapter.py through examples/my_adapter_suite.yaml, shrunk to one small cell."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    suite = load_suite(EXAMPLES / "my_adapter_suite.yaml")
    assert [m.adapter for m in suite.models] == ["my_adapter:make_adapter"] * 2
    small = textwrap.dedent("""\
        name: my_adapter_small
        models: [{name: mine, adapter: "my_adapter:make_adapter", options: {temperature: 0.9}}]
        samplers: [ddim]
        steps: [3]
        guidance: [3.0]
        samples: 20
        batch_size: 20
        conditions: {classes: 10}
        reference: {dataset: mnist-heldout, samples: 100}
        extractor: mnist-net
        metrics: [fd, class_acc, throughput]
    """)
    (tmp_path / "s.yaml").write_text(small)
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs: threads only add OpenMP spinning on a shared 2-core machine
    try:
        assert Runner(load_suite(tmp_path / "s.yaml"), out, device="cpu").run().exit_code == 0
    finally:
        torch.set_num_threads(threads)
    df = pd.read_parquet(out / "results.parquet").set_index("metric")["value"]
    assert df["model_calls"] == 3 and df["nfe"] == 6 and df["fd"] > 0
