"""DEVELOPMENT.md's examples run as written and register parts that the harness then uses."""

import re
from pathlib import Path

import numpy as np
import pytest

from evalkit.errors import ConfigError
from evalkit.registry import ADAPTERS, EXTRACTORS, METRICS, SAMPLERS

DOC = Path(__file__).resolve().parents[1] / "DEVELOPMENT.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def clean_registries():
    """The examples' parts leave the registries as they found them (other tests list the names)."""
    yield
    for registry, name in (
        (SAMPLERS, "ddim_eta1"),
        (METRICS, "feature_norm"),
        (EXTRACTORS, "mean-colour"),
        (ADAPTERS, "grey"),
    ):
        registry._items.pop(name, None)


def test_each_example_registers_a_part_that_works(clean_registries):
    blocks = _blocks()
    assert len(blocks) == 4  # a sampler, a metric, an extractor, an adapter
    for code in blocks:
        assert len([line for line in code.splitlines() if line.strip()]) <= 10  # each in <= 10 lines
        exec(compile(code, str(DOC), "exec"), {})

    from evalkit.generate import GenerationRequest, build_adapter
    from evalkit.generate.samplers import model_calls_per_sample
    from evalkit.metrics.base import MetricInputs

    assert "ddim_eta1" in SAMPLERS.names()
    calls = model_calls_per_sample("ddim_eta1", 5, {"num_train_timesteps": 1000})
    assert calls == 5
    images = next(
        build_adapter("grey").generate(
            GenerationRequest(indices=np.arange(3), seed=0, sampler="ddim", steps=2, guidance=1.0, batch_size=2)
        )
    ).images
    assert images.shape == (2, 3, 8, 8) and int(images.float().mean()) == 128
    feats = EXTRACTORS.get("mean-colour")(device="cpu")(images)["features"]
    np.testing.assert_allclose(feats, 128.0)
    value = METRICS.get("feature_norm").compute(MetricInputs(gen={"features": feats})).values()
    assert next(iter(value)).value == pytest.approx(np.sqrt(3) * 128.0)

    with pytest.raises(ConfigError, match="registered twice"):  # one name, one part
        ADAPTERS.register("grey", lambda **kw: None)
