"""The layering of `viz/` (README's Layout, ../shared/DESIGN.md): a module imports its own layer
or lower ones, never higher; folders of one layer do not import each other in a cycle; an import
inside a function only defers a heavy import and says so with a `# deferred: <why>` comment.

Every module under viz/ is parsed with `ast` (nothing is imported), so the test is fast and sees
imports that only run on some paths.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

VIZ = Path(__file__).resolve().parents[1] / "viz"

# Lowest first. A new top-level folder or module under viz/ must be placed here.
LAYERS: dict[str, int] = {
    "errors": 0,  # leaves: the error tree, settings, licence rules
    "config": 0,
    "licences": 0,
    "datasets": 1,  # readers of shared corpora (QASPER)
    "store": 2,  # schema, migrations, blobs
    "accounts": 3,
    "documents": 3,
    "log": 3,
    "models": 3,
    "ledger": 4,
    "training": 4,
    "rag": 4,
    "market": 5,  # catalogue, hierarchy rules, screening, merges
    "routing": 6,
    "serving": 7,  # the gateway and its engines
    "web": 8,
    "eval": 8,
    "app": 9,  # the FastAPI app (API + pages), the Python API, the `viz` command
    "api": 9,
    "cli": 9,
}

# Accepted violations, each (importing module, imported module), covering both an upward import
# and an import inside a function without a `deferred` comment. Empty since issue 19: keep it so.
# An entry that no longer happens fails `test_known_violations_are_current`.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. viz.rag.answer
    line: int
    target: str  # the imported module, e.g. viz.eval.metrics
    nested: bool  # inside a function
    deferred: bool  # a `deferred` comment on its line or just above its group of imports


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(VIZ.rglob("*.py")):
        parts = path.relative_to(VIZ.parent).with_suffix("").parts
        if "migrations" in parts:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(module: str, path: Path) -> list[Import]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    starts = {n.lineno for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)}
    ends = {n.end_lineno for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)}
    found: list[Import] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import | ast.ImportFrom):
                deferred = _has_deferred_comment(lines, child.lineno, starts, ends)
                for target in _targets(child, package):
                    found.append(Import(module, child.lineno, target, nested, deferred))
            visit(child, inner)

    visit(tree, False)
    return found


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not node.level:
        return [node.module or ""]
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return [".".join([*base, node.module] if node.module else base)]


def _has_deferred_comment(lines: list[str], line: int, starts: set[int], ends: set[int]) -> bool:
    """`deferred` in a comment on the import's first line, or in the comment lines above it,
    looking past the other imports of the same group (one comment may cover a group)."""
    if "deferred" in lines[line - 1].partition("#")[2]:
        return True
    above = line - 1  # 1-based number of the line above
    while above >= 1:
        text = lines[above - 1].strip()
        if text.startswith("#"):
            if "deferred" in text:
                return True
        elif above in ends:  # the last line of another import: continue above its first line
            above = max(start for start in starts if start <= above)
        else:
            return False
        above -= 1
    return False


def layer_of(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "viz" or len(parts) < 2:
        return None
    return parts[1], LAYERS[parts[1]]


def violations() -> list[tuple[Import, str]]:
    """(import, why) for every import that breaks a rule and is not a known violation."""
    found = []
    for module, path in modules().items():
        own = layer_of(module)
        for imp in imports_of(module, path):
            if (imp.module, imp.target) in KNOWN_VIOLATIONS:
                continue
            target = layer_of(imp.target) if imp.target.split(".")[0] == "viz" else None
            if own is not None and target is not None and target[1] > own[1]:
                found.append(
                    (
                        imp,
                        f"imports {imp.target} (layer {target[1]}, {target[0]}) from layer "
                        f"{own[1]} ({own[0]}): a module imports its own layer or lower ones",
                    )
                )
            if imp.nested and not imp.deferred:
                found.append(
                    (
                        imp,
                        f"imports {imp.target} inside a function without a `# deferred: <why>` "
                        "comment: hoist it to the module top, or defer only a heavy import",
                    )
                )
    return found


def test_no_upward_import_and_no_unexplained_import_inside_a_function() -> None:
    found = violations()
    assert not found, "\n".join(f"{i.module}:{i.line} {why}" for i, why in found)


def test_every_top_level_package_is_placed_in_the_layer_table() -> None:
    names = {p.stem for p in VIZ.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in VIZ.iterdir() if (p / "__init__.py").is_file()}
    missing = sorted(names - set(LAYERS))
    assert not missing, f"place {missing} in LAYERS (tests/test_layers.py) and README's Layout"


def test_folders_of_one_layer_do_not_import_each_other_in_a_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for module, path in modules().items():
        own = layer_of(module)
        for imp in imports_of(module, path):
            target = layer_of(imp.target) if imp.target.startswith("viz.") else None
            if own is None or target is None or (imp.module, imp.target) in KNOWN_VIOLATIONS:
                continue
            if own[0] != target[0] and own[1] == target[1]:
                edges.setdefault(own[0], set()).add(target[0])
    for start in edges:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                assert nxt != start, f"folders import each other in a cycle: {path + [nxt]}"
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))


def test_known_violations_are_current() -> None:
    """Each known violation still happens; when its owner fixes it, remove it from the set."""
    happening = set()
    for module, path in modules().items():
        own = layer_of(module)
        for imp in imports_of(module, path):
            target = layer_of(imp.target) if imp.target.startswith("viz.") else None
            upward = own is not None and target is not None and target[1] > own[1]
            if upward or (imp.nested and not imp.deferred):
                happening.add((imp.module, imp.target))
    stale = sorted(KNOWN_VIOLATIONS - happening)
    assert not stale, f"no longer violations, remove them from KNOWN_VIOLATIONS: {stale}"


def test_the_checker_sees_upward_relative_and_nested_imports(tmp_path: Path) -> None:
    source = (
        "from viz.serving import app\n"
        "from .citations import parse_citations\n"
        "def f():\n"
        "    import json\n"
        "    # deferred: torch is heavy\n"
        "    import torch\n"
        "    from transformers import AutoConfig\n"
        "    x = 1\n"
        "    import peft  # deferred: peft is heavy\n"
    )
    path = tmp_path / "answer.py"
    path.write_text(source)
    found = {(i.target, i.nested, i.deferred) for i in imports_of("viz.rag.answer", path)}
    assert found == {
        ("viz.serving", False, False),
        ("viz.rag.citations", False, False),
        ("json", True, False),
        ("torch", True, True),
        ("transformers", True, True),
        ("peft", True, True),
    }
    assert layer_of("viz.serving.app") == ("serving", 7)
    assert layer_of("viz.rag.answer") == ("rag", 4)
