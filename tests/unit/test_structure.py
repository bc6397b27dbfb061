"""The layout rules of the project, checked on the source text alone.

- a module has at most 400 lines, a class at most 250 (Django migrations excepted);
- no import cycle between the modules of the package;
- each constant is defined in one module only;
- the core (``domain_event_broker.core``) imports no I/O library;
- every logger is named under ``domain_event_broker``, and no module borrows another's;
- no module reaches into another module's private names.

Each test lists every offender, as a path relative to ``src/`` with a line number or a count.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = "domain_event_broker"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "src" / PACKAGE
SRC_DIR = PACKAGE_DIR.parent

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
CONSTANT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# The core opens no connection and runs no event loop. (It may lock: the confirm
# book is shared by the callers' threads and the I/O thread.)
IO_LIBRARIES = frozenset({"pika", "aio_pika", "aiormq", "pamqp", "socket", "ssl", "asyncio"})
LOGGER_NAMES = frozenset({"log", "logger"})
TRY_NODES = tuple(getattr(ast, name) for name in ("Try", "TryStar") if hasattr(ast, name))


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC_DIR).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name; a package by the name of its ``__init__``."""
    return {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path: Path) -> str:
    return path.relative_to(SRC_DIR).as_posix()


def _is_migration(path: Path) -> bool:
    return "migrations" in path.relative_to(PACKAGE_DIR).parts[:-1]


