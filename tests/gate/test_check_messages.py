"""What `evalkit check` tells a pull request's author: what changed besides the numbers, in which units, with a
delta and CI that agree on screen, and a broken baseline sidecar found before anything is generated.

The run folders are the synthetic ones of test_check (real RunStore, real metric code); their run.json gets
the environment and model info a real run records, so the "what changed" header has something to compare.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from gate_fixtures import good  # noqa: F401  (a fixture)
from test_check import SUITE, interval, reference, suite, table, write_run

from evalkit.cli import main
from evalkit.gate import commands
from evalkit.gate.baseline import Baseline, BaselineEntry, Tolerance, build_baseline
from evalkit.gate.changes import Changes, short, versions_of, what_changed
from evalkit.gate.compare import PASS, REGRESSION, CheckReport, Comparison
from evalkit.gate.render import MAX_DIGITS, comparison_numbers, junit_xml, markdown_report, on_one_grid
from evalkit.store import RunStore, read_run

ROOT = Path(__file__).resolve().parents[2]
SHA_A, SHA_B = "1" * 64, "2" * 64
ENV = {
    "python": "3.11.7",
    "device": "cpu (x86_64, 2 threads)",
    "torch": "2.5.1",
    "packages": {"evalkit": "0.1.0", "torch": "2.5.1", "numpy": "2.1.0", "diffusers": "0.31.0"},
}
TRAINED = [{"name": "m", "adapter": "zoo", "options": {"weights": "trained"}}]
UNTRAINED = [{"name": "m", "adapter": "zoo", "options": {"weights": "untrained"}}]


def stamp(root: Path, *, weights: str = "trained", sha: str = SHA_A, commit: str = "a" * 40, **packages) -> Path:
    """Give run.json what a real run records: environment, git commit and the model's info (weights hashes)."""
    store = RunStore(root)
    m = store.read_manifest()
    env = {**ENV, "packages": {**ENV["packages"], **packages}, "evalkit_git_commit": commit}
    if "torch" in packages:
        env["torch"] = packages["torch"]
    info = {"adapter": "zoo", "weights": weights, "weights_sha256": {"unet.safetensors": sha}, "parameters": 10}
    m.update(environment=env, git_commit=commit, evalkit_version="0.1.0", models={"m": info})
    store.write_manifest(m)
    return root


@pytest.fixture(scope="module")
def stamped(tmp_path_factory) -> Path:
    """A baseline over 3 seed sets of runs that recorded their environment and weights."""
    tmp = tmp_path_factory.mktemp("stamped")
    runs = [read_run(stamp(write_run(tmp / f"seed-{i}", suite(seed=i, models=TRAINED)))) for i in range(3)]
    b, side = build_baseline(runs, reference_features={"mnist-net": reference()})
    return b.save(tmp / "b.json", side)


def check(target, baseline, *extra) -> int:
    return main(["check", str(target), "--baseline", str(baseline), "-q", "--bootstrap", "50", *extra])


def changed_line(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("**changed since the baseline:**"))


# -- what changed -------------------------------------------------------------------------------------
def test_the_baseline_records_versions_device_and_commit(stamped):
    doc = json.loads(stamped.read_text())
    assert doc["versions"] == {
        "evalkit": "0.1.0",
        "torch": "2.5.1",
        "numpy": "2.1.0",
        "diffusers": "0.31.0",
        "python": "3.11.7",
        "device": "cpu",  # thread counts differ between CI machines: not a change worth naming
        "git commit": "a" * 40,
    }
    assert doc["models"]["m"]["weights_sha256"] == {"unet.safetensors": SHA_A}
    assert Baseline.load(stamped).versions == doc["versions"]


def test_nothing_changed_is_said_so(stamped, tmp_path, capsys):
    run = stamp(write_run(tmp_path / "run", suite(models=TRAINED)))
    assert check(run, stamped) == 0
    md = capsys.readouterr().out
    assert changed_line(md) == (
        "**changed since the baseline:** nothing changed in adapters, options, weights, extractors or package versions"
    )


