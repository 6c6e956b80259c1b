"""The house's rule, read from the code: imports run the way data flows (docs/design.md),

    retriever (entry points) -> ui, backend.api (faces) -> backend.client, backend.admission -> backend.deployments
    -> backend.jobs, backend.telemetry -> backend.models -> shared

and no module imports one that (through any chain) imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("retriever", "ui", "backend", "shared")

# Each layer may import only layers below it (and itself); outside packages are checked separately.
LAYERS = [
    ("retriever",),
    ("ui", "backend.api"),
    ("backend.client", "backend.admission"),
    ("backend.deployments",),
    ("backend.jobs", "backend.telemetry"),
    ("backend.models", "backend.data"),
    ("shared",),
]
# Third-party packages a layer must not touch: model code and shared ground know no serving or HTTP.
FORBIDDEN_THIRD_PARTY = {
    "shared": {"ray", "fastapi", "starlette", "gradio"},
    "backend.models": {"ray", "fastapi", "starlette", "gradio"},
    "backend.data": {"ray", "fastapi", "starlette", "gradio"},
    "backend.jobs": {"fastapi", "starlette", "gradio"},
    "backend.telemetry": {"fastapi", "starlette", "gradio"},
    "backend.deployments": {"fastapi", "starlette", "gradio"},
    "backend.client": {"fastapi", "starlette", "gradio"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {
    module_name(path): imports_of(path)
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
    if path.stat().st_size  # an empty __init__.py imports nothing
}


def layer_of(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def own_imports(module: str) -> set[str]:
    """The project's modules `module` imports (names like backend.models.index.Match cut to modules)."""
    return {name for name in MODULES[module] if name in MODULES} - {module}


def test_every_module_belongs_to_a_layer():
    assert [module for module in MODULES if layer_of(module) is None] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_the_way_data_flows(module: str):
    upward = [name for name in own_imports(module) if layer_of(name) < layer_of(module)]
    assert upward == [], f"{module} imports a layer above it"
    prefix = LAYERS[layer_of(module)]
    banned = set().union(*(FORBIDDEN_THIRD_PARTY.get(p, set()) for p in prefix))
    third_party = [name for name in MODULES[module] if name.split(".")[0] in banned]
    assert third_party == [], f"{module} imports what its layer must not"


def test_no_import_circle():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(own_imports(module)):
            if state.get(name) == "open":
                raise AssertionError("import circle: " + " -> ".join([*path, module, name]))
            if name not in state:
                visit(name, [*path, module])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [])
