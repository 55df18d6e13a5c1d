"""The dependency direction of DESIGN.md "Parts and the way data flows", read from the source.

Every `import` and `from ... import` in src/fmtrain is read with `ast` (nested ones in
functions included, relative ones resolved), plus `importlib.import_module` calls whose
target is a string literal or a module-level dict of string literals (the lazy `_LAZY`
tables of package `__init__`s). Each failure lists every offending edge, not only the first.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fmtrain"

# Lowest first; a module may import its own layer or lower ones (same layer allowed).
LAYERS: dict[str, int] = {
    "fmtrain.core": 0,
    "fmtrain.data": 1,
    "fmtrain.masks": 2,
    "fmtrain.nn": 3,
    "fmtrain.losses": 4,
    "fmtrain.export": 5,
    "fmtrain.datamodules": 6,
    "fmtrain.methods": 7,
    "fmtrain.engine": 8,
    "fmtrain.eval": 9,
    "fmtrain.recipe": 10,
    "fmtrain.check": 11,
    "fmtrain.cli": 12,
    "fmtrain.__main__": 12,
}
ROOT = PACKAGE  # fmtrain/__init__.py: may only import fmtrain.export, lazily
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "fmtrain.nn.vit"
    target: str  # imported module, e.g. "fmtrain.core.grid" or "torch.nn"
    path: str  # file, relative to the repository root
    line: int
    in_function: bool  # inside a def/lambda: executed only when called
    type_checking: bool  # under `if TYPE_CHECKING:`: never executed
    dynamic: bool = False  # from importlib.import_module

    def __str__(self) -> str:
        where = "function-level" if self.in_function else "top-level"
        kind = ", import_module" if self.dynamic else ""
        return f"{self.path}:{self.line}: {self.source} -> {self.target} ({where}{kind})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


MODULES = source_files()


def is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def resolve_relative(source: str, module: str | None, level: int) -> str:
    """The absolute name of `from <.level><module> import ...` written in `source`."""
    if level == 0:
        return module or ""
    base = source.split(".") if is_package(source) else source.split(".")[:-1]
    if level - 1 > len(base) - 1:
        raise ValueError(f"relative import beyond the top package in {source}")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def within(name: str, prefix: str) -> bool:
    """Prefix match on whole dotted components: "fmtrain.datamodules" is not in "fmtrain.data"."""
    return name == prefix or name.startswith(prefix + ".")


def layer_key(name: str) -> str | None:
    """The longest LAYERS prefix of `name`, or None (third-party, or the root package)."""
    matches = [p for p in LAYERS if within(name, p)]
    return max(matches, key=len) if matches else None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id == "import_module") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )


def _string_dicts(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level `NAME = {...: "str", ...}` tables (lazy-import maps)."""
    tables: dict[str, list[str]] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if isinstance(value, ast.Dict) and all(
            isinstance(v, ast.Constant) and isinstance(v.value, str) for v in value.values
        ):
            for t in targets:
                if isinstance(t, ast.Name):
                    tables[t.id] = [v.value for v in value.values]  # type: ignore[union-attr]
    return tables


def imports_of(name: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = str(path.relative_to(SRC.parent))
    tables = _string_dicts(tree)

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> Iterator[Import]:
        def make(target: str, line: int, dynamic: bool = False) -> Import:
            return Import(name, target, rel, line, in_function, type_checking, dynamic)

        if isinstance(node, ast.Import):
            for alias in node.names:
                yield make(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(name, node.module, node.level)
            if base == "__future__":
                return
            for alias in node.names:
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                sub = f"{base}.{alias.name}"
                yield make(sub if sub in MODULES else base, node.lineno)
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                candidates = [first.value]
            elif isinstance(first, ast.Subscript) and isinstance(first.value, ast.Name):
                candidates = tables.get(first.value.id, [])
            else:
                candidates = []  # computed at run time: not checkable here
            for target in candidates:
                level = len(target) - len(target.lstrip("."))
                yield make(resolve_relative(name, target[level:] or None, level), node.lineno, True)

        nested_fn = in_function or isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, nested_fn, True)
            for child in node.orelse:
                yield from visit(child, nested_fn, type_checking)
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child, nested_fn, type_checking)

    yield from visit(tree, False, False)


ALL_IMPORTS: list[Import] = [imp for name, p in MODULES.items() for imp in imports_of(name, p)]


def imports_from(prefixes: Iterable[str]) -> list[Import]:
    prefixes = tuple(prefixes)
    return [i for i in ALL_IMPORTS if any(within(i.source, p) for p in prefixes)]


def report(title: str, edges: list[Import]) -> str:
    lines = sorted({str(e) for e in edges})
    return f"{title} ({len(lines)} edge(s)):\n  " + "\n  ".join(lines)


def is_fmtrain(target: str) -> bool:
    return within(target, PACKAGE)


def is_lightning(target: str) -> bool:
    return any(within(target, lib) for lib in LIGHTNING)


# ---------------------------------------------------------------- the scan itself


