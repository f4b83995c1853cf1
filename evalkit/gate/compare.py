"""Judging a run against a baseline: compatibility, paired bootstrap intervals and THE verdict.

Verdict rule (one cell × metric; ``worse`` is the delta signed so that positive means worse):

- tolerance ``tol = max(k_eff·σ·inflate, rel·|baseline|, abs)`` (:class:`~evalkit.gate.baseline.Tolerance`),
  ``k_eff`` the Student-t quantile of a z-score ``k`` with K−1 degrees of freedom (σ from K seed sets is
  itself uncertain);
  paired (same seed and N as the baseline): delta = now − baseline value, inflate = 1;
  unpaired (another seed set): delta = now − mean over the K seed sets, inflate = √(1 + 1/K) (one new
  draw against a K-draw mean: a prediction interval);
- regression: ``worse > tol`` AND, when paired, the paired bootstrap CI of the difference lies
  entirely on the worse side of 0; improvement: the same on the better side; otherwise pass.

So a regression must be larger than what seed noise alone produces (tolerance) *and*, where seeds are
shared, be confidently non-zero given the per-sample variation (CI). Improvements never fail.
:func:`judge` applies the rule to one entry and :func:`verdict` is the rule itself; ``evalkit check`` and
``evalkit report --baseline`` both go through them, so they cannot disagree on the same run and baseline.

Protocol: :func:`evalkit.suite.identity.protocol_hash` covers what defines the measurement but not the
model's adapter (that is what a check is for) and not the seed: a check on another seed set must be asked
for explicitly (``--seed``) because it loses pairing. This module reads run folders (:func:`evalkit.store.read_run`);
it never runs a suite (the CLI does).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.gate.baseline import (
    Baseline,
    BaselineEntry,
    CheckConfigError,
    metric_specs,
    quality_values,
)
from evalkit.gate.changes import Changes, what_changed
from evalkit.gate.integrity import check_lengths, integrity_problems
from evalkit.gate.schema import DEFAULT_RESAMPLES
from evalkit.gate.task_sources import reference_for, sources_problems, task_arm
from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.metrics.resampling import bootstrap_indices
from evalkit.store import RunData
from evalkit.study.paired import NO_CI_ERRORS, difference_interval, replicates, run_conditions
from evalkit.suite.identity import protocol_differences, protocol_hash
from evalkit.suite.tasks import region_keys

PASS, IMPROVED, REGRESSION, ERROR = "pass", "improved", "regression", "error"
Key = tuple[str, str, str]  # (cell, metric, extractor), BaselineEntry.key


@dataclass
class Comparison:
    entry: BaselineEntry
    now: float
    reference: float  # what ``now`` is compared with: the baseline value (paired) or mean (unpaired)
    delta: float
    tolerance: float
    ci: tuple[float, float] | None
    verdict: str
    note: str = ""
    k: float = 3.0  # the tolerance's k (z-score) used for this verdict


@dataclass
class CheckReport:
    baseline: Baseline
    run_root: Path
    paired: bool
    comparisons: list[Comparison]
    run_seed: int
    confidence: float = 0.95
    changes: Changes | None = None  # what changed besides the numbers (adapters, weights, versions): the header

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict in (REGRESSION, ERROR)]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


# -- the verdict ------------------------------------------------------------------------------------
def verdict(delta: float, tol: float, ci: tuple[float, float] | None = None, *, higher_is_better: bool) -> str:
    """The rule in the module docstring: beyond tolerance, and (if a paired CI is given) CI clear of zero."""
    if not math.isfinite(delta):
        return ERROR
    sign = 1.0 if higher_is_better else -1.0  # positive ``better`` = improvement
    better = sign * delta
    ci_better = None if ci is None else sorted((sign * ci[0], sign * ci[1]))
    if -better > tol and (ci_better is None or ci_better[1] < 0):
        return REGRESSION
    if better > tol and (ci_better is None or ci_better[0] > 0):
        return IMPROVED
    return PASS


def judge(
    entry: BaselineEntry, now: float, *, paired: bool, ci: tuple[float, float] | None = None, k: float | None = None
) -> Comparison:
    """One entry's comparison: reference point (value if paired, else the K-set mean), tolerance, verdict.

    ``k`` overrides the entry's tolerance k (``evalkit check --k``)."""
    reference = entry.value if paired else entry.mean
    rule = entry.tolerance if k is None else dataclasses.replace(entry.tolerance, k=k)
    tol = rule.width(entry.noise, reference, n_sets=entry.n_sets, paired=paired)
    delta = now - reference
    return Comparison(
        entry,
        now,
        reference,
        delta,
        tol,
        ci,
        verdict(delta, tol, ci, higher_is_better=entry.higher_is_better),
        k=rule.k,
    )


