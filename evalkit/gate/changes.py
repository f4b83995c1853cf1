"""What changed between a baseline and a run, besides the numbers: adapters, options, weights, extractors, versions.

A regression next to "model mnist: options {ema: true} → {ema: false}; torch 2.5.1 → 2.6.0" tells the pull
request's author where to look. The protocol hash leaves the model's adapter and options out on purpose (they
are what a check judges), so they can differ; the extractors cannot (a check refuses those), but are listed
for completeness. Only differences are listed. :func:`versions_of` is also what ``evalkit baseline`` records,
so old baseline files (without ``versions``) stay readable: for them only evalkit's version is compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

FIRST = ("evalkit", "torch", "diffusers", "numpy")  # listed first; the rest alphabetically
_HEX = re.compile(r"(sha256:)?[0-9a-f]{16,}(\+dirty)?")
ABSENT = "(none)"


class Recorded(Protocol):
    """What a baseline recorded that is compared here (:class:`evalkit.gate.baseline.Baseline` has it; the
    baseline module imports this one, so it is named by its shape)."""

    config: dict[str, Any]
    models: dict[str, Any]
    extractors: dict[str, Any]
    versions: dict[str, str] | None
    evalkit_version: str


@dataclass
class Changes:
    """The differences, ready to print: ``items`` (adapters, options, weights, extractors, package versions),
    ``code`` (the git commit, which differs on nearly every pull request) and what the baseline did not record."""

    items: list[str] = field(default_factory=list)
    code: str | None = None
    unrecorded: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: the differences, or 'nothing changed in ...' naming what was compared."""
        if self.items:
            text = "; ".join(self.items)
        else:
            weights = not any(u.startswith("weights") for u in self.unrecorded)
            scope = ["adapters", "options", *(["weights"] if weights else []), "extractors"]
            scope += [] if "package versions" in self.unrecorded else ["package versions"]
            text = "nothing changed in " + ", ".join(scope[:-1]) + " or " + scope[-1]
        if self.code:
            text += f"; code: {self.code}"
        if self.unrecorded:
            text += (
                f" (not recorded in the baseline, so not compared: {', '.join(self.unrecorded)};"
                " re-make it with evalkit baseline to record them)"
            )
        return text


def short(value: Any) -> str:
    """A value as a PR author reads it: YAML-like, hashes cut to 12 hex digits, long text cut."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(short(v) for v in value) + "]"
    text = str(value)
    if m := _HEX.fullmatch(text):
        digits = text[len(m.group(1) or "") :].removesuffix("+dirty")
        return (m.group(1) or "") + digits[:12] + ("…" if len(digits) > 12 else "") + (m.group(2) or "")
    return text if len(text) <= 60 else text[:59] + "…"


def _differing(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ (a key on one side only included), in the order they first appear."""
    return [k for k in dict.fromkeys([*old, *new]) if old.get(k, ABSENT) != new.get(k, ABSENT)]


