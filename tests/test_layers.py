"""The package's folders are its layers: every import points down (or sideways, within a layer,
without cycles), and no module imports another's private names."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import streamgmm

PACKAGE = Path(streamgmm.__file__).parent

# From the applications down to the mixture math (docs/design.md, "Modules"); one rank per layer.
LAYERS = {
    "cli": 0,
    "plotting": 1,
    "watch": 1,
    "selection": 2,
    "estimator": 3,
    "assignment": 4,
    "inputs": 5,
    "dask": 6,
    "datasets": 7,
    "em": 7,
    # io is one layer of five concepts, each a folder, ranked among themselves.
    "io": 8,
    "io.sources": 8.1,
    "io.model": 8.2,
    "io.output": 8.3,
    "io.lake": 8.4,
    "io.background": 8.5,
    "io.records": 8.6,
    "kernels": 9,
    "mixture": 10,
}


def unit(module: str) -> str | None:
    """The folder (or top-level module) a dotted module name lives in; None for the package."""
    parts = module.split(".")
    if len(parts) > 2 and parts[:2] == ["streamgmm", "io"]:
        return f"io.{parts[2]}"
    return parts[1] if len(parts) > 1 and parts[0] == "streamgmm" else None


def imports() -> list[tuple[str, str, str, list[str]]]:
    """(importing module's file, its unit, the imported module, the names) for every import of
    streamgmm inside streamgmm, top level or late."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamgmm"):
                found.append((str(relative), unit(module), node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("streamgmm"):
                        found.append((str(relative), unit(module), alias.name, []))
    return found


def test_every_folder_has_a_layer() -> None:
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in PACKAGE.rglob("*.py")}
    units = {unit(module.removesuffix(".__init__")) for module in modules}
    assert units - {None, "__main__"} == set(LAYERS)


def test_imports_point_down() -> None:
    upward = [
        f"{where} ({source}) imports {target}"
        for where, source, target, _ in imports()
        if source in LAYERS and unit(target) in LAYERS and LAYERS[unit(target)] < LAYERS[source]
    ]
    assert not upward, upward


def test_no_cycles_between_folders() -> None:
    edges = {(source, unit(target)) for _, source, target, _ in imports() if source in LAYERS and unit(target)}
    edges = {(a, b) for a, b in edges if a != b}
    for a, b in itertools.permutations(LAYERS, 2):
        if (a, b) in edges and (b, a) in edges:
            raise AssertionError(f"{a} and {b} import each other")


def test_no_private_name_crosses_a_module() -> None:
    private = [
        f"{where} imports {name} from {target}"
        for where, _, target, names in imports()
        for name in names
        # The compiled kernel is a private extension module, reached only through kernels.quadratic.
        if name.startswith("_") and not (target == "streamgmm.kernels" and name == "_fused")
    ]
    assert not private, private