def test_a_regression_comes_with_what_changed(stamped, tmp_path, capsys):
    """The PR author sees the options, the weights and the torch version that moved, beside the regression."""
    run = write_run(tmp_path / "run", suite(models=UNTRAINED), shift=1.0)
    stamp(run, weights="untrained", sha=SHA_B, commit="b" * 40 + "+dirty", torch="2.6.0")
    junit = tmp_path / "j.xml"
    assert check(run, stamped, "--junit", str(junit)) == 1
    md = capsys.readouterr().out
    line = changed_line(md)
    assert line == (
        "**changed since the baseline:** model m: options {weights: trained} → {weights: untrained}, "
        "weights_sha256.unet.safetensors 111111111111… → 222222222222…; torch 2.5.1 → 2.6.0; "
        "code: git commit aaaaaaaaaaaa… → bbbbbbbbbbbb…+dirty"
    )
    assert md.index(line) < md.index("| cell |")  # in the header, above the table
    assert "weights trained → untrained" not in md  # the adapter's info repeats the option: said once
    failures = ET.parse(junit).getroot().findall(".//failure")
    assert failures and all("changed since the baseline: model m: options" in f.text for f in failures)
    prop = ET.parse(junit).getroot().find(".//property[@name='changed_since_baseline']")
    assert prop.get("value") == line.removeprefix("**changed since the baseline:** ")


def test_only_a_new_commit_is_not_a_change_of_adapters_or_versions(stamped):
    b = Baseline.load(stamped)
    manifest = read_run(stamped.parent / "seed-0").manifest
    manifest = {**manifest, "git_commit": "c" * 40}
    assert what_changed(b, manifest).summary() == (
        "nothing changed in adapters, options, weights, extractors or package versions; "
        "code: git commit aaaaaaaaaaaa… → cccccccccccc…"
    )


def test_an_extractor_or_an_added_package_is_named(stamped):
    b = Baseline.load(stamped)
    manifest = dict(read_run(stamped.parent / "seed-0").manifest)
    manifest["extractors"] = {"mnist-net": {"weights_id": "w1", "mode": "clean"}}
    manifest["environment"] = {**manifest["environment"], "packages": {**ENV["packages"], "lpips": "0.1.4"}}
    assert what_changed(b, manifest).items == ["extractor mnist-net: mode native → clean", "lpips (none) → 0.1.4"]


def test_old_baselines_without_versions_stay_readable(stamped, tmp_path, capsys):
    doc = json.loads(stamped.read_text())
    del doc["versions"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    shutil.copy(stamped.with_suffix(".npz"), tmp_path / stamped.with_suffix(".npz").name)
    assert check(stamp(write_run(tmp_path / "run", suite(models=TRAINED))), old) == 0
    assert changed_line(capsys.readouterr().out).endswith(
        "nothing changed in adapters, options, weights or extractors (not recorded in the baseline, so not "
        "compared: package versions; re-make it with evalkit baseline to record them)"
    )
    committed = Baseline.load(ROOT / "baselines" / "ci.json")  # made before baselines recorded versions
    newer = {"evalkit_version": "9.9", "config": committed.config, "models": committed.models}
    assert what_changed(committed, {**newer, "extractors": committed.extractors}).items == [
        f"evalkit {committed.evalkit_version} → 9.9"
    ]
    assert what_changed(committed, newer).items[0] == "extractor mnist-net: not in the run"


def test_versions_must_be_strings(stamped, tmp_path, capsys):
    doc = json.loads(stamped.read_text())
    doc["versions"]["torch"] = 2.5
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps(doc))
    assert check(stamped.parent / "seed-0", bad) == 2
    assert "baseline.versions: expected a mapping of names to version strings" in capsys.readouterr().err


def test_short_values():
    assert short({"ema": True, "w": None}) == "{ema: true, w: null}"
    assert short("sha256:" + "ab" * 32) == "sha256:abababababab…"
    assert short("x" * 80) == "x" * 59 + "…"
    assert versions_of({}) == {} and Changes().summary().startswith("nothing changed")