def _value_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """'key old → new' per differing key; mappings on both sides are compared key by key (weights per file)."""
    out = []
    for k in _differing(old, new):
        a, b = old.get(k, ABSENT), new.get(k, ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _value_changes(a, b, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k} {short(a)} → {short(b)}")
    return out


def _model_changes(name: str, base: dict[str, Any], now: dict[str, Any], base_info: Any, run_info: Any) -> Changes:
    """One model's adapter and options (the suite's) and weights identity (the adapter's ``info()``)."""
    parts, unrecorded = [], []
    if base.get("adapter") != now.get("adapter"):
        parts.append(f"adapter {short(base.get('adapter'))} → {short(now.get('adapter'))}")
    old_opts, new_opts = base.get("options") or {}, now.get("options") or {}
    keys = _differing(old_opts, new_opts)
    if keys:
        old = {k: old_opts[k] for k in keys if k in old_opts}
        new = {k: new_opts[k] for k in keys if k in new_opts}
        parts.append(f"options {short(old)} → {short(new)}")
    if isinstance(base_info, dict) and isinstance(run_info, dict):
        repeated = {k for k in keys if base_info.get(k) == old_opts.get(k) and run_info.get(k) == new_opts.get(k)}
        drop = {"adapter", *repeated}  # said above already
        parts += _value_changes(
            {k: v for k, v in base_info.items() if k not in drop}, {k: v for k, v in run_info.items() if k not in drop}
        )
    elif isinstance(run_info, dict):
        unrecorded.append(f"weights of model {name}")
    return Changes([f"model {name}: " + ", ".join(parts)] if parts else [], None, unrecorded)


def device_kind(described: str) -> str:
    """'cpu (x86_64, 2 threads)' → 'cpu' (thread counts differ between CI machines); GPUs keep their name."""
    return "cpu" if described.startswith("cpu") else described


def versions_of(manifest: dict[str, Any]) -> dict[str, str]:
    """Package versions, python, device and git commit as run.json records them (flat, for the baseline)."""
    env = manifest.get("environment") or {}
    out = {str(k): str(v) for k, v in (env.get("packages") or {}).items()}
    for key, value in (("evalkit", manifest.get("evalkit_version")), ("torch", env.get("torch"))):
        if value and key not in out:
            out[key] = str(value)
    if env.get("python"):
        out["python"] = str(env["python"])
    if env.get("device"):
        out["device"] = device_kind(str(env["device"]))
    if manifest.get("git_commit"):
        out["git commit"] = str(manifest["git_commit"])
    return out


def _version_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """'torch 2.5.1 → 2.6.0' per differing package (and python, device); the git commit is :attr:`Changes.code`."""
    names = sorted(
        (k for k in _differing(old, new) if k != "git commit"),
        key=lambda k: (FIRST.index(k) if k in FIRST else len(FIRST), k),
    )
    return [f"{k} {short(old.get(k, ABSENT))} → {short(new.get(k, ABSENT))}" for k in names]


def what_changed(baseline: Recorded, manifest: dict[str, Any]) -> Changes:
    """Everything that differs between the baseline and the run of ``manifest`` (run.json), apart from numbers."""
    out = Changes()
    base_models = {m.get("name"): m for m in baseline.config.get("models") or [] if isinstance(m, dict)}
    now_models = {m.get("name"): m for m in (manifest.get("config") or {}).get("models") or [] if isinstance(m, dict)}
    infos = manifest.get("models") or {}
    for name in dict.fromkeys([*base_models, *now_models]):
        if name not in now_models or name not in base_models:
            out.items.append(f"model {name}: {'not in the run' if name in base_models else 'not in the baseline'}")
            continue
        one = _model_changes(str(name), base_models[name], now_models[name], baseline.models.get(name), infos.get(name))
        out.items += one.items
        out.unrecorded += one.unrecorded
    now_ex = manifest.get("extractors") or {}
    for ex in dict.fromkeys([*baseline.extractors, *now_ex]):
        if ex not in now_ex or ex not in baseline.extractors:
            out.items.append(
                f"extractor {ex}: {'not in the run' if ex in baseline.extractors else 'not in the baseline'}"
            )
        elif diff := _value_changes(baseline.extractors[ex] or {}, now_ex[ex] or {}):
            out.items.append(f"extractor {ex}: " + ", ".join(diff))
    now_versions = versions_of(manifest)
    if baseline.versions:
        out.items += _version_changes(baseline.versions, now_versions)
        old_commit, new_commit = baseline.versions.get("git commit"), now_versions.get("git commit")
        if old_commit != new_commit:
            out.code = f"git commit {short(old_commit)} → {short(new_commit)}"
    else:
        now_evalkit = now_versions.get("evalkit")
        if now_evalkit and now_evalkit != baseline.evalkit_version:
            out.items.append(f"evalkit {short(baseline.evalkit_version)} → {short(now_evalkit)}")
        out.unrecorded.append("package versions")
    return out
