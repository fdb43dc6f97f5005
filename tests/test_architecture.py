"""The house as designed (../shared/DESIGN.md), checked on the real import graph.

- The layer contracts in setup.cfg ``[importlinter]`` hold (also run by ``make lint``).
- No import cycle anywhere in the package, imports inside functions and under
  ``TYPE_CHECKING`` included: a lazy import hides a cycle from Python, not from this test.
- The client, and the leaves it stands on, load no Django in a fresh interpreter.
- A module over 400 lines says in its docstring why its one job is that big.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "textflow_django"
#: Past this, a module's docstring must say why (a paragraph starting "Why one module").
MAX_LINES = 400


def test_the_layer_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / "setup.cfg"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every contract of setup.cfg kept, these among them (a contract file that lost one
    # would still "pass").
    contracts = re.findall(
        r"^\[importlinter:contract:(.+)\]$", (ROOT / "setup.cfg").read_text(), re.M
    )
    assert {
        "layers",
        "client-without-django",
        "emulator-stands-alone",
        "two-factor-only-in-contrib",
        "allauth-only-in-contrib",
    } <= set(contracts)
    assert result.stdout.count("KEPT") == len(contracts), result.stdout


def _cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module, or with a self-import
    (Tarjan's algorithm, iterative: the graph is small but recursion limits are not ours)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(imports):
        if start in index:
            continue
        work = [(start, iter(sorted(imports[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in imports.get(node, ()):
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    # The finder itself must be able to fail: a three-module ring, a self-import, and a
    # chain that is not a cycle.
    ring = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(_cycles(ring)) == [["a", "b", "c"], ["d"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_lazy_imports_included():
    graph = grimp.build_graph("textflow_django", exclude_type_checking_imports=False)
    imports = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    # The package's own __init__ holds only __version__; a child importing it is no cycle.
    assert imports["textflow_django"] == set()
    assert _cycles(imports) == []


def test_the_client_and_its_leaves_load_no_django():
    modules = [
        "textflow_django.client",
        "textflow_django._errors",
        "textflow_django._breaker",
        "textflow_django._e164",
        "textflow_django._rates",
        "textflow_django._codes",
        "textflow_django._sms",
        "textflow_django._numbering",
        "textflow_django._digit_automata",
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))\n"
        "print(sorted(m for m in sys.modules if m.startswith('textflow_django')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.splitlines()
    assert out[0] == "[]"
    loaded = set(ast.literal_eval(out[1]))
    assert "textflow_django.conf" not in loaded and "textflow_django.exceptions" not in loaded


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def test_every_module_over_400_lines_says_why():
    long = {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts
    }
    long = {name: lines for name, lines in long.items() if lines > MAX_LINES}
    unexplained = [name for name in long if "Why one module" not in _docstring(ROOT / name)]
    assert unexplained == [], f"over {MAX_LINES} lines with no 'Why one module...': {long}"
