"""Orchestration: plan and resume, the model cache and weights guard, per-cell work, distributed, timing."""