def _checked_modules() -> Iterator[tuple[str, Path]]:
    """The modules the size and constant rules apply to: all but migrations."""
    for name, path in _modules().items():
        if not _is_migration(path):
            yield name, path


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _source_of(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The absolute dotted name ``from X import ...`` reads from, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    base = ".".join(parts)
    if node.module:
        return f"{base}.{node.module}" if base else node.module
    return base


def _imported_modules(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """Each package module this one imports, with the line, from every import statement.

    An import of a module that does not exist (a broken import) makes no edge.
    """
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _source_of(node, module, path)
            submodules = (f"{source}.{alias.name}" for alias in node.names)
            targets = [name if name in _modules() else source for name in submodules]
        else:
            continue
        for target in targets:
            if _in_package(target) and target in _modules():
                yield node.lineno, target


def _package_imports_from(
    module: str, path: Path
) -> Iterator[tuple[ast.ImportFrom, str, ast.alias]]:
    """Each name imported with ``from <package module> import name`` that is not a module."""
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = _source_of(node, module, path)
        if not _in_package(source):
            continue
        for alias in node.names:
            if f"{source}.{alias.name}" not in _modules():
                yield node, source, alias


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = lowlink[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    lowlink[node] = min(lowlink[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowlink[parent] = min(lowlink[parent], lowlink[node])
                if lowlink[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def _top_level_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a module body, looking inside top-level ``if`` and ``try`` blocks."""
    for statement in body:
        if isinstance(statement, ast.If):
            yield from _top_level_statements(statement.body)
            yield from _top_level_statements(statement.orelse)
        elif isinstance(statement, TRY_NODES):
            yield from _top_level_statements(statement.body)
            for handler in statement.handlers:
                yield from _top_level_statements(handler.body)
            yield from _top_level_statements(statement.orelse)
            yield from _top_level_statements(statement.finalbody)
        else:
            yield statement


def _constants(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for statement in _top_level_statements(tree.body):
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets = [statement.target]
        else:
            continue
        if _is_type_variable(statement.value):
            continue  # T = TypeVar("T") names a type, not a value
        for target in targets:
            if isinstance(target, ast.Name) and CONSTANT_NAME.match(target.id):
                yield statement.lineno, target.id


def _is_type_variable(value: ast.expr | None) -> bool:
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id in ("TypeVar", "ParamSpec")
    )


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _report(title: str, offenders: list[str]) -> str:
    return f"{title} ({len(offenders)}):\n  " + "\n  ".join(offenders)


def test_no_module_over_400_lines() -> None:
    offenders = []
    for _, path in _checked_modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{_rel(path)}: {lines} lines")
    assert not offenders, _report(f"modules over {MAX_MODULE_LINES} lines", offenders)


def test_no_class_over_250_lines() -> None:
    offenders = []
    for _, path in _checked_modules():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    offenders.append(f"{_rel(path)}:{node.lineno} class {node.name}: {lines} lines")
    assert not offenders, _report(f"classes over {MAX_CLASS_LINES} lines", offenders)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {name: set() for name in _modules()}
    lines: dict[tuple[str, str], list[int]] = {}
    for module, path in _modules().items():
        for lineno, target in _imported_modules(module, path):
            if target != module:
                graph[module].add(target)
                lines.setdefault((module, target), []).append(lineno)
    offenders = []
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue
        members = set(component)
        edges = sorted(
            (module, lineno, target)
            for module in component
            for target in graph[module] & members
            for lineno in set(lines[module, target])
        )
        edge_lines = [
            f"    {_rel(_modules()[module])}:{lineno} imports {target}"
            for module, lineno, target in edges
        ]
        offenders.append(" <-> ".join(component) + "\n" + "\n".join(edge_lines))
    assert not offenders, _report("import cycles", offenders)


def test_no_constant_defined_in_two_modules() -> None:
    definitions: dict[str, dict[str, int]] = {}
    for _, path in _checked_modules():
        for lineno, name in _constants(_tree(path)):
            if not _is_dunder(name):
                definitions.setdefault(name, {}).setdefault(_rel(path), lineno)
    offenders = [
        f"{name}: " + ", ".join(f"{where}:{lineno}" for where, lineno in sorted(places.items()))
        for name, places in sorted(definitions.items())
        if len(places) > 1
    ]
    assert not offenders, _report("constants defined in more than one module", offenders)


def test_core_imports_neither_pika_nor_aio_pika() -> None:
    core = PACKAGE_DIR / "core"
    if not core.is_dir():
        pytest.skip("no core package yet")
    offenders = []
    for path in sorted(core.rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in IO_LIBRARIES:
                    offenders.append(f"{_rel(path)}:{node.lineno} imports {name}")
    assert not offenders, _report("I/O imports in the core", offenders)


def _get_logger_names(tree: ast.Module) -> set[str]:
    """The names ``getLogger`` is called by in a module: ``logging.getLogger`` or an import."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "logging":
            names |= {
                alias.asname or alias.name for alias in node.names if alias.name == "getLogger"
            }
    return names


def _is_get_logger(call: ast.Call, direct_names: set[str]) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        return (
            func.attr == "getLogger"
            and isinstance(func.value, ast.Name)
            and func.value.id == "logging"
        )
    return isinstance(func, ast.Name) and func.id in direct_names


def _logger_name_ok(call: ast.Call) -> bool:
    args = [*call.args, *(keyword.value for keyword in call.keywords if keyword.arg == "name")]
    if len(args) != 1:
        return False
    arg = args[0]
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add):
        arg = arg.left  # __package__ + ".relay": a logger under the package's own
    if isinstance(arg, ast.Name):
        # __package__: the documented name of a package's modules' common logger
        # (domain_event_broker.subscriber for every module of that package).
        return arg.id in ("__name__", "__package__")
    return isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _in_package(arg.value)


def _only_quietens(call: ast.Call, tree: ast.Module) -> bool:
    """``logging.getLogger("pika").setLevel(...)``: another library's logger turned down."""
    return any(
        isinstance(node, ast.Attribute) and node.value is call and node.attr == "setLevel"
        for node in ast.walk(tree)
    )


def test_loggers_are_named_under_the_package() -> None:
    offenders = []
    for module, path in _modules().items():
        tree = _tree(path)
        direct_names = _get_logger_names(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and _is_get_logger(node, direct_names)
                and not _logger_name_ok(node)
                and not _only_quietens(node, tree)
            ):
                offenders.append(f"{_rel(path)}:{node.lineno} {ast.unparse(node)}")
        for node, source, alias in _package_imports_from(module, path):
            if alias.name in LOGGER_NAMES:
                offenders.append(
                    f"{_rel(path)}:{node.lineno} imports the logger {alias.name!r} of {source}"
                )
    assert not offenders, _report("loggers not named under the package", offenders)


def test_no_private_names_from_other_modules() -> None:
    offenders = []
    for module, path in _modules().items():
        for node, source, alias in _package_imports_from(module, path):
            name = alias.name
            if not name.startswith("_") or _is_dunder(name):
                continue
            if source.rpartition(".")[2].startswith("_"):
                continue
            offenders.append(f"{_rel(path)}:{node.lineno} imports {name} from {source}")
    assert not offenders, _report("private names imported from another module", offenders)