# -- units and scales ---------------------------------------------------------------------------------
def test_units_are_stated_and_mnist_net_kid_is_shown_raw(good, tmp_path, capsys):
    """mnist-net's KID is ~10³ raw: ×10³ is a convention of Inception features only, so it is shown as is."""
    assert check(good[0], good[1]) == 0
    md = capsys.readouterr().out
    assert "kid shown raw (×10³ is the convention on inception features only)" in md and "shown scaled" not in md
    rows = table(md)
    units = {r["metric"].split()[0]: r["unit"] for r in rows}
    assert units == {
        "fd": "unitless",
        "kid": "unitless",
        "is": "unitless",
        "precision": "fraction",
        "recall": "fraction",
        "density": "ratio",
        "coverage": "fraction",
    }
    raw = read_run(good[0]).results.set_index(["cell_id", "metric"])["value"]
    for r in rows:
        assert float(r["now"]) == pytest.approx(raw[(r["cell"], r["metric"].split()[0])], rel=1e-3)


def _inception_report(tmp_path: Path) -> CheckReport:
    """A report on Inception features: KID 2.5e-3 → 4.0e-3 (a regression), FD 10 → 11."""
    b = Baseline.load(read_baseline_copy(tmp_path))
    cases = []
    for metric, before, after, ci in (("kid", 2.5e-3, 4.0e-3, (1.2e-3, 1.8e-3)), ("fd", 10.0, 11.0, (0.5, 1.5))):
        e = BaselineEntry(
            "c", "m", "s", 4, 3.0, metric, metric, "inception-clean", False, before, before, 1e-4, [before]
        )
        cases.append(Comparison(e, after, before, after - before, 0.1 * before, ci, REGRESSION))
    return CheckReport(b, tmp_path, True, cases, b.seed)


def read_baseline_copy(tmp_path: Path) -> Path:
    doc = json.loads((ROOT / "baselines" / "ci.json").read_text())
    doc["features_file"] = doc["features_sha256"] = None
    (tmp_path / "b.json").write_text(json.dumps(doc))
    return tmp_path / "b.json"


def test_kid_on_inception_is_shown_times_1000_in_markdown_and_raw_in_junit(tmp_path):
    report = _inception_report(tmp_path)
    md = markdown_report(report)
    assert "shown scaled: kid ×10³ on inception features (the usual convention)" in md
    assert "JSON, JUnit and results files hold raw values" in md
    kid, fd = table(md)
    assert (kid["unit"], kid["baseline"], kid["now"], kid["delta"], kid["tolerance"]) == (
        "×10³",
        "2.500",
        "4.000",
        "+1.50",
        "0.250",
    )
    assert kid["paired CI"] == "[+1.20, +1.80]"
    assert (fd["unit"], fd["baseline"], fd["now"], fd["delta"]) == ("unitless", "10.00", "11.00", "+1.00")
    failure = ET.fromstring(junit_xml(report)).find(".//testcase[@name='kid[inception-clean]']/failure")
    assert failure.get("message") == (
        "regression: kid (lower is better; raw values; the markdown table shows them ×10³): baseline 0.0025000, "
        "now 0.0040000, delta +0.001500, tolerance 0.0002500, paired CI [+0.001200, +0.001800]"
    )


# -- the delta and its CI on one grid -----------------------------------------------------------------
def _comparison(reference_value: float, delta: float, ci: tuple[float, float] | None) -> Comparison:
    e = BaselineEntry("c", "m", "s", 4, 3.0, "kid", "kid", "x", False, reference_value, 1.0, 0.1, [1.0], Tolerance())
    return Comparison(e, reference_value + delta, reference_value, delta, 0.5, ci, PASS)


def _parts(text: str) -> tuple[int, str]:
    """(decimals of the mantissa, exponent suffix) of a displayed number."""
    m = re.fullmatch(r"[-+]?\d+(?:\.(\d+))?(e[-+]\d+)?", text)
    assert m, text
    return len(m.group(1) or ""), m.group(2) or ""