def is_paired(baseline: Baseline, seed: int, n: int) -> bool:
    """Same seed and N as the baseline: the same samples under the same conditions."""
    return int(seed) == baseline.seed and int(n) == baseline.n


# -- compatibility ----------------------------------------------------------------------------------
def compatibility_problems(baseline: Baseline, run: RunData, *, allow_other_seed: bool = False) -> list[str]:
    """Every reason the run cannot be judged against the baseline (empty list: it can)."""
    problems = integrity_problems(run)
    problems += config_problems(baseline, run.config, allow_other_seed=allow_other_seed)
    for ex, info in baseline.extractors.items():
        got = run.manifest.get("extractors", {}).get(ex)
        if got is not None and got.get("weights_id") != info.get("weights_id"):
            problems.append(f"extractor {ex}: weights {got.get('weights_id')} != baseline {info.get('weights_id')}")
        elif got is not None and got.get("mode") != info.get("mode"):
            problems.append(f"extractor {ex}: mode {got.get('mode')} != baseline {info.get('mode')}")
    ref_now, ref_base = run.manifest.get("reference") or {}, baseline.reference or {}
    if ref_now.get("fingerprint") and ref_base.get("fingerprint") and ref_now["fingerprint"] != ref_base["fingerprint"]:
        problems.append(f"reference {ref_now.get('name')}: data fingerprint differs from the baseline's")
    problems += sources_problems(baseline.sources, run)  # a task suite's source images, as the reference
    missing = sorted({e.cell for e in baseline.entries if run.status(e.cell) == "missing"})
    if missing:
        problems.append("cells missing from the run: " + ", ".join(missing))
    have = set(quality_values(run).index)
    lost = [
        f"{c}/{m}" for c, m, x in (e.key for e in baseline.entries) if run.status(c) == "done" and (c, m, x) not in have
    ]
    if lost:
        problems.append("metrics missing from the run: " + ", ".join(lost))
    return problems


def config_problems(baseline: Baseline, config: dict[str, Any], *, allow_other_seed: bool) -> list[str]:
    """What a suite config alone shows (protocol, seed): checked before spending minutes on a run."""
    problems = []
    if protocol_hash(config) != baseline.protocol_hash:
        problems.append(
            f"protocol hash {protocol_hash(config)} != baseline {baseline.protocol_hash} "
            "(the suite changed; re-make the baseline with `evalkit baseline`)"
        )
        problems += ["  " + d for d in protocol_differences(baseline.config, config)]
    if int(config["seed"]) != baseline.seed and not allow_other_seed:
        problems.append(
            f"seed {config['seed']} != baseline seed {baseline.seed} (pass --seed to check on a "
            "fresh seed set on purpose: the verdict is then unpaired)"
        )
    return problems


