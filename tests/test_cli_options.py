"""Every command-line option reaches the engine with its value: each test runs ``main()`` with the
option and without it, the engine function replaced by a recorder (nothing trains, predicts,
exports or downloads), and asserts that the recorded value is the option's and differs from what
runs without it (so an option that ``main()`` dropped fails)."""
from __future__ import annotations

from pathlib import Path

import pytest

from cascade_rcnn.cli import main
from cascade_rcnn.engine.demo import DemoSettings
from cascade_rcnn.engine.predict import PredictReport
from cascade_rcnn.weights.zoo import MODEL_ZOO

SMALL = "cascade_mask_rcnn_r18w32_fpn_256"


def recorder(monkeypatch, target: str, result=None) -> list[tuple[tuple, dict]]:
    """Replace the function at dotted ``target`` by one that records its (args, kwargs) and returns
    ``result`` (called with the arguments when callable)."""
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return result(*args, **kwargs) if callable(result) else result

    monkeypatch.setattr(target, record)
    return calls


# --- train ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, field, value", [
    (["--resume"], "resume", True),
    (["--schedule", "20e"], "schedule", "20e"),
    (["--lr-steps", "3", "5"], "lr_steps", (3, 5)),
    (["--weight-decay", "0.003"], "weight_decay", 0.003),
    (["--clip-grad", "7.5"], "clip_grad", 7.5),
    (["--checkpoint-every", "9"], "checkpoint_every", 9),
    (["--keep-empty"], "filter_empty_gt", False),
    (["--min-size", "12"], "min_size", 12),
    (["--max-failed-fraction", "0.25"], "max_failed_fraction", 0.25),
    (["--precision", "bf16"], "precision", "bf16"),
])
def test_train_options_reach_the_trainers_config(option, field, value, tmp_path, monkeypatch):
    calls = recorder(monkeypatch, "cascade_rcnn.engine.train.train", lambda model, config: Path("final.pth"))
    base = ["train", "--model", SMALL, "--train-json", str(tmp_path / "t.json"), "--train-images",
            str(tmp_path / "images"), "--out", str(tmp_path / "run")]
    assert main(base) == 0
    assert main([*base, *option]) == 0
    without, given = calls[0][0][1], calls[1][0][1]
    assert getattr(given, field) == value
    assert getattr(without, field) != value
    # only that field changed: the option did not land on another one as well
    assert {k: v for k, v in vars(given).items() if k != field} == {k: v for k, v in vars(without).items()
                                                                    if k != field}


# --- predict ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, keyword, value, default", [
    (["--resume"], "resume", True, False),
    (["--read-workers", "3"], "read_workers", 3, None),
])
def test_predict_options_reach_predict_files(option, keyword, value, default, tmp_path, monkeypatch, capsys):
    calls = recorder(monkeypatch, "cascade_rcnn.engine.predict.predict_files",
                     PredictReport(done=1, json_path=tmp_path / "out" / "predictions.json"))
    base = ["predict", str(tmp_path / "a.png"), "--model", SMALL, "--weights", "none", "--out", str(tmp_path / "out")]
    assert main(base) == 0
    assert main([*base, *option]) == 0
    assert [kwargs[keyword] for _, kwargs in calls] == [default, value]


# --- export -----------------------------------------------------------------------------------------

def test_export_opset_reaches_the_exporter(tmp_path, monkeypatch, capsys):
    calls = recorder(monkeypatch, "cascade_rcnn.deploy.export.export_onnx", lambda model, out, **kwargs: out)
    base = ["export", "--model", SMALL, "--weights", "none", "--out", str(tmp_path / "m.onnx")]
    assert main(base) == 0
    assert main([*base, "--opset", "18"]) == 0
    assert [kwargs["opset"] for _, kwargs in calls] == [17, 18]


# --- download: the fetcher is replaced, nothing reaches the network ---------------------------------

@pytest.fixture
def fetched(tmp_path, monkeypatch) -> list[str]:
    """The URLs ``download`` asks the fetcher for, in order; each "downloaded" into tmp_path."""
    monkeypatch.setenv("CASCADE_RCNN_CACHE", str(tmp_path / "cache"))
    urls = []

    def fetch(url: str, check_hash: bool = False):
        assert check_hash  # download always checks
        urls.append(url)
        return tmp_path / url.rsplit("/", 1)[-1], True

    monkeypatch.setattr("cascade_rcnn.weights.download.fetch", fetch)
    return urls


def test_download_all_fetches_every_published_checkpoint_once(fetched, capsys):
    assert main(["download", "--all"]) == 0
    published = {config.url for config in MODEL_ZOO.values() if config.url}
    assert len(published) >= 30  # the zoo's MMDetection and Detectron2 rows
    assert len(fetched) == len(set(fetched)) and set(fetched) == published
    assert f"{len(published)} file(s) in" in capsys.readouterr().out


def test_download_imagenet_adds_the_backbones_imagenet_file(fetched, capsys):
    name = "cascade_rcnn_r50_fpn_1x_coco"
    assert main(["download", name]) == 0
    assert fetched == [MODEL_ZOO[name].url]
    assert main(["download", name, "--imagenet"]) == 0
    assert fetched[1:] == [MODEL_ZOO[name].url, "https://download.pytorch.org/models/resnet50-0676ba61.pth"]


# --- demo -------------------------------------------------------------------------------------------

def test_the_demo_command_runs_the_demo_into_out_at_its_precision(tmp_path, monkeypatch):
    calls = recorder(monkeypatch, "cascade_rcnn.engine.demo.run_demo", {})
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    assert main(["demo", "--out", str(tmp_path / "demo"), "--precision", "bf16"]) == 0
    assert main(["demo", "--out", str(tmp_path / "demo"), "--from-scratch"]) == 0
    assert [args for args, _ in calls] == [(tmp_path / "demo", DemoSettings()),
                                           (tmp_path / "demo", DemoSettings(precision="bf16")),
                                           (tmp_path / "demo", DemoSettings.from_scratch())]
    assert DemoSettings().init_weights and DemoSettings.from_scratch().init_weights is None