def test_a_tiny_delta_is_shown_on_the_grid_of_its_ci():
    """The report that prompted this showed `+0` beside `[+1.5e-05, +1.5e-05]`: each number rounded on its own."""
    n = comparison_numbers(_comparison(1083.0, 1.5e-5, (1.5e-5 - 2e-12, 1.5e-5 + 3e-12)))
    lo, hi = interval(n["ci"])
    assert n["delta"] == "+1.50e-05" and n["ci"] == "[+1.50e-05, +1.50e-05]" and lo <= float(n["delta"]) <= hi
    n = comparison_numbers(_comparison(1083.0, 1.5e-5, (1.2e-5, 1.8e-5)))
    assert (n["delta"], n["ci"], n["baseline"], n["now"]) == ("+1.50e-05", "[+1.20e-05, +1.80e-05]", "1083", "1083")
    n = comparison_numbers(_comparison(78.21, 0.0042, (0.0031, 0.00505)))  # a CI narrower than 3 digits resolve
    assert (n["delta"], n["ci"], n["baseline"], n["now"]) == ("+0.00420", "[+0.00310, +0.00505]", "78.2100", "78.2142")
    n = comparison_numbers(_comparison(1.0, 12.3456, (12.34, 12.35)))
    assert (n["delta"], n["ci"]) == ("+12.346", "[+12.340, +12.350]")  # per value, 3 digits would show 12.3 thrice
    n = comparison_numbers(_comparison(2.0, 0.0, (-3e-13, 4e-13)))
    assert (n["delta"], n["ci"]) == ("+0", "[-3.00e-13, +4.00e-13]")
    n = comparison_numbers(_comparison(2.0, 0.0, (0.0, 0.0)))
    assert (n["delta"], n["ci"], n["baseline"], n["now"]) == ("+0", "[+0, +0]", "2.000", "2.000")


def test_the_ci_visibly_contains_its_delta_at_every_magnitude():
    """Rounding three numbers to one quantum is monotone: lo ≤ delta ≤ hi survives the display, and each shown
    number is within half a quantum of the true one, in the same format."""
    rng = np.random.default_rng(0)
    for _ in range(3000):
        mag = 10.0 ** rng.uniform(-12, 8)
        lo, d, hi = np.sort(rng.normal(rng.normal() * 3, 10.0 ** rng.uniform(-6, 1), size=3) * mag)
        if rng.random() < 0.1:
            d = 0.0 if lo <= 0 <= hi else d
        shown = on_one_grid([d, lo, hi], spread=hi - lo)
        d_s, lo_s, hi_s = (float(x) for x in shown)
        assert lo_s <= d_s <= hi_s, (d, lo, hi, shown)
        nonzero = [s for s, v in zip(shown, (d, lo, hi)) if v != 0]
        assert len({_parts(s) for s in nonzero}) == 1, shown  # one number of decimals, one exponent
        decimals, exponent = _parts(nonzero[0])
        quantum = 10.0 ** (-decimals + (int(exponent[1:]) if exponent else 0))
        for s, v in zip((d_s, lo_s, hi_s), (d, lo, hi)):
            assert abs(s - v) <= quantum / 2 * (1 + 1e-9) + abs(v) * 1e-15, (v, shown)
        top = math.floor(math.log10(max(abs(d), abs(lo), abs(hi))))
        if hi - lo >= 10.0 ** (top - MAX_DIGITS + 2):
            assert lo_s < hi_s, (lo, hi, shown)  # a CI with a width worth showing shows one


def test_not_finite_numbers_are_a_dash():
    assert on_one_grid([math.nan, 1.0, math.inf]) == ["–", "+1.00", "–"]
    assert on_one_grid([None, 0.0], sign=False) == ["–", "0"]


# -- a broken sidecar is found before anything runs ---------------------------------------------------
class Ran(Exception):
    """Raised by the patched runner: the check got past every early check."""


@pytest.fixture
def no_generation(monkeypatch) -> list[str]:
    """Any attempt to build a runner or run the suite is recorded and stops the check."""
    from evalkit.run.runner import Runner

    calls: list[str] = []

    def boom(*args, **kwargs):
        calls.append("run")
        raise Ran

    monkeypatch.setattr(commands, "_run_suite", boom)
    monkeypatch.setattr(Runner, "__init__", boom)
    monkeypatch.setattr(Runner, "run", boom)
    return calls


