"""Suites: typed specs, loading, validation (the only validator), identity hashes, conditions, prompts.

``suite`` knows no adapter or network: names are checked against :mod:`evalkit.registry`.
"""

from evalkit.suite.conditions import Conditions, expand_conditions
from evalkit.suite.load import embedded_suites, load_suite, resolve_suite_path
from evalkit.suite.spec import THROUGHPUT, Cell, MetricSpec, ModelSpec, SamplerSpec, Suite, TimingSpec
from evalkit.suite.validate import LIMITS, SuiteError, parse_suite

__all__ = [
    "LIMITS",
    "THROUGHPUT",
    "Cell",
    "Conditions",
    "MetricSpec",
    "ModelSpec",
    "SamplerSpec",
    "Suite",
    "SuiteError",
    "TimingSpec",
    "embedded_suites",
    "expand_conditions",
    "load_suite",
    "parse_suite",
    "resolve_suite_path",
]
