"""Every DVC stage lists the code it runs, so `dvc repro` reruns it when that code changes.

A stage's code is its script's import closure inside this repository: the `pipelines/` modules
(imported as top-level names, the script's folder being first on sys.path) and the `lofit`
modules, following imports at any depth (the library imports lazily inside functions). The CLI
module is a hub whose commands each import their own implementation when called: a stage that
imports `select` from it depends on `select` (and the module-level helpers it calls), not on
`serve`. A stage whose script reaches a file that none of its `deps` covers would keep stale
outputs after that file changes.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC_FILES = ["dvc.yaml", "compare/dvc.yaml", "recommend/dvc.yaml"]
HUBS = {"lofit/cli.py"}
SCRIPT = re.compile(r"\bpython (pipelines/\S+\.py)")
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def resolve(module: str, root: Path) -> Path | None:
    """The file of a dotted module name under `root` or `root/pipelines`, if it is local."""
    parts = module.split(".")
    for base in (root, root / "pipelines"):
        path = base.joinpath(*parts)
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
    return None


@functools.cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _imports(nodes) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def _hub_nodes(tree: ast.Module, names: frozenset[str]) -> list[ast.AST]:
    """A hub's module-level statements, plus the bodies of `names` and of every top-level
    function those bodies name (transitively)."""
    functions = {s.name: s for s in tree.body if isinstance(s, DEFINITIONS)}
    nodes: list[ast.AST] = []
    for statement in tree.body:
        if not isinstance(statement, DEFINITIONS):
            nodes += list(ast.walk(statement))
    todo, done = [n for n in names if n in functions], set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        body = list(ast.walk(functions[name]))
        nodes += body
        todo += [n.id for n in body if isinstance(n, ast.Name) and n.id in functions and n.id not in done]
    return nodes


def import_closure(script: str, root: Path = ROOT, hubs: set[str] = HUBS) -> set[str]:
    """Repository-relative paths of every local module `script` can import."""
    seen: set[tuple[str, frozenset[str] | None]] = set()
    todo: list[tuple[Path, frozenset[str] | None]] = [(root / script, None)]
    while todo:
        path, names = todo.pop()
        rel = path.relative_to(root).as_posix()
        if (rel, names) in seen:
            continue
        seen.add((rel, names))
        tree = _parsed(path)
        nodes = _hub_nodes(tree, names or frozenset()) if rel in hubs else list(ast.walk(tree))
        wanted: dict[Path, set[str]] = {}
        for module, name in _imports(nodes):
            submodule = resolve(f"{module}.{name}", root) if name else None
            if submodule is not None:
                todo.append((submodule, None))
                continue
            target = resolve(module, root)
            if target is not None:
                wanted.setdefault(target, set()).update([name] if name else [])
        for target, imported in wanted.items():
            hub = target.relative_to(root).as_posix() in hubs
            todo.append((target, frozenset(imported) if hub else None))
    return {rel for rel, _ in seen}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def stage_scripts(dvc_file: str) -> list[tuple[str, str, list[str]]]:
    """(stage, script, deps as written) of every stage whose command runs a pipelines/ script."""
    stages = yaml.safe_load((ROOT / dvc_file).read_text(encoding="utf-8"))["stages"]
    found = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        match = SCRIPT.search(body["cmd"])
        if match:
            found.append((name, match.group(1), list(body.get("deps", []))))
    return found


@pytest.mark.parametrize("dvc_file", DVC_FILES)
def test_every_stage_lists_the_code_it_imports(dvc_file):
    stages = stage_scripts(dvc_file)
    assert stages
    missing = {name: sorted(p for p in import_closure(script) if not covered(p, deps)) for name, script, deps in stages}
    assert {name: files for name, files in missing.items() if files} == {}


def test_the_closure_follows_lazy_imports_and_only_the_hub_commands_used(tmp_path):
    files = {
        "pipelines/stage.py": "from common import helper\nfrom pkg.cli import run\n",
        "pipelines/common.py": "def helper():\n    from pkg.core import work\n",
        "pkg/__init__.py": "",
        "pkg/core.py": "import os\nfrom pkg import util\n",
        "pkg/util.py": "",
        "pkg/cli.py": ("from pkg.config import Config\n"
                       "def run():\n    return _load()\n"
                       "def _load():\n    from pkg.model import load\n"
                       "def serve():\n    from pkg.server import app\n"),
        "pkg/config.py": "", "pkg/model.py": "", "pkg/server.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    closure = import_closure("pipelines/stage.py", tmp_path, {"pkg/cli.py"})
    assert closure == {"pipelines/stage.py", "pipelines/common.py", "pkg/core.py", "pkg/util.py", "pkg/cli.py",
                       "pkg/config.py", "pkg/model.py"}
    assert not covered("pkg/server.py", ["pkg/core.py", "pkg/cli.py"])
    assert covered("pkg/data/x.py", ["pkg/data"]) and not covered("pkg/database.py", ["pkg/data"])
