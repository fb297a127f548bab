"""The package's import graph: no cycles of any length, no function-level re-imports, and the layer
diagram of ARCHITECTURE.md equal to the measured module-level imports (read with ``ast``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import import_graph as ig

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lib" / "lowres_clip"


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A tiny package ``pkg`` under ``root`` made of ``files`` (relative path -> source)."""
    pkg = root / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


# ----------------------------------------------------------------------------- the detectors themselves
def test_cycle_detector_finds_a_three_module_cycle(tmp_path):
    """a -> b -> c -> a (relative, ``from . import`` and absolute spellings) is one cycle; d is not in it."""
    pkg = write_package(tmp_path, {
        "a.py": "from .b import thing\n",
        "b.py": "from . import c\n",
        "c.py": "import pkg.a\n",
        "d.py": "from .a import x\n",
    })
    graph = ig.import_graph(pkg)
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.b"] == {"pkg.c"}
    assert ig.strongly_connected(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_cycle_detector_follows_subpackages_and_lazy_imports(tmp_path):
    """A cycle through a subpackage's ``__init__`` and ``from .. import``; one closed by an import inside
    a function counts only in the graph with functions."""
    pkg = write_package(tmp_path, {
        "sub/__init__.py": "from .inner import y\n",
        "sub/inner.py": "from ..top import z\n",
        "top.py": "from .sub import inner\n",
        "lazy_a.py": "from . import lazy_b\n",
        "lazy_b.py": "def f():\n    from . import lazy_a\n",
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import top\n",
    })
    cycles = ig.strongly_connected(ig.import_graph(pkg))
    assert cycles == [["pkg.sub", "pkg.sub.inner", "pkg.top"]]
    with_functions = ig.strongly_connected(ig.import_graph(pkg, functions=True))
    assert ["pkg.lazy_a", "pkg.lazy_b"] in with_functions
    assert ig.import_graph(pkg)["pkg.typed"] == set()


def test_cycle_detector_accepts_a_chain(tmp_path):
    pkg = write_package(tmp_path, {"a.py": "from . import b\n", "b.py": "from .c import x\n", "c.py": "import os\n"})
    assert ig.strongly_connected(ig.import_graph(pkg)) == []


def test_redundant_import_scan_finds_reimports(tmp_path):
    pkg = write_package(tmp_path, {
        "m.py": ("import json\nfrom .n import a\n\n"
                 "def f():\n    import json\n\n"          # the same name
                 "def g():\n    from .n import b\n\n"     # from a module already imported
                 "def h():\n    import torch\n    from . import other\n"),  # lazy on purpose: fine
        "n.py": "a = b = 1\n",
        "other.py": "",
    })
    found = ig.redundant_function_imports(pkg)
    assert [line.split(" ")[1] for line in found] == ["f:", "g:"], found


def test_layer_checks_catch_an_upward_import_and_a_missing_module(tmp_path):
    pkg = write_package(tmp_path, {"low.py": "from . import high\n", "high.py": "", "sub/__init__.py": "",
                                   "sub/x.py": ""})
    text = "## Layers\n```\n| high.py sub/   top\n| low.py         bottom\n```\n"
    layers = ig.diagram_layers(text)
    assert [layer.modules for layer in layers] == [("high.py", "sub/"), ("low.py",)]
    modules = set(ig.module_files(pkg))
    where, problems = ig.layer_of_modules(layers, modules, "pkg")
    assert problems == [] and where["pkg.sub.x"] == 0
    assert ig.upward_imports(ig.import_graph(pkg), where) == ["pkg.low (layer 1) imports pkg.high (layer 0)"]
    _, problems = ig.layer_of_modules(ig.diagram_layers("## Layers\n```\n| high.py ghost.py\n| high.py\n```\n"),
                                      modules, "pkg")
    assert "ghost.py (layer 0) is no module of pkg" in problems
    assert "pkg.high is in 2 layers" in problems and "pkg.low is in 0 layers" in problems


# ----------------------------------------------------------------------------- the package
def test_no_import_cycles():
    """No cycle of any length among the package's module-level imports, nor with the imports inside
    functions counted too."""
    assert ig.strongly_connected(ig.import_graph(PACKAGE)) == []
    assert ig.strongly_connected(ig.import_graph(PACKAGE, functions=True)) == []


def test_no_function_reimports_a_top_level_import():
    """A function-level import defers something; one of a name or module the module already imports
    at top level defers nothing."""
    assert ig.redundant_function_imports(PACKAGE) == []


@pytest.fixture(scope="module")
def layers():
    return ig.diagram_layers((REPO / "ARCHITECTURE.md").read_text())


def test_architecture_diagram_lists_every_module_once(layers):
    assert len(layers) > 5
    _, problems = ig.layer_of_modules(layers, set(ig.module_files(PACKAGE)), "lowres_clip")
    assert problems == []


def test_architecture_diagram_matches_the_import_graph(layers):
    """Every module-level import inside the package goes to the importer's layer or a lower one."""
    where, _ = ig.layer_of_modules(layers, set(ig.module_files(PACKAGE)), "lowres_clip")
    assert ig.upward_imports(ig.import_graph(PACKAGE), where) == []
