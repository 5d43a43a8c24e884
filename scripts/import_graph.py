"""The package's imports between folders, drawn as layers: each folder (each concept) with the
folders it imports, from the applications down to the mixture math.

``tests/test_layers.py`` checks with this module's ``LAYERS`` that every import points down and
that no folders import each other, and that ``docs/design.md`` holds the current drawing.

    .venv/bin/python scripts/import_graph.py
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamgmm"

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


def imports() -> list[tuple[str, str | None, str, list[str]]]:
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


def edges() -> set[tuple[str, str]]:
    """(importing folder, imported folder) for every import between two folders."""
    pairs = {(source, unit(target)) for _, source, target, _ in imports() if source in LAYERS}
    return {(a, b) for a, b in pairs if b in LAYERS and a != b}


def drawing() -> str:
    """The layers top-down, each folder with the folders it imports (the text in design.md)."""
    graph = edges()
    lines = []
    for folder in sorted(LAYERS, key=lambda name: (LAYERS[name], name)):
        below = sorted((b for a, b in graph if a == folder), key=lambda name: (LAYERS[name], name))
        lines.append(f"{folder:<14} -> {', '.join(below) if below else '(nothing)'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(drawing())