def _suite_file(tmp: Path) -> Path:
    """The YAML of the suite the `good` baseline was made from (same protocol, same seed)."""
    path = tmp / "fake.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


def _resaved(good, tmp: Path, edit) -> Path:
    b = Baseline.load(good[1])
    arrays = dict(b.features())
    edit(arrays)
    b.save(tmp / "b.json", arrays)
    return tmp / "b.json"


def _missing(good, tmp):
    shutil.copy(good[1], tmp / "b.json")
    return tmp / "b.json", "b.npz are missing (named by"


def _a_directory(good, tmp):
    shutil.copy(good[1], tmp / "b.json")
    (tmp / "b.npz").mkdir()
    return tmp / "b.json", "b.npz cannot be read"


def _tampered(good, tmp):
    shutil.copy(good[1], tmp / "b.json")
    data = bytearray(good[1].with_suffix(".npz").read_bytes())
    data[-30] ^= 0xFF
    (tmp / "b.npz").write_bytes(bytes(data))
    return tmp / "b.json", "do not match their sha256"


def _without_a_cell(good, tmp):
    def drop(a):
        for k in [k for k in a if k.startswith("cells/m__euler__s4__g3/")]:
            del a[k]

    return _resaved(good, tmp, drop), "no features of cell m__euler__s4__g3 (mnist-net)"


def _short_rows(good, tmp):
    def cut(a):
        a["cells/m__ddim__s4__g3/mnist-net/features"] = a["cells/m__ddim__s4__g3/mnist-net/features"][:-1]

    return _resaved(good, tmp, cut), "features of cell m__ddim__s4__g3 do not have one row per sample (N=80)"


def _without_reference(good, tmp):
    def drop(a):
        for k in [k for k in a if k.startswith("reference/")]:
            del a[k]

    return _resaved(good, tmp, drop), "no reference features of mnist-net"


@pytest.mark.parametrize(
    "broken", [_missing, _a_directory, _tampered, _without_a_cell, _short_rows, _without_reference]
)
def test_a_broken_sidecar_is_refused_before_generating(good, tmp_path, no_generation, capsys, broken):
    baseline, says = broken(good, tmp_path)
    junit, md = tmp_path / "out" / "j.xml", tmp_path / "out" / "check.md"
    rc = check(_suite_file(tmp_path), baseline, "--junit", str(junit), "--markdown", str(md))
    err = capsys.readouterr().err
    assert rc == 2 and no_generation == []
    assert says in err and str(tmp_path / "b.npz") in err and "evalkit baseline" in err
    assert says in junit.read_text() and says in md.read_text()


def test_an_intact_sidecar_reaches_the_run(good, tmp_path, no_generation):
    """The control for the test above: the same suite file and baseline, unbroken, get as far as running."""
    with pytest.raises(Ran):
        commands.run_check(_suite_file(tmp_path), good[1])
    assert no_generation == ["run"]
    b = Baseline.load(good[1])
    b.features_file = b.features_sha256 = None
    b.save(tmp_path / "plain.json")  # no sidecar at all (`evalkit baseline --no-features`): nothing to check
    with pytest.raises(Ran):
        commands.run_check(_suite_file(tmp_path), tmp_path / "plain.json")


def test_what_the_baseline_did_not_record_is_not_called_unchanged(stamped):
    b = Baseline.load(stamped)
    b.models = {}  # a baseline made before runs recorded the adapter's info
    summary = what_changed(b, read_run(stamped.parent / "seed-0").manifest).summary()
    assert summary == (
        "nothing changed in adapters, options, extractors or package versions (not recorded in the baseline, so "
        "not compared: weights of model m; re-make it with evalkit baseline to record them)"
    )


def test_an_unpaired_check_does_not_need_the_sidecar(good, tmp_path, no_generation):
    """On another seed set (`--seed`) nothing is paired, so a missing sidecar does not stop the check."""
    baseline, _ = _missing(good, tmp_path)
    with pytest.raises(Ran):
        commands.run_check(_suite_file(tmp_path), baseline, seed=5)
    assert check(write_run(tmp_path / "other", suite(seed=5)), baseline, "--seed", "5") == 0
