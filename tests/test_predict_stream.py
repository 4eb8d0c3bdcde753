"""Predict over many images: streamed to JSON lines as it goes, resumed after a kill to the same
predictions.json, read ahead in threads, and sharded over 2 torchrun processes (gloo) to the same
file as one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_confident, tiny_model

import cascade_rcnn
from cascade_rcnn.engine.predict import predict_files
from cascade_rcnn.weights import checkpoint

SMALL = "cascade_mask_rcnn_r18w32_fpn_256"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """7 small pictures of a few sizes (two share a stem in a subfolder) and one corrupt file."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for index, name in enumerate(["a.png", "b.png", "c.jpg", "d.png", "e.png", "f.png", "sub/a.png"]):
        height, width = (48, 64) if index % 2 else (70, 50)
        cv2.imwrite(str(root / name), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    return root


@pytest.fixture(scope="module")
def model():
    detector = tiny_model(with_mask=True)
    make_confident(detector, mask_logit=1.0)
    return detector


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_streams_one_line_per_image_and_writes_the_coco_results(folder, model, tmp_path):
    report = predict_files(model, [folder], tmp_path, score_thr=0.05, show_progress=False)
    assert report.done == 7 and [name for name, _ in report.failures] == [str(folder / "broken.png")]
    streamed = lines(tmp_path / "predictions.jsonl")
    assert [Path(line["file_name"]).relative_to(folder).as_posix() for line in streamed] == [
        "a.png", "b.png", "c.jpg", "d.png", "e.png", "f.png", "sub/a.png"]
    records = json.loads((tmp_path / "predictions.json").read_text())
    assert records == [{"file_name": line["file_name"], **d} for line in streamed for d in line["detections"]]
    assert len(records) > 7 and {"category_id", "bbox", "score", "segmentation"} <= set(records[0])
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        ["a.png", "a_1.png", "b.png", "c.png", "d.png", "e.png", "f.png"])


def test_killed_and_resumed_gives_the_same_predictions_json(folder, model, tmp_path, monkeypatch):
    predict_files(model, [folder], tmp_path / "full", score_thr=0.05, show_progress=False)
    expected = (tmp_path / "full" / "predictions.json").read_bytes()

    out = tmp_path / "killed"
    calls = []
    original = model.predict

    def dies_at_the_fourth_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "predict", dies_at_the_fourth_image)
    with pytest.raises(KeyboardInterrupt):
        predict_files(model, [folder], out, score_thr=0.05, show_progress=False, read_workers=2)
    monkeypatch.setattr(model, "predict", original)
    assert len(lines(out / "predictions.jsonl")) == 3 and not (out / "predictions.json").exists()
    with open(out / "predictions.jsonl", "a") as stream:  # a line cut short by the kill
        stream.write('{"file_name": "' + str(folder / "d.png") + '", "detections": [{"categ')

    report = predict_files(model, [folder], out, score_thr=0.05, show_progress=False, resume=True)
    assert (report.done, report.resumed) == (4, 3)
    assert (out / "predictions.json").read_bytes() == expected
    assert len(lines(out / "predictions.jsonl")) == 7
    assert len(list(out.glob("*.png"))) == 7


def test_a_fresh_run_replaces_old_streams_and_read_ahead_changes_nothing(folder, model, tmp_path):
    (tmp_path / "predictions.rank3.jsonl").write_text('{"file_name": "old.png", "detections": []}\n')
    predict_files(model, [folder], tmp_path / "serial", score_thr=0.05, show_progress=False, read_workers=0)
    predict_files(model, [folder], tmp_path, score_thr=0.05, show_progress=False, read_workers=3, batch_size=2)
    assert not (tmp_path / "predictions.rank3.jsonl").exists()
    assert (tmp_path / "predictions.json").read_bytes() == (tmp_path / "serial" / "predictions.json").read_bytes()


def test_two_process_sharded_predict_equals_one_process(folder, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "small.pth"
    checkpoint.save(weights, cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(SMALL)))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    arguments = ["-m", "cascade_rcnn", "predict", str(folder), "--model", SMALL, "--weights", str(weights),
                 "--score-thr", "0", "--no-draw"]
    single = subprocess.run([sys.executable, *arguments, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=environment, timeout=300)
    assert single.returncode == 1 and "broken.png" in single.stderr, single.stderr[-3000:]
    sharded = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              *arguments, "--out", str(tmp_path / "two")],
                             capture_output=True, text=True, env=environment, timeout=300)
    # exit status 1 on every rank (the corrupt file), which torchrun reports as failed ranks
    assert sharded.returncode == 1 and "7 image(s) done, 1 failed" in sharded.stdout, sharded.stderr[-3000:]
    assert sharded.stderr.count("broken.png: not a readable image") == 1
    parts = [lines(tmp_path / "two" / f"predictions.rank{rank}.jsonl") for rank in (0, 1)]
    assert [len(part) for part in parts] == [3, 4]  # 8 inputs dealt round-robin; broken.png is rank 0's
    expected = (tmp_path / "one" / "predictions.json").read_bytes()
    assert len(json.loads(expected)) > 7
    assert (tmp_path / "two" / "predictions.json").read_bytes() == expected
