"""evalkit: evaluation and benchmarking harness for diffusion image models."""

__version__ = "0.1.0"