def test_scan_sees_the_package():
    # guards against a silently empty scan (wrong path, renamed package)
    assert "fmtrain.masks.random_patch" in MODULES
    assert "fmtrain.export" in MODULES
    assert any(i.source == "fmtrain.masks.multiblock" for i in ALL_IMPORTS)
    assert any(i.in_function for i in ALL_IMPORTS), "nested imports are not being read"


def test_relative_imports_resolve():
    assert resolve_relative("fmtrain.data", "volumes.read", 1) == "fmtrain.data.volumes.read"
    assert resolve_relative("fmtrain.data.volumes.read", "errors", 1) == (
        "fmtrain.data.volumes.errors"
    )
    assert resolve_relative("fmtrain.data.volumes.read", "core", 3) == "fmtrain.core"
    assert resolve_relative("fmtrain.nn.vit", None, 1) == "fmtrain.nn"


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if m != ROOT and layer_key(m) is None]
    assert not missing, f"modules outside every layer (add them to LAYERS): {missing}"


def test_every_fmtrain_import_names_an_existing_module():
    # stale imports after a move would otherwise hide in function bodies until called
    bad = [i for i in ALL_IMPORTS if is_fmtrain(i.target) and i.target not in MODULES]
    assert not bad, report("imports of fmtrain modules that do not exist", bad)


# ---------------------------------------------------------------- layering


def test_imports_point_down_the_layers():
    bad = []
    for imp in ALL_IMPORTS:
        if imp.source == ROOT or not is_fmtrain(imp.target):
            continue
        src, dst = layer_key(imp.source), layer_key(imp.target)
        if dst is None:  # the root package re-exports fmtrain.export
            dst = "fmtrain.export"
        assert src is not None, imp
        if LAYERS[dst] > LAYERS[src]:
            bad.append(imp)
    assert not bad, report(
        "imports from a lower layer of a higher one (layer order: "
        + " < ".join(sorted(LAYERS, key=LAYERS.__getitem__))
        + ")",
        bad,
    )


def test_root_package_imports_only_export_lazily():
    bad = [
        i
        for i in imports_from([ROOT])
        if i.source == ROOT
        and (is_fmtrain(i.target) and (i.target != "fmtrain.export" or not i.in_function))
    ]
    bad += [i for i in imports_from([ROOT]) if i.source == ROOT and is_lightning(i.target)]
    assert not bad, report(
        "fmtrain/__init__.py may import only fmtrain.export, inside a function", bad
    )


def test_export_imports_only_core_and_nn():
    bad = [
        i
        for i in imports_from(["fmtrain.export"])
        if (is_fmtrain(i.target) and layer_key(i.target) not in ("fmtrain.core", "fmtrain.nn"))
        or is_lightning(i.target)
    ]
    assert not bad, report(
        "fmtrain.export may import only fmtrain.core, fmtrain.nn and third-party (no Lightning)",
        bad,
    )


FORBIDDEN = [
    (
        ("fmtrain.data", "fmtrain.masks"),
        ("fmtrain.nn", "fmtrain.methods", "fmtrain.eval", "fmtrain.cli"),
    ),
    (("fmtrain.nn",), ("fmtrain.data", "fmtrain.datamodules")),
    (
        ("fmtrain.methods",),
        ("fmtrain.cli", "fmtrain.check", "fmtrain.eval", "fmtrain.recipe"),
    ),
    (("fmtrain.eval",), ("fmtrain.cli", "fmtrain.check", "fmtrain.recipe")),
]


@pytest.mark.parametrize(("sources", "targets"), FORBIDDEN, ids=["+".join(s) for s, _ in FORBIDDEN])
def test_forbidden_fmtrain_imports(sources, targets):
    bad = [i for i in imports_from(sources) if any(within(i.target, t) for t in targets)]
    assert not bad, report(f"{' / '.join(sources)} must not import {', '.join(targets)}", bad)


NO_LIGHTNING = (
    "fmtrain.core",
    "fmtrain.data",
    "fmtrain.masks",
    "fmtrain.nn",
    "fmtrain.losses",
    "fmtrain.export",
)


@pytest.mark.parametrize("part", NO_LIGHTNING)
def test_lower_parts_never_import_lightning(part):
    bad = [i for i in imports_from([part]) if is_lightning(i.target)]
    assert not bad, report(f"{part} must not import Lightning ({', '.join(LIGHTNING)})", bad)


# ---------------------------------------------------------------- cycles


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
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
                components.append(sorted(component))
    return components


def test_scc_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["d"], ["e"]]


def test_no_import_cycles():
    # Top-level and function-level imports both count; `if TYPE_CHECKING:` ones never run.
    edges = [
        i
        for i in ALL_IMPORTS
        if not i.type_checking and i.target in MODULES and i.target != i.source
    ]
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        graph[e.source].add(e.target)
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    lines = []
    for members in cycles:
        inside = set(members)
        lines.append(
            report(
                f"cycle among {', '.join(members)}",
                [e for e in edges if e.source in inside and e.target in inside],
            )
        )
    assert not cycles, "import cycles between fmtrain modules:\n" + "\n".join(lines)
