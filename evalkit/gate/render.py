"""What a check says: the markdown table (stdout, ``$GITHUB_STEP_SUMMARY``) and JUnit XML (CI test views).

Rendering only: every number shown comes from a :class:`~evalkit.gate.compare.CheckReport`. Every name
printed into markdown (cell ids, model/sampler/metric names, notes, paths, problems) goes through
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
from evalkit.gate.compare import ERROR, IMPROVED, REGRESSION, CheckReport

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


# -- the check table ----------------------------------------------------------------------------------
def _num(x: float, fmt: str = ".4g") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, fmt)


_SHOWN = {REGRESSION: "**REGRESSION**", IMPROVED: "improved", ERROR: "**ERROR**"}


def markdown_report(report: CheckReport) -> str:
    """A heading, one line of provenance, and the table (cell, metric, baseline, now, delta, ...)."""
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
    lines = [
        f"### evalkit check {md_code(b.suite)}: {state} ({len(regress)} regressions, {improved} improvements, "
        f"{len(report.comparisons)} checked)",
        "",
        f"baseline {md_code(b.path)} (N={b.n}, noise σ over {len(b.seeds)} seed sets {seeds}, protocol "
        f"{md_text(b.protocol_hash)}) · run {md_code(report.run_root)} · {mode} · {k_text}",
        "",
        "| cell | metric | baseline | now | delta | tolerance | paired CI | verdict |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for c in report.comparisons:
        e = c.entry
        arrow = "↑" if e.higher_is_better else "↓"
        ci = f"[{_num(c.ci[0], '+.3g')}, {_num(c.ci[1], '+.3g')}]" if c.ci else "–"
        shown = _SHOWN.get(c.verdict, md_text(c.verdict)) + (f" ({md_text(c.note)})" if c.note else "")
        lines.append(
            f"| {md_text(e.cell)} | {md_text(e.metric)} {arrow} | {_num(c.reference)} | {_num(c.now)} "
            f"| {_num(c.delta, '+.3g')} | {_num(c.tolerance, '.3g')} | {ci} | {shown} |"
        )
    lines += [
        "",
        "tolerance = max(k_eff·σ·inflate, rel·|baseline|, abs), σ = the seed-set σ (or, for precision "
        "and density, their sampling σ where larger), k_eff = Student-t quantile with K−1 df at "
        "the tail of a z-score k; a regression is worse than the tolerance and, when paired, has its CI "
        "entirely on the worse side of 0. ↓ lower is better, ↑ higher.",
    ]
    return "\n".join(lines) + "\n"


def junit_xml(report: CheckReport, *, seconds: float = 0.0) -> str:
    """One testcase per cell × metric; regressions are <failure>, failed cells <error>."""
    suite = ET.Element(
        "testsuite",
        name=f"evalkit.gate.compare.{report.baseline.suite}",
        tests=str(len(report.comparisons)),
        failures=str(sum(c.verdict == REGRESSION for c in report.comparisons)),
        errors=str(sum(c.verdict == ERROR for c in report.comparisons)),
        skipped="0",
        time=f"{seconds:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("baseline", report.baseline.path),
        ("protocol_hash", report.baseline.protocol_hash),
        ("paired", report.paired),
        ("run", report.run_root),
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
        text = (
            f"{e.metric} ({'higher' if e.higher_is_better else 'lower'} is better): baseline {_num(c.reference)}, "
            f"now {_num(c.now)}, delta {_num(c.delta, '+.4g')}, tolerance {_num(c.tolerance, '.4g')}"
            + (f", paired CI [{_num(c.ci[0], '+.4g')}, {_num(c.ci[1], '+.4g')}]" if c.ci else "")
        )
        if c.verdict == REGRESSION:
            ET.SubElement(case, "failure", message=f"regression: {text}", type="regression").text = text
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
