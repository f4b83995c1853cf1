"""What a check says: the markdown table (stdout, ``$GITHUB_STEP_SUMMARY``) and JUnit XML (CI test views).

Rendering only: every number shown comes from a :class:`~evalkit.gate.compare.CheckReport`. The header says
what changed besides the numbers (:mod:`evalkit.gate.changes`); the table states each metric's unit and shows
KID ×10³ on Inception features, its convention (JUnit keeps raw values); a delta and its CI are rounded on
one grid (:func:`on_one_grid`), so the CI shown contains the delta shown whenever the computed one does.

Every name printed into markdown (cell ids, model/sampler/metric names, notes, paths, problems) goes through
:func:`md_text` or :func:`md_code`, so a name cannot break the table or put HTML into ``$GITHUB_STEP_SUMMARY``;
JUnit text is stripped of the characters XML 1.0 cannot hold.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from evalkit.errors import ConfigError
from evalkit.gate.baseline import effective_k
from evalkit.gate.compare import ERROR, IMPROVED, REGRESSION, CheckReport, Comparison

# -- escaping -----------------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")  # newlines and other control characters
_MD_ESCAPES = {"\\": "\\\\", "`": "\\`", "|": "\\|", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_CODE_SPAN = str.maketrans({"`": "'", "|": "¦", "<": "‹", ">": "›"})
_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def md_text(value: object) -> str:
    """``value`` as literal text in markdown (a table cell included): one line, no HTML, no code spans, no links.

    Control characters (newlines included) become a space; ``&``, ``<``, ``>`` become entities; backslash,
    backtick and ``|`` are backslash-escaped; ``](`` becomes ``]\\(`` so no link or image is formed. Plain
    names (``mnist__ddim__s8__g3``, ``fd``) come out as they are."""
    text = "".join(_MD_ESCAPES.get(ch, ch) for ch in _CONTROL.sub(" ", str(value)))
    return text.replace("](", "]\\(")


def md_code(value: object) -> str:
    """``value`` as an inline code span: one line, and nothing that could end the span or be read as HTML or a
    table cell by a renderer less careful than CommonMark — backticks become ``'``, ``|`` ``¦``, ``< >`` ``‹ ›``."""
    text = _CONTROL.sub(" ", str(value)).translate(_CODE_SPAN)
    return f"`{text}`"


def _xml_text(value: object) -> str:
    """Characters XML 1.0 cannot hold (NUL, most control characters) replaced: a name cannot void the report."""
    return _XML_BAD.sub("\ufffd", str(value))


# -- units and numbers ---------------------------------------------------------------------------------
# Result row → unit. Only the human display scales, and only where a convention exists: KID ×10³ on Inception
# features (clean-fid, StyleGAN-ADA papers); on other extractors (mnist-net's KID is ~10³ already) it is raw.
# The JSON, JUnit and results files always hold raw values. Rows not listed are shown as computed.
UNITS: dict[str, str] = {
    "fd": "unitless",
    "fd_inf": "unitless",
    "kid": "unitless",
    "cmmd": "×10³ (as computed)",
    "is": "unitless",
    "clip_score": "100·cosine",
    "precision": "fraction",
    "recall": "fraction",
    "coverage": "fraction",
    "density": "ratio",
    "lpips_diversity": "LPIPS distance",
    "lpips_paired": "LPIPS distance",
    "psnr": "dB",
    "ssim": "unitless",
    "ms_ssim": "unitless",
    "vendi": "effective samples",
    "vendi_within": "effective samples",
    "aesthetic": "LAION aesthetic scale (1–10)",
    "hpsv2": "cosine",
    "image_reward": "standardised reward",
    "pick_score": "100·cosine (logit scale)",
    "images_per_s": "images/s",
    "s_per_image": "s",
    "ms_per_model_call": "ms",
    "peak_mem_mb": "MB",
    "nfe": "count",
    "model_calls": "count",
}
SCALED = {"kid": (1e3, "×10³", "inception")}  # row → (scale, unit, extractors it applies to: name prefix)
MAX_DIGITS = 7  # significant digits at most: a spread finer than that is float rounding, not a result


def unit(metric: str, extractor: str = "") -> tuple[float, str]:
    """(display scale, unit text) of a result row on an extractor."""
    if metric in SCALED and extractor.startswith(SCALED[metric][2]):
        return SCALED[metric][:2]
    return 1.0, UNITS.get(metric, "as computed")


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def on_one_grid(values: list[float | None], *, sig: int = 3, spread: float = 0.0, sign: bool = True) -> list[str]:
    """``values`` rounded to ONE quantum and written alike, so that their order survives the display.

    Rounding every value to the same grid is monotone: a CI that contains its delta still visibly does, and a
    delta is never shown as ``+0`` beside a CI of ``+1.5e-05``. The grid resolves the largest value to ``sig``
    significant digits and ``spread`` (a CI's width, now − baseline) to two where that takes at most
    :data:`MAX_DIGITS` significant digits (a finer spread is float rounding and is left unresolved).
    Plain decimals for magnitudes 1e-4 .. 1e6, else one shared exponent (``+0.03e-05`` beside ``+1.50e-05``);
    an exact zero is ``+0``, a value that is not finite ``–``."""
    mags = [abs(v) for v in values if _finite(v) and v != 0]
    plus = "+" if sign else ""
    if not mags:
        return [f"{plus}0" if _finite(v) else "–" for v in values]
    top = math.floor(math.log10(max(mags)))
    step = top - sig + 1  # exponent of the grid's quantum
    if _finite(spread) and spread > 0 and (needed := math.floor(math.log10(spread) + 1e-9) - 1) > top - MAX_DIGITS:
        step = min(step, needed)  # a spread below MAX_DIGITS is float rounding: not worth the digits
    if -4 <= top < 6:
        shown = [format(v, f"{plus}.{max(0, -step)}f") if _finite(v) else "–" for v in values]
    else:
        shown = [f"{format(v / 10.0**top, f'{plus}.{top - step}f')}e{top:+03d}" if _finite(v) else "–" for v in values]
    return [f"{plus}0" if _finite(v) and v == 0 else text for v, text in zip(values, shown)]


def comparison_numbers(c: Comparison, *, scale: float = 1.0, sig: int = 3) -> dict[str, str]:
    """baseline, now, delta, tolerance and paired CI of one comparison as shown: ×``scale``; baseline and now on
    one grid, delta and CI on another (``ci`` is ``–`` when there is none)."""
    ref, now, delta, tol = (x * scale if _finite(x) else x for x in (c.reference, c.now, c.delta, c.tolerance))
    ci = [x * scale if _finite(x) else x for x in c.ci] if c.ci else []
    before, after = on_one_grid([ref, now], sig=sig + 1, spread=abs(delta) if _finite(delta) else 0.0, sign=False)
    width = ci[1] - ci[0] if ci and _finite(ci[0]) and _finite(ci[1]) else 0.0
    d, *bounds = on_one_grid([delta, *ci], sig=sig, spread=abs(width))
    return {
        "baseline": before,
        "now": after,
        "delta": d,
        "tolerance": on_one_grid([tol], sig=sig, sign=False)[0],
        "ci": f"[{bounds[0]}, {bounds[1]}]" if bounds else "–",
    }


def changes_text(report: CheckReport) -> str | None:
    """What changed besides the numbers (adapters, options, weights, extractors, versions), or None when the
    report was made without it (:func:`evalkit.gate.changes.what_changed`)."""
    changes = getattr(report, "changes", None)
    return None if changes is None else changes.summary()


# -- the check table ----------------------------------------------------------------------------------
_SHOWN = {REGRESSION: "**REGRESSION**", IMPROVED: "improved", ERROR: "**ERROR**"}


def _units_note(report: CheckReport) -> str:
    entries = {(c.entry.metric, c.entry.extractor) for c in report.comparisons}
    scaled = sorted({(m, unit(m, ex)[1], SCALED[m][2]) for m, ex in entries if unit(m, ex)[0] != 1.0})
    raw = sorted({m for m, ex in entries if m in SCALED and unit(m, ex)[0] == 1.0})
    note = "Values in each metric's unit (unit column)"
    if scaled:
        shown = ", ".join(f"{md_text(m)} {u} on {md_text(ex)} features" for m, u, ex in scaled)
        note += f"; shown scaled: {shown} (the usual convention); JSON, JUnit and results files hold raw values"
    if raw:
        note += "; " + ", ".join(
            f"{md_text(m)} shown raw ({SCALED[m][1]} is the convention on {SCALED[m][2]} features only)" for m in raw
        )
    return note + "."


def markdown_report(report: CheckReport) -> str:
    """A heading, provenance, what changed besides the numbers, and the table (cell, metric, unit, baseline, ...)."""
    b, regress = report.baseline, report.regressions
    improved = sum(c.verdict == IMPROVED for c in report.comparisons)
    state = "FAIL" if regress else "PASS"
    mode = (
        f"paired on common seeds (seed {report.run_seed}); CI: {report.confidence:.0%} paired bootstrap"
        if report.paired
        else f"unpaired (run seed {report.run_seed} ≠ baseline seed {b.seed}): "
        f"compared with the mean over {len(b.seeds)} seed sets"
    )
    seeds = f"{b.seeds[0]}..{b.seeds[-1]}" if len(b.seeds) > 1 else str(b.seeds[0])
    ks = sorted({c.k for c in report.comparisons})
    k_text = ", ".join(f"k={k:g} → k_eff={effective_k(k, len(b.seeds)):.2f}" for k in ks)
    changed = changes_text(report)
    lines = [
        f"### evalkit check {md_code(b.suite)}: {state} ({len(regress)} regressions, {improved} improvements, "
        f"{len(report.comparisons)} checked)",
        "",
        f"baseline {md_code(b.path)} (N={b.n}, noise σ over {len(b.seeds)} seed sets {seeds}, protocol "
        f"{md_text(b.protocol_hash)}) · run {md_code(report.run_root)} · {mode} · {k_text}",
        "",
        *([f"**changed since the baseline:** {md_text(changed)}", ""] if changed is not None else []),
        _units_note(report),
        "",
        "| cell | metric | unit | baseline | now | delta | tolerance | paired CI | verdict |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for c in report.comparisons:
        e = c.entry
        scale, unit_text = unit(e.metric, e.extractor)
        n = comparison_numbers(c, scale=scale)
        shown = _SHOWN.get(c.verdict, md_text(c.verdict)) + (f" ({md_text(c.note)})" if c.note else "")
        lines.append(
            f"| {md_text(e.cell)} | {md_text(e.metric)} {'↑' if e.higher_is_better else '↓'} | {md_text(unit_text)} "
            f"| {n['baseline']} | {n['now']} | {n['delta']} | {n['tolerance']} | {n['ci']} | {shown} |"
        )
    lines += [
        "",
        "tolerance = max(k_eff·σ·inflate, rel·|baseline|, abs), σ = the seed-set σ (or, for precision "
        "and density, their sampling σ where larger), k_eff = Student-t quantile with K−1 df at "
        "the tail of a z-score k; a regression is worse than the tolerance and, when paired, has its CI "
        "entirely on the worse side of 0. ↓ lower is better, ↑ higher.",
    ]
    return "\n".join(lines) + "\n"


def _junit_text(c: Comparison) -> str:
    """One comparison in raw (unscaled) values, delta and CI on one grid."""
    e = c.entry
    scale, unit_text = unit(e.metric, e.extractor)
    raw = unit_text if scale == 1.0 else f"raw values; the markdown table shows them {unit_text}"
    n = comparison_numbers(c, sig=4)
    return (
        f"{e.metric} ({'higher' if e.higher_is_better else 'lower'} is better; {raw}): baseline {n['baseline']}, "
        f"now {n['now']}, delta {n['delta']}, tolerance {n['tolerance']}" + (f", paired CI {n['ci']}" if c.ci else "")
    )


def junit_xml(report: CheckReport, *, seconds: float = 0.0) -> str:
    """One testcase per cell × metric; regressions are <failure> (with what changed), failed cells <error>."""
    suite = ET.Element(
        "testsuite",
        name=f"evalkit.gate.compare.{report.baseline.suite}",
        tests=str(len(report.comparisons)),
        failures=str(sum(c.verdict == REGRESSION for c in report.comparisons)),
        errors=str(sum(c.verdict == ERROR for c in report.comparisons)),
        skipped="0",
        time=f"{seconds:.3f}",
    )
    changed = changes_text(report)
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("baseline", report.baseline.path),
        ("protocol_hash", report.baseline.protocol_hash),
        ("paired", report.paired),
        ("run", report.run_root),
        *([("changed_since_baseline", changed)] if changed is not None else []),
    ):
        ET.SubElement(props, "property", name=name, value=str(value))
    for c in report.comparisons:
        e = c.entry
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"evalkit.{report.baseline.suite}.{e.cell}",
            name=f"{e.metric}[{e.extractor}]",
            time="0",
        )
        text = _junit_text(c)
        if c.verdict == REGRESSION:
            detail = text + (f"\nchanged since the baseline: {changed}" if changed is not None else "")
            ET.SubElement(case, "failure", message=f"regression: {text}", type="regression").text = detail
        elif c.verdict == ERROR:
            ET.SubElement(case, "error", message=c.note or "error", type="error").text = c.note
        else:
            ET.SubElement(case, "system-out").text = f"{c.verdict}: {text}"
    root = ET.Element("testsuites", name="evalkit check")
    root.append(suite)
    ET.indent(root)
    return _xml_text(ET.tostring(root, encoding="unicode", xml_declaration=True)) + "\n"