# -- paired bootstrap -------------------------------------------------------------------------------
def paired_intervals(
    baseline: Baseline,
    run: RunData,
    deltas: dict[Key, float],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> dict[Key, tuple[float, float]]:
    """Paired bootstrap CI of (now − baseline) per entry: the same resampled indices in both arms (the core is
    :mod:`evalkit.study.paired`, which the comparisons between cells share).

    Only valid when run and baseline share seed, N and conditions; the caller checks that. In a task suite both
    arms read the same sources (their fingerprint is checked, as the reference's): a metric compared with them gets
    the sources' features (the sidecar's, else the run's stored ones), masks and controls, never the reference;
    without features of the sources it gets no CI (:mod:`evalkit.gate.task_sources`).
    """
    if baseline.features() is None:
        return {}
    labels, prompts = run_conditions(run)
    idx = bootstrap_indices(run.n, n_resamples, seed=baseline.seed)
    specs = metric_specs(run.config)
    out: dict[Key, tuple[float, float]] = {}
    for cell in sorted({e.cell for e in baseline.entries}):
        old_all = baseline.cell_features(cell)
        if run.status(cell) != "done" or not old_all:
            continue
        new_all = run.features(cell)
        for (mdef, ex), opts in specs.items():
            todo = [  # a metric that failed in the run (NaN) has an error verdict already: no CI, no re-run of it
                e
                for e in baseline.entries
                if e.cell == cell and e.metric_def == mdef and e.extractor == ex and math.isfinite(deltas[e.key])
            ]
            if not todo or (defn := get_metric(mdef)).reads_train:  # a baseline keeps no training split: tolerance
                continue
            found = _arm_inputs(baseline, run, cell, defn, ex, opts)
            if found is None:  # compared with the sources (or their crops), and no features of them: tolerance only
                continue
            key, ref, task = found
            check_lengths(cell, {key: new_all.get(key, {})}, run.n, f"run {run.root}")
            check_lengths(cell, {key: old_all.get(key, {})}, baseline.n, f"baseline {baseline.path}")
            common = {"ref": ref, "labels": labels, "prompts": prompts, "seed": run.seed, "options": opts, **task}
            arms = [MetricInputs(gen=feats.get(key, {}), **common) for feats in (new_all, old_all)]
            try:
                reps_new, reps_old = (replicates(defn, a, idx) for a in arms)
            except NO_CI_ERRORS:
                continue  # no CI for this metric (e.g. too few distinct samples); the tolerance still judges
            for e in todo:
                out[e.key] = difference_interval(reps_new[e.metric], reps_old[e.metric], deltas[e.key], confidence)
    return out


def _arm_inputs(
    baseline: Baseline, run: RunData, cell: str, defn: Any, ex: str, opts: dict[str, Any]
) -> tuple[str, Any, dict[str, Any]] | None:
    """(the features key both arms read, their reference, the task fields) of one metric spec, whose rows carry
    extractor ``ex``; None where the sources' features it needs are not at hand. A spec on masked crops reads the
    ``<extractor>@masked`` features against the sources' crops (:func:`evalkit.suite.tasks.region_keys`)."""
    base, key, crop = region_keys(ex, opts, defn.reads_source)
    task = task_arm(run, defn, base, run.n, baseline.source_features(base), cell=cell)
    ref = baseline.source_features(key) if crop else reference_for(defn, run, baseline.reference_features(base))
    return None if task is None or (crop and ref is None) else (key, ref, task)


# -- the check --------------------------------------------------------------------------------------
def compare(
    baseline: Baseline,
    run: RunData,
    *,
    k: float | None = None,
    allow_other_seed: bool = False,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> CheckReport:
    """Judge ``run`` against ``baseline``; raises :class:`CheckConfigError` if they do not fit."""
    problems = compatibility_problems(baseline, run, allow_other_seed=allow_other_seed)
    if problems:
        raise CheckConfigError(problems)
    paired = is_paired(baseline, run.seed, run.n)
    now = quality_values(run)
    first = {
        e.key: judge(e, float(now[e.key]), paired=paired, k=k) for e in baseline.entries if run.status(e.cell) == "done"
    }
    cis = (
        paired_intervals(
            baseline, run, {key: c.delta for key, c in first.items()}, n_resamples=n_resamples, confidence=confidence
        )
        if paired
        else {}
    )
    comparisons = []
    for e in baseline.entries:
        if e.key not in first:
            comparisons.append(
                Comparison(
                    e,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    None,
                    ERROR,
                    f"cell failed: {run.error(e.cell)}",
                    e.tolerance.k if k is None else k,
                )
            )
        else:
            comparisons.append(judge(e, first[e.key].now, paired=paired, ci=cis.get(e.key), k=k))
    return CheckReport(
        baseline, run.root, paired, comparisons, run.seed, confidence, what_changed(baseline, run.manifest)
    )
