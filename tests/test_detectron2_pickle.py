"""Detectron2's model-zoo ``.pkl`` files: numpy arrays and plain containers load, anything else is
refused in one line before it is imported or called."""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cascade_rcnn.weights import checkpoint
from cascade_rcnn.weights.errors import CheckpointError
from cascade_rcnn.weights.pickle_reader import load_numpy_pickle, read_pkl_checkpoint

# A pickle written by Detectron2's reference script (numpy 2, protocol 4) with the same weights as
# a .pth beside it (../shared/golden/vitdet_cascade_mask_rcnn_tiny/README.md).
VITDET_GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "vitdet_cascade_mask_rcnn_tiny"


class RunsCommand:
    """Unpickling it calls ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def zoo_style(rng: np.random.Generator) -> dict:
    model = {"backbone.bottom_up.stem.conv1.weight": rng.standard_normal((4, 3, 7, 7)).astype(np.float32),
             "roi_heads.box_predictor.0.cls_score.bias": rng.standard_normal(5).astype(np.float32),
             "pixel_mean": np.array([103.53, 116.28, 123.675]).reshape(3, 1, 1),
             "counts": np.arange(6, dtype=np.int64).reshape(2, 3),
             "big_endian": np.arange(3, dtype=">f4")}
    return {"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True,
            "scale": np.float32(0.5)}


def write(path: Path, content, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


def one_line_error(call, path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        call(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize("protocol, numpy1_names", [(2, False), (2, True), (4, False), (5, False)])
def test_a_zoo_style_pickle_loads_with_its_arrays_as_tensors(tmp_path, rng, protocol, numpy1_names):
    content = zoo_style(rng)
    path = write(tmp_path / "model_final_abc123.pkl", content, protocol)
    if numpy1_names:  # as numpy 1 wrote them (protocol 2 names globals as plain lines of text)
        path.write_bytes(path.read_bytes().replace(b"numpy._core.", b"numpy.core."))
        assert b"numpy.core.multiarray\n_reconstruct" in path.read_bytes()
    loaded = read_pkl_checkpoint(path)

    assert loaded["__author__"] == "Detectron2 Model Zoo" and loaded["matching_heuristics"] is True
    assert loaded["scale"] == np.float32(0.5)
    assert set(loaded["model"]) == set(content["model"])
    for name, array in content["model"].items():
        tensor = loaded["model"][name]
        assert isinstance(tensor, torch.Tensor) and tensor.shape == array.shape
        assert np.array_equal(tensor.numpy(), array), name
    assert loaded["model"]["counts"].dtype == torch.int64
    assert loaded["model"]["big_endian"].tolist() == [0.0, 1.0, 2.0]  # stored big-endian, read natively


def test_a_pickle_that_would_run_a_command_is_refused_and_runs_nothing(tmp_path, rng):
    marker = tmp_path / "marker"
    content = zoo_style(rng)
    content["model"]["backbone.bottom_up.stem.conv1.norm.weight"] = RunsCommand(marker)
    path = write(tmp_path / "model.pkl", content)

    message = one_line_error(load_numpy_pickle, path)
    assert message == (f"{path}: refuses to load '{os.system.__module__}.system' (a Detectron2 checkpoint "
                       "holds only numpy arrays)")
    assert not marker.exists()
    # The same through the generic reader (what build_model(weights=...) calls).
    one_line_error(checkpoint.read, path)
    one_line_error(checkpoint.read_detectron2_state_dict, path)
    assert not marker.exists()


def test_an_unknown_class_is_refused_without_importing_its_module(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "d2_test_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Layer:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # {"model": Layer()} as protocol 2 writes it, by hand: the module must not be imported to write it.
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01cd2_test_plugin\nLayer\nq\x02)\x81q\x03s.")

    message = one_line_error(load_numpy_pickle, path)
    assert "refuses to load 'd2_test_plugin.Layer'" in message
    assert "d2_test_plugin" not in sys.modules and not marker.exists()


class Calls:
    """Unpickling it calls ``function(*args)`` (pickled by name, never called here)."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_an_array_built_other_than_numpy_builds_one_is_refused(tmp_path):
    reconstruct = np.empty(0).__reduce__()[0]  # numpy's own, under its version's module name
    path = write(tmp_path / "model.pkl", {"model": Calls(reconstruct, np.ndarray, (10**12,), b"b")})  # a terabyte
    assert "an array built otherwise than numpy pickles one" in one_line_error(load_numpy_pickle, path)


def test_an_array_of_objects_is_not_read_as_weights(tmp_path):
    path = write(tmp_path / "model.pkl", {"model": {"names": np.array(["a", "b"], dtype=object)}})
    assert one_line_error(read_pkl_checkpoint, path) == f"{path}: model.names is an array of object, not of numbers"


@pytest.mark.parametrize("damage, expected", [
    ("empty", "an empty file, not a Detectron2 .pkl checkpoint"),
    ("truncated", "not a readable Detectron2 .pkl checkpoint (pickle data was truncated)"),
    ("garbage", "not a readable Detectron2 .pkl checkpoint ("),  # pickle's own reason follows, in one line
])
def test_a_damaged_pkl_is_one_clear_line(tmp_path, rng, damage, expected):
    whole = pickle.dumps(zoo_style(rng), protocol=4)
    content = {"empty": b"", "truncated": whole[:len(whole) // 2], "garbage": b"PK\x03\x04 a zip, not a pickle"}[damage]
    path = tmp_path / "model.pkl"
    path.write_bytes(content)
    assert expected in one_line_error(checkpoint.read, path)


def test_a_file_larger_than_any_checkpoint_is_refused_unread(tmp_path, monkeypatch):
    path = write(tmp_path / "model.pkl", {"model": {}})
    monkeypatch.setattr("cascade_rcnn.weights.pickle_reader.MAX_BYTES", path.stat().st_size - 1)
    assert "larger than any Detectron2 checkpoint" in one_line_error(load_numpy_pickle, path)


@pytest.mark.skipif(not (VITDET_GOLDEN / "checkpoint.pkl").is_file(),
                    reason=f"Detectron2 golden data not found at {VITDET_GOLDEN}")
def test_a_pkl_written_by_detectron2s_own_tools_reads_like_its_pth():
    loaded = read_pkl_checkpoint(VITDET_GOLDEN / "checkpoint.pkl")
    expected = torch.load(VITDET_GOLDEN / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    assert "__author__" in loaded
    assert list(loaded["model"]) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(loaded["model"][name], tensor), name
