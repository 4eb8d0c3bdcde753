"""Predict over a video: one JSON line per processed frame, an annotated video of the same fps,
size and length written atomically, --every, batches equal to single frames, a resume after a
kill that gives the same lines and the same video, and broken, empty and truncated files reported
on one line naming them."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_confident, tiny_model

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.data.read_ahead import read_frames
from cascade_rcnn.data.video import VideoError, frames, is_video
from cascade_rcnn.engine.predict import predict_files, predict_video
from cascade_rcnn.weights import checkpoint

FPS, HEIGHT, WIDTH, LENGTH = 10.0, 48, 64, 9


def write_video(path: Path, length: int = LENGTH, codec: str = "MJPG") -> Path:
    """``length`` frames of seeded noise (MJPG in .avi: written by every OpenCV build)."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for _ in range(length):
        writer.write(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    writer.release()
    return path


def decoded(path: Path) -> list[np.ndarray]:
    return [frame.image for frame in frames(path)]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi")


@pytest.fixture(scope="module")
def model():
    detector = tiny_model(with_mask=True)
    make_confident(detector, mask_logit=1.0)
    detector.test_detections = replace(detector.test_detections, max_per_image=8)  # fast mask heads
    return detector


@pytest.fixture(scope="module")
def every_frame(clip, model, tmp_path_factory) -> Path:
    """One uninterrupted run over every frame: the reference of the other tests."""
    out = tmp_path_factory.mktemp("reference")
    report = predict_video(model, clip, out, score_thr=0.05, show_progress=False)
    assert (report.frames, report.failures, report.videos) == (LENGTH, [], [out / "clip.annotated.mp4"])
    return out


def test_one_line_per_frame_and_an_annotated_video_of_the_same_fps_size_and_length(clip, every_frame):
    streamed = lines(every_frame / "predictions.jsonl")
    assert [line["frame"] for line in streamed] == list(range(LENGTH))
    assert [line["timestamp"] for line in streamed] == pytest.approx([i / FPS for i in range(LENGTH)])
    assert {line["file_name"] for line in streamed} == {str(clip)}
    assert all(line["detections"] for line in streamed)
    assert {"category_id", "bbox", "score", "segmentation"} <= set(streamed[0]["detections"][0])
    annotated = cv2.VideoCapture(str(every_frame / "clip.annotated.mp4"))
    assert annotated.get(cv2.CAP_PROP_FPS) == FPS
    pictures = decoded(every_frame / "clip.annotated.mp4")
    assert len(pictures) == LENGTH and pictures[0].shape == (HEIGHT, WIDTH, 3)
    assert sorted(p.name for p in every_frame.iterdir()) == ["clip.annotated.mp4", "predictions.jsonl"]


def test_every_nth_frame_and_batches_equal_single_frames(clip, model, every_frame, tmp_path):
    report = predict_files(model, [clip], tmp_path, score_thr=0.05, show_progress=False, every=3,
                           batch_size=2, read_workers=1)
    streamed = lines(tmp_path / "predictions.jsonl")
    assert report.frames == 3 and [line["frame"] for line in streamed] == [0, 3, 6]
    assert streamed == [lines(every_frame / "predictions.jsonl")[i] for i in (0, 3, 6)]
    assert len(decoded(tmp_path / "clip.annotated.mp4")) == LENGTH  # the frames between carry the last detections

    predict_files(model, [clip], tmp_path / "batched", score_thr=0.05, show_progress=False, batch_size=4,
                  draw_pictures=False, read_workers=0)
    assert (tmp_path / "batched" / "predictions.jsonl").read_bytes() == (
        every_frame / "predictions.jsonl").read_bytes()
    assert not list((tmp_path / "batched").glob("*.mp4"))  # no drawing


def test_killed_and_resumed_gives_the_same_lines_and_video(clip, model, every_frame, tmp_path, monkeypatch):
    calls, original = [], model.predict

    def dies_at_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "predict", dies_at_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        predict_video(model, clip, tmp_path, score_thr=0.05, batch_size=2, show_progress=False, read_workers=1)
    monkeypatch.undo()
    assert len(lines(tmp_path / "predictions.jsonl")) == 4
    assert not list(tmp_path.glob("*.mp4"))  # neither the video nor its temporary file
    with open(tmp_path / "predictions.jsonl", "a") as stream:  # a line cut short by the kill
        stream.write('{"file_name": "' + str(clip) + '", "frame": 4, "timestamp": 0.4, "detections": [{"cat')

    report = predict_video(model, clip, tmp_path, score_thr=0.05, batch_size=2, show_progress=False, resume=True)
    assert (report.frames, report.frames_resumed, report.failures) == (5, 4, [])
    assert lines(tmp_path / "predictions.jsonl") == lines(every_frame / "predictions.jsonl")
    for rebuilt, uninterrupted in zip(decoded(tmp_path / "clip.annotated.mp4"),
                                      decoded(every_frame / "clip.annotated.mp4"), strict=True):
        assert np.array_equal(rebuilt, uninterrupted)

    again = predict_video(model, clip, tmp_path, score_thr=0.05, show_progress=False, resume=True, draw_video=False)
    assert (again.frames, again.frames_resumed) == (0, LENGTH)


def test_a_video_broken_mid_way_keeps_the_frames_before_and_fails(clip, model, tmp_path):
    data = clip.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[:len(data) * 6 // 10])
    report = predict_files(model, [truncated], tmp_path / "out", score_thr=0.05, show_progress=False)
    kept = len(lines(tmp_path / "out" / "predictions.jsonl"))
    assert 0 < kept < LENGTH and report.frames == kept
    [(name, reason)] = report.failures
    assert name == str(truncated) and reason.startswith(f"{truncated}: decoding stopped at frame {kept} of the 9")
    assert "\n" not in reason
    assert len(decoded(tmp_path / "out" / "truncated.annotated.mp4")) == kept


def test_unreadable_and_zero_frame_videos_are_one_line_errors_naming_them(clip, model, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 20)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    zero = write_video(tmp_path / "zero.avi", length=0)
    report = predict_files(model, [junk, empty, zero], tmp_path / "out", score_thr=0.05, show_progress=False)
    assert report.frames == 0 and (tmp_path / "out" / "predictions.jsonl").read_text() == ""
    assert report.failures == [(str(junk), f"{junk}: not a readable video (corrupt, empty or unsupported format)"),
                               (str(empty), f"{empty}: not a readable video (corrupt, empty or unsupported format)"),
                               (str(zero), f"{zero}: holds no frames")]
    assert report.json_path is None and not (tmp_path / "out" / "predictions.json").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predictions.jsonl"]


def test_images_and_a_video_in_one_run(clip, model, every_frame, tmp_path):
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.full((40, 50, 3), 90, np.uint8))
    report = predict_files(model, [image, clip], tmp_path / "out", score_thr=0.05, show_progress=False, every=4)
    assert (report.done, report.frames) == (1, 3)
    records = json.loads(report.json_path.read_text())
    assert records and {r["file_name"] for r in records} == {str(image)}  # the video's frames: in the stream only
    streamed = lines(tmp_path / "out" / "predictions.jsonl")
    assert streamed[1:] == lines(every_frame / "predictions.jsonl")[::4]


def test_reading_frames_ahead_in_a_thread_changes_nothing_and_stops_cleanly(clip):
    assert is_video(clip) and not is_video(Path(__file__))
    serial = list(read_frames(clip, workers=0, decode_every=2))
    ahead = list(read_frames(clip, workers=1, decode_every=2, ahead=2))
    assert [f.index for f in ahead] == list(range(LENGTH)) and [f.image is None for f in ahead] == [
        i % 2 == 1 for i in range(LENGTH)]
    assert all(a.timestamp == s.timestamp and (a.image is None or np.array_equal(a.image, s.image))
               for a, s in zip(ahead, serial, strict=True))
    stream = read_frames(clip, workers=1, ahead=1)
    next(stream)
    stream.close()  # joins the decoding thread: no hang
    [missing] = frames(clip.with_name("missing.avi"))
    assert isinstance(missing, VideoError) and str(missing) == f"{clip.with_name('missing.avi')}: no such file"


def test_cli_every_and_a_truncated_video(clip, tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "small.pth"
    name = "cascade_rcnn_r18w32_fpn_256"
    checkpoint.save(weights, cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(name)))
    arguments = ["predict", "--model", name, "--weights", str(weights), "--score-thr", "0"]
    assert main([*arguments, str(clip), "--out", str(tmp_path / "good"), "--every", "4"]) == 0
    assert [line["frame"] for line in lines(tmp_path / "good" / "predictions.jsonl")] == [0, 4, 8]
    assert (tmp_path / "good" / "clip.annotated.mp4").is_file()
    assert "3 video frame(s) done, 0 failed" in capsys.readouterr().out

    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(clip.read_bytes()[:len(clip.read_bytes()) // 2])
    assert main([*arguments, str(truncated), "--out", str(tmp_path / "bad"), "--every", "4", "--no-draw"]) == 1
    captured = capsys.readouterr()
    [error] = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert str(truncated) in error and "decoding stopped" in error and "Traceback" not in captured.err
    assert not list((tmp_path / "bad").glob("*.mp4"))
    assert main([*arguments, str(clip), "--out", str(tmp_path / "x"), "--every", "0"]) == 2
