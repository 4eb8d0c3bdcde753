"""The README's and the docs' examples cannot go stale: every ``python`` block runs (a page's
blocks in order, in one namespace, as a reader would type them), every ``cascade-rcnn`` line of a
``bash`` block parses with the command line's own parser, and ``mkdocs build --strict`` passes.

The examples name files a reader has: ``street.jpg``, ``make demo``'s ``demo_output/`` (its
shapes images and ``train/final.pth``) and the zoo checkpoint of ``cascade_mask_rcnn_r50_fpn_1x_coco``.
The test lays them out in a temporary folder, the zoo file as a seeded random checkpoint of the
right architecture in ``$CASCADE_RCNN_CACHE`` (looked up before any download), so nothing is
fetched. A block that cannot run here is marked in the markdown just before it:
``<!-- example: needs-network -->`` (skipped), ``<!-- example: needs-package NAME -->`` (skipped
without NAME).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import cascade_rcnn
from cascade_rcnn.benchmarking.synthetic import drawn_scene
from cascade_rcnn.cli import parser
from cascade_rcnn.data.shapes import SHAPE_CLASSES, generate_shapes
from cascade_rcnn.weights import checkpoint
from cascade_rcnn.weights.download import cached_path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^(?:<!-- example: (?P<marker>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```$", re.S | re.M)
ZOO_EXAMPLE = "cascade_mask_rcnn_r50_fpn_1x_coco"  # the README's zoo model
DEMO_MODEL = "cascade_mask_rcnn_r18w32_fpn_256"


def blocks(lang: str) -> list[tuple[str, str | None, str]]:
    """(``page:line`` of the fence, marker, code) of every ``lang`` block, pages in order."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            if match["lang"] == lang:
                line = text.count("\n", 0, match.start("lang")) + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match["marker"], match["code"]))
    return found


PYTHON_BLOCKS = blocks("python")


@pytest.fixture(scope="module")
def reader_files(tmp_path_factory):
    """The working folder the examples expect, as cwd, with the cache and the Hub offline."""
    folder = tmp_path_factory.mktemp("reader")
    Image.fromarray(drawn_scene(480, 640)).save(folder / "street.jpg")
    generate_shapes(folder / "demo_output" / "data" / "val", num_images=2, size=256, seed=1)
    torch.manual_seed(0)
    (folder / "demo_output" / "train").mkdir()
    demo_config = cascade_rcnn.get_config(DEMO_MODEL).with_classes(SHAPE_CLASSES, range(1, len(SHAPE_CLASSES) + 1))
    checkpoint.save(folder / "demo_output" / "train" / "final.pth", cascade_rcnn.CascadeRCNN(demo_config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASCADE_RCNN_CACHE", str(folder / "cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.chdir(folder)
        zoo_file = cached_path(cascade_rcnn.get_config(ZOO_EXAMPLE).url)
        zoo_file.parent.mkdir()
        checkpoint.save(zoo_file, cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(ZOO_EXAMPLE)))
        yield {}  # each page's namespace, by page


@pytest.mark.parametrize("where, marker, code", PYTHON_BLOCKS, ids=[where for where, _, _ in PYTHON_BLOCKS])
def test_python_example_runs(where, marker, code, reader_files):
    if marker == "needs-network":
        pytest.skip(f"{where}: needs the network (marked in the page)")
    if marker is not None and marker.startswith("needs-package "):
        pytest.importorskip(marker.split()[1], reason=f"{where}: needs {marker.split()[1]} (marked in the page)")
    elif marker is not None:
        pytest.fail(f"{where}: unknown example marker {marker!r}")
    namespace = reader_files.setdefault(where.split(":")[0], {"__name__": "__example__"})
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, where, "exec"), namespace)


def command_lines(code: str) -> list[str]:
    """A bash block's commands: a line and the indented lines under it (``\\`` continuations and
    wrapped usage lines), comments dropped."""
    commands: list[str] = []
    for line in code.splitlines():
        line = re.sub(r"\s+#.*$|^#.*$", "", line).rstrip(" \\")
        if line[:1].isspace() and commands:
            commands[-1] += " " + line.strip()
        elif line:
            commands.append(line)
    return commands


CLI_LINES = [(where, line) for where, _, code in blocks("bash") for line in command_lines(code)
             if re.search(r"(^|\s)(cascade-rcnn|-m cascade_rcnn)\s", line)]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    root = parser()
    (choices,) = [action.choices for action in root._actions if isinstance(action, argparse._SubParsersAction)]
    return choices


@pytest.mark.parametrize("where, line", CLI_LINES, ids=[f"{where}:{line[:60]}" for where, line in CLI_LINES])
def test_cli_example_parses(where, line):
    """A concrete command parses as given; a usage line (``[...]``, ``A|B``, ``...``) names an
    existing subcommand and only options it has."""
    words = re.split(r"(?:cascade-rcnn|-m cascade_rcnn)\s+", line, maxsplit=1)[1]
    if re.search(r"\[|\||\.\.\.", words):
        name = next(word for word in words.split() if not word.startswith("--"))
        command = subcommands().get(name)
        assert command is not None, f"{where}: no subcommand {name!r}: {line}"
        unknown = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", words)) - set(command._option_string_actions) - {"--debug"}
        assert not unknown, f"{where}: {name} has no option {sorted(unknown)}: {line}"
        return
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser().parse_args(shlex.split(words))
    except SystemExit:
        pytest.fail(f"{where}: does not parse: {line}\n{errors.getvalue()}")


def test_readme_links_exist():
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).is_file(), f"README.md links to a missing file: {target}"


@pytest.mark.skipif(not all(importlib.util.find_spec(name) for name in ("mkdocs", "material", "mkdocstrings")),
                    reason="mkdocs, mkdocs-material or mkdocstrings is not installed (the test extra has them)")
def test_site_builds_strictly(tmp_path):
    """Broken links or anchors, a page missing from the nav or a nav entry without a page, and an
    API entry whose object is gone all fail the strict build."""
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                            str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                           capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "api" / "index.html").read_text().count('id="cascade_rcnn.build_model"') == 1
