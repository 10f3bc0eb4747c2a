"""The shape of the code, checked: no import circles, imports in one direction, modules of a readable size.

The rules (docs/architecture.md explains them):
* no circle between any two modules of ``catalog``, ``search`` and ``config``, counting every import statement,
  also those inside functions (a lazy import is still a dependency, and the usual way a circle hides);
* ``catalog`` imports nothing from ``search``: search subscribes to catalog's signals, never the reverse;
* nothing imports ``search.tasks``: work is queued by task name (``search.indexing.enqueue``);
* the shop's code (pages, API, tasks, indexing, querying) never imports the lab (``search.lab``), which only
  management commands use;
* lower layers never reach up: embedders and vector stores import neither indexing nor querying;
* no module is longer than ``MAX_LINES`` (migrations excepted).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("catalog", "search", "config")
MAX_LINES = 450


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every Python file of ``packages`` under ``root`` (migrations left out)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports anywhere in its body (functions included).

    ``from a import b`` depends on ``a.b`` when that is a module, else on ``a``. Importing a submodule is not
    counted as depending on its parent package's ``__init__``: Python runs it first, but a circle through it
    would show up as an edge of its own.
    """
    files = module_files(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, name, is_package)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                while target and target not in files:  # "import search.tasks.x" -> the nearest known module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT, PACKAGES)


def test_no_module_imports_another_that_imports_it_back(graph):
    assert circles(graph) == []


def test_the_circle_check_finds_a_circle_hidden_in_a_function(tmp_path):
    """The check itself can fail: a package whose two modules import each other, one of them lazily."""
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "services.py").write_text("def later():\n    from shop import tasks\n    return tasks\n")
    (package / "tasks.py").write_text("from shop.services import later\n")
    (package / "views.py").write_text("from . import services\n")
    assert circles(import_graph(tmp_path, ["shop"])) == [["shop.services", "shop.tasks"]]


def test_catalog_imports_nothing_from_search(graph):
    offenders = {name: sorted(t for t in targets if t.startswith("search")) for name, targets in graph.items()
                 if name.startswith("catalog")}  # fmt: skip
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_work_is_queued_by_name_never_by_importing_tasks(graph):
    assert sorted(name for name, targets in graph.items() if "search.tasks" in targets) == []


def test_the_shop_never_imports_the_lab(graph):
    allowed = ("search.lab", "search.management.commands")
    offenders = sorted(
        name
        for name, targets in graph.items()
        if not name.startswith(allowed) and any(t.startswith("search.lab") for t in targets)
    )
    assert offenders == []


def test_lower_layers_never_reach_up(graph):
    """Embedders and vector stores know nothing of indexing or querying; reads (querying) never write."""
    rules = {"search.embedders": ("search.indexing", "search.querying", "search.lab", "search.vectorstores"),
             "search.vectorstores": ("search.indexing", "search.querying", "search.lab"),
             "search.querying": ("search.indexing", "search.lab")}  # fmt: skip
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        for target in targets
        for layer, banned in rules.items()
        if name.startswith(layer) and target.startswith(banned)
    )
    assert offenders == []


def test_modules_stay_readable(graph):
    long = {name: n for name, path in module_files(ROOT, PACKAGES).items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert long == {}


def test_every_module_imports_in_a_fresh_process():
    """Importing each module first, in a new interpreter, is how a circle of partial modules would break."""
    names = [name for name in module_files(ROOT, PACKAGES) if not name.startswith("config.settings")]
    code = (
        "import importlib, sys, django\n"
        "django.setup()\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_every_module_and_name_the_architecture_page_mentions_exists():
    """docs/architecture.md names real files (``search/indexing/jobs.py``, ``catalog/views.py:staff_upload``)
    and dotted names (``search.querying.similar.similar_products``): each must exist, so the page stays true."""
    import importlib

    import django

    django.setup()
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for ref in sorted(set(re.findall(r"`([^`\s]+)`", text))):
        path, _, attribute = ref.partition(":")
        if re.fullmatch(r"(catalog|search|config|tests|templates|static|docs|demo)/[\w/.]*", path):
            defined = rf"^\s*(def|class) {re.escape(attribute.split('.')[0])}\b"
            if not (ROOT / path).exists() or (attribute and not re.search(defined, (ROOT / path).read_text(), re.M)):
                missing.append(ref)
        elif re.fullmatch(r"(catalog|search|config)(\.\w+)+", ref):
            parts = ref.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    target = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for name in parts[cut:]:
                        target = getattr(target, name)
                except AttributeError:
                    missing.append(ref)
                break
            else:
                missing.append(ref)
    assert missing == []
