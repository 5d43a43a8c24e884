"""The package's folders are its layers: every import points down (or sideways, within a layer,
without cycles), and no module imports another's private names."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(graph)
LAYERS, PACKAGE, imports, unit = graph.LAYERS, graph.PACKAGE, graph.imports, graph.unit


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
    edges = graph.edges()
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


def test_the_design_document_draws_the_current_imports() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    assert graph.drawing() in design, "docs/design.md: paste the output of scripts/import_graph.py"
