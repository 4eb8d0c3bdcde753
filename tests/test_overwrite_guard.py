"""Nothing lost: no command writes over one of its inputs or over a previous run's results.

Each refusal is one line on stderr with status 2, and the files it protects keep their bytes and
their modification times."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.weights import checkpoint, zoo

SMALL = "cascade_mask_rcnn_r18w32_fpn_256"
RANDOM = ["--model", SMALL, "--weights", "none"]
FAST = [*RANDOM, "--set", "image_scale=128,96", "test_proposals=20"]  # predict: seconds, not minutes


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and modification time (ns)."""
    return {path.relative_to(root).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}


def write_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((48, 64, 3), value, np.uint8))


def refused(capsys, *needles: str) -> str:
    """The one error line of a refused command, checked to name ``needles``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(needle in lines[0] for needle in needles), lines[0]
    return lines[0]


@pytest.fixture
def photos(tmp_path) -> Path:
    """a.png, c.jpg and c.png: c.jpg's drawing would be named c.png."""
    folder = tmp_path / "photos"
    for name, value in (("a.png", 10), ("c.jpg", 90), ("c.png", 200)):
        write_image(folder / name, value)
    return folder


# --- predict ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("out", ["same", "symlink", "dotdot"])
def test_predict_refuses_its_input_folder_as_out(photos, tmp_path, capsys, out):
    given = {"same": str(photos), "dotdot": str(photos / ".." / "photos"), "symlink": str(tmp_path / "link")}[out]
    (tmp_path / "link").symlink_to(photos)
    before = snapshot(photos)
    assert main(["predict", str(photos), *FAST, "--out", given]) == 2
    refused(capsys, f"--out {given} is the input ", "give another --out")
    assert snapshot(photos) == before


@pytest.mark.parametrize("case", ["file inside out", "out inside the folder, holding images"])
def test_predict_refuses_an_out_that_holds_an_input(photos, tmp_path, capsys, case):
    if case == "file inside out":
        inputs, out = [str(photos / "a.png")], photos
    else:  # photos/misc/b.png is an image of the folder: its drawing would be photos/misc/b.png
        write_image(photos / "misc" / "b.png", 150)
        inputs, out = [str(photos)], photos / "misc"
    before = snapshot(photos)
    assert main(["predict", *inputs, *FAST, "--out", str(out)]) == 2
    refused(capsys, f"--out {out} holds the input {photos}/")
    assert snapshot(photos) == before


def test_predict_never_reads_its_own_output_folder_back_as_input(photos, monkeypatch, capsys):
    monkeypatch.chdir(photos)  # the default --out predictions lands inside the folder predicted
    assert main(["predict", ".", *FAST]) == 0
    assert sorted(p.name for p in (photos / "predictions").glob("*.png")) == ["a.png", "c.png", "c_1.png"]
    for again in (["--resume"], ["--overwrite"]):
        assert main(["predict", ".", *FAST, *again]) == 0
        streamed = [json.loads(line)["file_name"] for line in (photos / "predictions" / "predictions.jsonl").open()]
        assert streamed == ["a.png", "c.jpg", "c.png"]  # the drawings were not predicted
        assert "note: predictions left out: a predict output folder" in capsys.readouterr().err


def test_predict_refuses_a_previous_run_without_resume_or_overwrite(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(photos), *FAST, "--out", str(out)]) == 0
    before = snapshot(out)
    assert main(["predict", str(photos), *FAST, "--out", str(out)]) == 2
    refused(capsys, f"--out {out} holds a previous predict run (predictions.jsonl): --resume finishes it, "
            "--overwrite replaces it, or give a new --out folder")
    assert main(["predict", str(photos), *FAST, "--out", str(out), "--resume", "--overwrite"]) == 2
    refused(capsys, "choose one")
    assert snapshot(out) == before
    assert main(["predict", str(photos), *FAST, "--out", str(out), "--overwrite"]) == 0
    assert (out / "predictions.jsonl").stat().st_mtime_ns > before["predictions.jsonl"][1]


@pytest.mark.parametrize("theirs", ["a.png", "predictions.json"])
def test_predict_writes_over_no_file_of_a_folder_it_did_not_fill(photos, tmp_path, capsys, theirs):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / theirs).write_bytes(b"not ours")
    before = snapshot(out)
    assert main(["predict", str(photos / "a.png"), *FAST, "--out", str(out)]) == 2
    refused(capsys, f"{out / theirs} already exists: it is not from a predict run; give a new or empty --out folder")
    assert snapshot(out) == before


# --- train -----------------------------------------------------------------------------------------

@pytest.fixture
def shapes_set(tmp_path) -> Path:
    generate_shapes(tmp_path / "data", num_images=2, size=96, seed=5)
    return tmp_path / "data"


def train_args(shapes_set: Path, out: Path) -> list[str]:
    return ["train", *RANDOM, "--backbone-weights", "none", "--train-json", str(shapes_set / "annotations.json"),
            "--train-images", str(shapes_set / "images"), "--out", str(out), "--epochs", "1", "--workers", "0"]


def test_train_refuses_a_previous_run_without_resume_or_overwrite(shapes_set, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "latest.pth").write_bytes(b"the earlier run's checkpoint")
    (out / "metrics.jsonl").write_text('{"iteration": 1, "loss": 2.0}\n')
    before = snapshot(out)
    started = []
    monkeypatch.setattr("cascade_rcnn.engine.train.train", lambda model, config: started.append(config))
    assert main(train_args(shapes_set, out)) == 2
    refused(capsys, f"--out {out} holds a previous training run (latest.pth, metrics.jsonl): --resume continues "
            "it, --overwrite replaces it, or give a new --out folder")
    assert started == [] and snapshot(out) == before
    assert main([*train_args(shapes_set, out), "--resume"]) == 0
    assert main([*train_args(shapes_set, out), "--overwrite"]) == 0
    assert [config.resume for config in started] == [True, False]


