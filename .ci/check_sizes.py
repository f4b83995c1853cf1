"""Module and function sizes: no module over 400 lines, no function over 60; prints the ten longest functions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE, MAX_FUNCTION = 400, 60


def main(root: str = "evalkit") -> int:
    functions, modules = [], []
    for path in sorted(Path(root).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        modules.append((len(text.splitlines()), str(path)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    functions.sort(reverse=True)
    print("ten longest functions (lines):")
    for n, where in functions[:10]:
        print(f"  {n:4d}  {where}")
    print(f"longest module: {max(modules)[0]} lines ({max(modules)[1]})")
    bad = [f"module {p}: {n} lines > {MAX_MODULE}" for n, p in modules if n > MAX_MODULE]
    bad += [f"function {w}: {n} lines > {MAX_FUNCTION}" for n, w in functions if n > MAX_FUNCTION]
    for line in bad:
        print(f"TOO LONG: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
