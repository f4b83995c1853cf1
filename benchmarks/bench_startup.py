"""Start-up time of the ``evalkit`` command (issue 16, item 8): target < 2 s each on 2 CPU cores.

    python benchmarks/bench_startup.py                 # 5 runs each, medians
    python benchmarks/bench_startup.py --repeats 9 --json benchmarks/results.jsonl

Times, as fresh processes (``python -m evalkit ...``, the tree this script sits in first on PYTHONPATH,
``HF_HUB_OFFLINE=1``), the wall clock of ``evalkit --help``, ``evalkit list`` and
``evalkit run suites/smoke.yaml --dry-run`` (into a temporary run folder): one untimed warm-up of each
(file cache), then ``--repeats`` rounds, the commands interleaved (the order rotates each round), medians
reported. Then ``python -X importtime -m evalkit --help``: the total of the modules' own import times (the
sum of the ``self`` column; median of the same number of runs) and the ten slowest top-level imports of
one run. Last, from one ``-X importtime`` run per command: which heavy libraries each command loaded.

On a shared machine the figures are noisy; compare medians, not single runs. Exit 1 when a median misses
the target (``--target``, seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, fmt_s

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "scipy", "diffusers", "matplotlib", "pyarrow", "transformers", "PIL")


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


def _commands(out: Path) -> dict[str, list[str]]:
    return {
        "evalkit --help": ["--help"],
        "evalkit list": ["list"],
        "evalkit run suites/smoke.yaml --dry-run": [
            "run",
            str(ROOT / "suites" / "smoke.yaml"),
            "--dry-run",
            "--out",
            str(out / "smoke"),
        ],
    }


def _run(args: list[str], *, importtime: bool = False) -> tuple[float, str]:
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "evalkit", *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr[-2000:]}")
    return wall, r.stderr


def parse_importtime(stderr: str) -> list[tuple[int, int, str]]:
    """``(self µs, cumulative µs, indented name)`` for each line of ``-X importtime`` output."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|", 2)
        rows.append((int(own), int(cumulative), name.rstrip()))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target", type=float, default=2.0, help="seconds (default: %(default)s)")
    ap.add_argument("--json", help="append the result records (JSON lines) to this file")
    args = ap.parse_args(argv)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    print(f"# nproc={os.cpu_count()}  load={load}  python={sys.version.split()[0]}  repeats={args.repeats}")

    with tempfile.TemporaryDirectory() as tmp:
        commands = _commands(Path(tmp))
        for cmd in commands.values():  # warm-up: file cache, .pyc files
            _run(cmd)
        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(_run(commands[name])[0])
        heavy = {name: _heavy_modules(cmd) for name, cmd in commands.items()}

    missed = 0
    for name, ts in times.items():
        med = statistics.median(ts)
        ok = med < args.target
        missed += not ok
        loaded = ", ".join(heavy[name]) or "none"
        print(
            f"{name:<42} median {fmt_s(med)}  (min {fmt_s(min(ts))}, max {fmt_s(max(ts))})  "
            f"{'ok' if ok else 'FAIL'} < {args.target:g} s   heavy imports: {loaded}"
        )
        emit({"bench": "startup", "command": name, "median_s": med, "times_s": ts, "heavy": heavy[name]}, args.json)

    totals, rows = [], []
    for _ in range(args.repeats):
        rows = parse_importtime(_run(["--help"], importtime=True)[1])
        totals.append(sum(own for own, _, _ in rows) / 1e6)
    print(f"{'-X importtime evalkit --help: total':<42} median {fmt_s(statistics.median(totals))}  (sum of self)")
    top = sorted((r for r in rows if not r[2].startswith("  ")), key=lambda r: -r[1])[:10]
    for _, cumulative, name in top:
        print(f"    {cumulative / 1e6:7.3f} s  {name.strip()}")
    emit({"bench": "startup", "command": "importtime --help", "median_s": statistics.median(totals)}, args.json)
    return 1 if missed else 0


def _heavy_modules(args: list[str]) -> list[str]:
    """The heavy top-level packages a command imports (from one ``-X importtime`` run)."""
    names = {name.strip().split(".")[0] for _, _, name in parse_importtime(_run(args, importtime=True)[1])}
    return [h for h in HEAVY if h in names]


if __name__ == "__main__":
    sys.exit(main())