def junit_config_error(problems: list[str], baseline: str | Path) -> str:
    """JUnit for a check that judged nothing: one errored testcase listing every problem (CI shows why)."""
    suite = ET.Element("testsuite", name="evalkit.gate.compare", tests="1", failures="0", errors="1", skipped="0")
    case = ET.SubElement(suite, "testcase", classname="evalkit.gate.compare", name="configuration")
    ET.SubElement(case, "error", message=f"cannot check against {baseline}", type="config").text = "\n".join(problems)
    root = ET.Element("testsuites", name="evalkit check")
    root.append(suite)
    return _xml_text(ET.tostring(root, encoding="unicode", xml_declaration=True)) + "\n"


def config_error_markdown(problems: list[str], baseline: str | Path) -> str:
    """The exit-2 message: every reason the run cannot be judged, one bullet each."""
    return (
        f"### evalkit check: configuration error\n\ncannot judge this run against {md_code(baseline)}:\n\n"
        + "\n".join(f"- {md_text(p.strip())}" for p in problems)
        + "\n"
    )


def publish(
    markdown: str,
    *,
    junit: str | None = None,
    junit_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
) -> None:
    """Write the JUnit/markdown files asked for and append to ``$GITHUB_STEP_SUMMARY`` when set; a file that
    cannot be written is a :class:`ConfigError` (exit 2, one line; ``evalkit check`` probes them first)."""
    outputs = [("--junit", junit_path, junit, "w"), ("--markdown", markdown_path, markdown, "w")]
    outputs.append(("GITHUB_STEP_SUMMARY", os.environ.get("GITHUB_STEP_SUMMARY"), markdown + "\n", "a"))
    for flag, path, text, mode in outputs:
        if not path or text is None:
            continue
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, mode, encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise ConfigError(f"{flag} {path}: cannot be written ({e.strerror or e})") from None