@pytest.mark.parametrize("case", ["--out is --train-images", "--out holds --weights"])
def test_train_refuses_an_out_that_is_or_holds_its_inputs(shapes_set, tmp_path, capsys, case):
    args = train_args(shapes_set, shapes_set / "images")
    if case == "--out holds --weights":  # fine-tuning the earlier run's weights in its own folder
        torch.manual_seed(0)
        checkpoint.save(tmp_path / "run" / "final.pth",
                        cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(SMALL).with_classes(("circle",))))
        args = [*train_args(shapes_set, tmp_path / "run"), "--weights", str(tmp_path / "run" / "final.pth"),
                "--overwrite"]
    before = snapshot(tmp_path)
    assert main(args) == 2
    refused(capsys, *(["is the input", "(--train-images)"] if case.endswith("images") else
                      ["holds the input", "final.pth (--weights)"]))
    assert snapshot(tmp_path) == before


# --- evaluate, export, convert ---------------------------------------------------------------------

@pytest.mark.parametrize("target", ["--gt-json", "--predictions", "the folder of --gt-json"])
def test_evaluate_writes_its_metrics_over_no_input(shapes_set, tmp_path, capsys, target):
    gt = shapes_set / "annotations.json"
    records = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in json.loads(gt.read_text())["annotations"]]
    (tmp_path / "p.json").write_text(json.dumps(records))
    out = {"--gt-json": gt, "--predictions": tmp_path / "p.json", "the folder of --gt-json": shapes_set}[target]
    before = snapshot(tmp_path)
    assert main(["evaluate", "--gt-json", str(gt), "--predictions", str(tmp_path / "p.json"), "--out", str(out)]) == 2
    refused(capsys, f"--out {out} ", "(--gt-json)" if target != "--predictions" else "(--predictions)")
    assert snapshot(tmp_path) == before


@pytest.fixture
def weights(tmp_path) -> Path:
    """The small model's weights as MMDetection saves them: converting changes the file."""
    torch.manual_seed(0)
    path = tmp_path / "small.pth"
    torch.save({"state_dict": cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(SMALL)).state_dict()}, path)
    return path


def test_export_refuses_to_write_over_its_weights(weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("cascade_rcnn.deploy.export.export_onnx",
                        lambda model, out, **kwargs: Path(out).write_bytes(b"an onnx graph") and out)
    before = snapshot(tmp_path)
    assert main(["export", "--model", SMALL, "--weights", str(weights), "--out", str(weights)]) == 2
    refused(capsys, f"--out {weights} is the input {weights} (--weights)")
    assert snapshot(tmp_path) == before


def test_convert_refuses_to_write_over_its_source(weights, tmp_path, capsys):
    before = snapshot(tmp_path)
    assert main(["convert", str(weights), str(weights), "--model", SMALL]) == 2
    refused(capsys, f"OUT {weights} is the input {weights} (CHECKPOINT)")
    assert main(["convert", str(weights), os.path.relpath(weights), "--model", SMALL]) == 2
    refused(capsys, "(CHECKPOINT)")
    assert snapshot(tmp_path) == before


# --- shapes, demo, download ------------------------------------------------------------------------

def test_shapes_refuses_a_folder_holding_a_data_set(tmp_path, capsys):
    assert main(["shapes", str(tmp_path / "set"), "--num-images", "3", "--size", "64"]) == 0
    before = snapshot(tmp_path)
    assert main(["shapes", str(tmp_path / "set"), "--num-images", "2", "--size", "64", "--seed", "1"]) == 2
    refused(capsys, f"{tmp_path / 'set' / 'annotations.json'} already exists: shapes would write a data set over it")
    assert snapshot(tmp_path) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("mine")
    assert main(["shapes", str(tmp_path / "notes"), "--num-images", "1", "--size", "64"]) == 0  # nothing in the way
    assert (tmp_path / "notes" / "readme.txt").read_text() == "mine"


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path, monkeypatch, capsys):
    def went_ahead(*args, **kwargs):
        raise AssertionError("the demo started writing")

    monkeypatch.setattr("cascade_rcnn.engine.demo.generate_demo_data", went_ahead)
    (tmp_path / "metrics.json").write_text('{"bbox": {"AP": 54.2}}')  # the earlier demo's result
    before = snapshot(tmp_path)
    assert main(["demo", "--out", str(tmp_path)]) == 2
    refused(capsys, f"{tmp_path} is a folder that is not empty: the demo would write a new run over it")
    assert snapshot(tmp_path) == before


def test_download_rewrites_no_file_already_in_the_cache(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CASCADE_RCNN_CACHE", str(cache))
    cache.mkdir()
    good, damaged = b"the published file", b"half a file"
    names = [f"good-{hashlib.sha256(good).hexdigest()[:8]}.pth", "damaged-0123abcd.pth"]
    (cache / names[0]).write_bytes(good)
    (cache / names[1]).write_bytes(damaged)
    before = snapshot(cache)

    def no_network(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    for name, status in zip(names, (0, 1)):
        monkeypatch.setitem(zoo.MODEL_ZOO, SMALL, dataclasses.replace(zoo.MODEL_ZOO[SMALL],
                                                                      url=f"http://127.0.0.1:9/{name}"))
        assert main(["download", SMALL]) == status
    assert "in the cache but fails its hash check" in capsys.readouterr().err
    assert snapshot(cache) == before
