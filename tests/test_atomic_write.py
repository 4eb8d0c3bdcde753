"""Outputs written whole or not at all (temporary file + rename), with the permissions any new
file gets: 0666 less the umask, also where the writer replaced the temporary file with its own."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from cascade_rcnn.atomic_write import atomic_path


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_a_written_file_gets_the_umasks_permissions(tmp_path, umask_022):
    with atomic_path(tmp_path / "model.onnx") as temporary:
        temporary.write_bytes(b"graph")
    assert (tmp_path / "model.onnx").read_bytes() == b"graph"
    assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_writer_that_renames_a_private_file_into_place_still_gives_the_umasks(tmp_path, umask_022):
    """torch.hub's download writes a mkstemp file (0600) and moves it over the target."""
    with atomic_path(tmp_path / "weights.pth", suffix=".part") as partial:
        descriptor, private = tempfile.mkstemp(dir=tmp_path)
        os.write(descriptor, b"weights")
        os.close(descriptor)
        shutil.move(private, partial)
    assert (tmp_path / "weights.pth").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    (tmp_path / "metrics.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "metrics.json") as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "metrics.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
