"""Layering and repository hygiene.

Allowed import edges between the top-level packages (every import counts: module level, inside functions,
under TYPE_CHECKING):

    importer      may import
    scaling       scaling
    sweeps        sweeps, scaling.api (the run contract) and nothing else of scaling
    analysis      analysis
    scaling_cli   anything (the composition root: the `scaling` console script)
    (no package imports scaling_cli)

Inside each package the module-level import graph has no cycles (function-level imports, which run after
every module has loaded, are not edges of that graph). Importing `a.b.c` also imports the packages `a.b`
and `a`, so those count as edges too, except packages enclosing the importer (already being imported).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scaling", "sweeps", "analysis", "scaling_cli")
CONTRACT = "scaling.api"


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module (or package) name it resolves to
    lineno: int
    module_level: bool  # executed when the importer is imported (not in a function, not under TYPE_CHECKING)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path, package: str) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted((root / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(root: Path, base: str, name: str | None) -> str:
    """`from base import name`: the submodule base.name when it is a module, else base."""
    if name and name != "*":
        candidate = f"{base}.{name}"
        rel = Path(*candidate.split("."))
        if (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file():
            return candidate
    return base


def imports_of(root: Path, name: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            module_level = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, module_level)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append(Import(name, alias.name, node.lineno, module_level))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importer's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                out.append(Import(name, _resolve(root, base, alias.name), node.lineno, module_level))
        for child in ast.iter_child_nodes(node):
            visit(child, module_level)

    visit(tree, True)
    return out


def all_imports(root: Path = ROOT) -> list[Import]:
    found = []
    for package in PACKAGES:
        for name, path in package_modules(root, package).items():
            found += imports_of(root, name, path)
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def layering_violations(root: Path = ROOT) -> list[str]:
    bad = []
    for imp in all_imports(root):
        src, dst = top(imp.importer), top(imp.target)
        if dst not in PACKAGES or src == dst or src == "scaling_cli":
            continue
        where = f"{imp.importer}:{imp.lineno} imports {imp.target}"
        if dst == "scaling_cli":
            bad.append(f"{where} (nothing imports the composition root)")
        elif src == "sweeps" and dst == "scaling":
            if imp.target not in (CONTRACT, "scaling"):
                bad.append(f"{where} (sweeps uses scaling only through {CONTRACT})")
        else:
            bad.append(f"{where} ({src} may not import {dst})")
    return list(dict.fromkeys(bad))  # one line per statement and target


def module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module-level import edges between the modules of one package (parent packages included)."""
    modules = package_modules(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        own = name.split(".")
        ancestors = {".".join(own[:i]) for i in range(1, len(own) + (path.name == "__init__.py"))}
        for imp in imports_of(root, name, path):
            if not imp.module_level or top(imp.target) != package:
                continue
            parts = imp.target.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in modules and target != name and target not in ancestors:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


# ---------------------------------------------------------------- static checks


def test_allowed_edges_between_packages():
    bad = layering_violations()
    assert not bad, "imports that break the layering:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_level_import_cycles(package):
    cycles = find_cycles(module_graph(ROOT, package))
    assert not cycles, f"module-level import cycles in {package}: {cycles}"


def test_checker_sees_the_edges_it_forbids(tmp_path):
    """The checks find a forbidden edge, a lazy one, a non-contract one and a package-level cycle."""
    for rel, text in {
        "scaling/__init__.py": "", "scaling/api.py": "", "scaling/train.py": "",
        "scaling/cli.py": "def f():\n    from sweeps import cli\n",
        "scaling/models/__init__.py": "from scaling import parametrization\n",
        "scaling/models/transformer.py": "",
        "scaling/parametrization.py": "from scaling.models.transformer import X\n",
        "sweeps/__init__.py": "", "sweeps/store.py": "from scaling.api import train\nfrom scaling.train import x\n",
        "analysis/__init__.py": "", "scaling_cli/__init__.py": "import sweeps, analysis, scaling.train\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    bad = layering_violations(tmp_path)
    assert len(bad) == 2 and "scaling.cli:2 imports sweeps " in bad[0] and "scaling.train" in bad[1], bad
    assert find_cycles(module_graph(tmp_path, "scaling")) == [["scaling.models", "scaling.parametrization"]]


# ---------------------------------------------------------------- runtime checks (fresh interpreters)


def _loaded_after_importing(modules: list[str]) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.splitlines()[-1]))


def _importable(package: str) -> list[str]:
    # experiment files are data loaded by path (sweeps.experiment); the rest is every module of the package
    return [m for m in package_modules(ROOT, package) if not m.startswith("sweeps.experiments.")]


def _of(loaded: set[str], package: str) -> set[str]:
    return {m for m in loaded if top(m) == package}


def test_importing_scaling_loads_neither_sweeps_nor_analysis():
    loaded = _loaded_after_importing(_importable("scaling"))
    assert not _of(loaded, "sweeps") | _of(loaded, "analysis") | _of(loaded, "scaling_cli")


def test_importing_analysis_loads_neither_scaling_nor_sweeps():
    loaded = _loaded_after_importing(_importable("analysis"))
    assert not _of(loaded, "scaling") | _of(loaded, "sweeps") | _of(loaded, "scaling_cli")


def _loaded_by_the_contract() -> set[str]:
    """What importing scaling.api and resolving its names loads; the training names aside (scaling.api
    resolves every lazy name on first access: the training loop only in processes that train)."""
    code = (f"import importlib, json, sys\napi = importlib.import_module({CONTRACT!r})\n"
            "for name in api.__all__:\n    name in api.TRAINING or getattr(api, name)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_importing_sweeps_loads_only_the_run_contract_of_scaling():
    contract = _of(_loaded_by_the_contract(), "scaling")
    loaded = _loaded_after_importing(_importable("sweeps"))
    assert not _of(loaded, "analysis") | _of(loaded, "scaling_cli")
    assert _of(loaded, "scaling") <= contract, sorted(_of(loaded, "scaling") - contract)


def test_composition_root_offers_every_subcommand():
    from scaling_cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"train", "coord-check", "quickstart", "sweep", "analyze"} <= set(sub.choices)


# ---------------------------------------------------------------- hygiene


def _tracked_python_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if line and (ROOT / line).is_file()]


def test_no_references_to_missing_notes():
    needle = "notes" + "/"  # built by concatenation so this file does not match itself
    hits = []
    for path in _tracked_python_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if needle in line:
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not hits, "comments cite files that are not in the repository:\n" + "\n".join(hits)
