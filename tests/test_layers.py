"""The package's layers, as docs/architecture.md's Layout section states them: each imports only layers
listed before it, so there is no import cycle between packages, and the network does no I/O."""
from __future__ import annotations

import re
from pathlib import Path

import cascade_rcnn

PACKAGE = Path(cascade_rcnn.__file__).parent
# Each layer with the layers it may import (that section's order: errors, atomic_write <- ops <- models <-
# mmdet_config, detectron2_config <- data, weights <- outputs <- inference <- deploy, api <- benchmarking,
# engine <- cli).
ORDER = ["errors", "atomic_write", "ops", "models", "mmdet_config", "detectron2_config", "data", "weights", "outputs",
         "inference", "deploy", "api", "benchmarking", "engine", "cli"]
SAME_RANK = [{"errors", "atomic_write"}, {"mmdet_config", "detectron2_config"}, {"data", "weights"}, {"deploy", "api"},
             {"benchmarking", "engine"}]


def imported_layers(layer: str) -> set[str]:
    """The top-level parts of the package that ``layer`` (a subpackage or root module) imports."""
    files = list((PACKAGE / layer).rglob("*.py")) if (PACKAGE / layer).is_dir() else [PACKAGE / f"{layer}.py"]
    found = set()
    for file in files:
        depth = len(file.relative_to(PACKAGE).parts) - 1  # folders between the package and the file
        for dots, name in re.findall(r"^\s*from (\.+)([\w.]*) import", file.read_text(), re.MULTILINE):
            up = len(dots) - 1
            if up == depth and name:  # relative to the package root: a top-level part
                found.add(name.split(".")[0])
    return found - {layer}


def test_every_layer_imports_only_layers_below_it():
    for layer in ORDER:
        below = set(ORDER[:ORDER.index(layer)]) - next((rank for rank in SAME_RANK if layer in rank), set())
        assert imported_layers(layer) <= below, f"{layer} imports {sorted(imported_layers(layer) - below)}"


def test_the_network_and_its_ops_do_no_io():
    for layer in ("ops", "models"):
        text = "\n".join(f.read_text() for f in (PACKAGE / layer).rglob("*.py"))
        for module in ("cv2", "PIL", "pathlib", "json", "..data"):
            assert not re.search(rf"^\s*(import|from) {re.escape(module)}\b", text, re.MULTILINE), (layer, module)
