"""The command line: what a user types, what they see, what lands on disk, the exit status."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_confident

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.data.shapes import SHAPE_CLASSES, generate_shapes
from cascade_rcnn.engine.evaluate import METRIC_NAMES, PER_IOU
from cascade_rcnn.errors import UserInputError
from cascade_rcnn.weights import checkpoint
from cascade_rcnn.weights.zoo import DETECTRON2_CONFIGS

SMALL = "cascade_mask_rcnn_r18w32_fpn_256"


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "cascade_mask_rcnn_x101_64x4d_fpn_20e_coco" in out and "45.6" in out
    assert "https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn/" in out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # MMDetection's 29, the official Swin repository's 3, Detectron2's 2 ResNet and 6 ViTDet cascades
    assert len([r for r in rows if r["url"]]) == 40
    assert {r["backbone"] for r in rows} >= {"R-50", "R-50-caffe", "X-101-32x8d", "ConvNeXt-T", "Swin-T"}
    assert set(rows[0]) == {"name", "from", "backbone", "neck", "schedule", "box_ap", "mask_ap", "mem_gb", "fps", "url"}
    detectron2 = {r["name"]: r for r in rows if r["from"] == "Detectron2"}
    assert {name: (r["box_ap"], r["mask_ap"]) for name, r in detectron2.items()} == {
        "Misc/cascade_mask_rcnn_R_50_FPN_1x": (42.1, 36.4), "Misc/cascade_mask_rcnn_R_50_FPN_3x": (44.3, 38.5),
        "COCO/cascade_mask_rcnn_vitdet_b_100ep": (54.0, 46.7), "COCO/cascade_mask_rcnn_vitdet_l_100ep": (57.6, 50.0),
        "COCO/cascade_mask_rcnn_vitdet_h_75ep": (58.7, 51.0), "LVIS/cascade_mask_rcnn_vitdet_b_100ep": (43.0, 38.9),
        "LVIS/cascade_mask_rcnn_vitdet_l_100ep": (49.2, 44.5), "LVIS/cascade_mask_rcnn_vitdet_h_100ep": (51.5, 46.6)}
    assert detectron2["Misc/cascade_mask_rcnn_R_50_FPN_3x"]["url"] == (
        "https://dl.fbaipublicfiles.com/detectron2/Misc/cascade_mask_rcnn_R_50_FPN_3x/144998488/model_final_480dd8.pkl")
    assert {r["neck"] for r in rows} == {"FPN", "SimplePyramid"}


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "cascade_rcnn", "models", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == len(cascade_rcnn.MODEL_ZOO)


def test_a_closed_output_pipe_ends_the_command_quietly():
    """`cascade-rcnn models | head -1`: the reader is gone; no "error: [Errno 32] Broken pipe"."""
    command = subprocess.Popen([sys.executable, "-m", "cascade_rcnn", "models"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    command.stdout.close()  # before the command writes a line (importing torch takes far longer)
    assert command.wait(timeout=120) == 141  # 128 + SIGPIPE: what the shell reports for Unix tools
    assert command.stderr.read() == b""


@pytest.mark.parametrize("argv, expected", [
    (["predict", "a.png", "--model", "cascade_rcnn_r50_fpn_1xx"],
     "argument --model: unknown model 'cascade_rcnn_r50_fpn_1xx' (did you mean cascade_rcnn_r50_fpn_1x_coco, "),
    (["export", "--model", "cascade_mask_rcnn_r18w32", "--out", "m.onnx"],
     "(did you mean cascade_mask_rcnn_r18w32_fpn_256, "),
    (["predict", "a.png", "--score-threshold", "0.3"],
     "unrecognized arguments: --score-threshold 0.3 (did you mean --score-thr?)"),
    (["train", "--model", SMALL, "--weight_decay=0.1"],
     "unrecognized arguments: --weight_decay=0.1 (did you mean --weight-decay or --weights?)"),
])
def test_a_mistyped_name_or_option_gets_the_commands_usage_and_the_closest_names(argv, expected, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and expected in err
    assert err.startswith(f"usage: cascade-rcnn {argv[0]} ") and "cascade_mask_rcnn_x101_64x4d_fpn_20e_coco" not in err


def test_help_names_every_command_and_every_default(capsys):
    for argv in (["--help"], ["train", "--help"], ["shapes", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    out = capsys.readouterr().out
    assert "export, convert, download, benchmark" in " ".join(out.split())
    assert "36 (3x)" in out and "(default 200)" in out and "(default 320)" in out and "default 0;" in out


@pytest.fixture
def weights(tmp_path):
    """Our checkpoint of the small project model, seeded."""
    torch.manual_seed(0)
    path = tmp_path / "small.pth"
    checkpoint.save(path, cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(SMALL)))
    return path


def test_predict_reports_bad_inputs_by_name_and_processes_the_rest(tmp_path, weights, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    image = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "good.png"), image)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\x00 not really a jpeg")
    out = tmp_path / "out"
    status = main(["predict", str(folder), str(tmp_path / "missing.png"), "--model", SMALL,
                   "--weights", str(weights), "--out", str(out), "--score-thr", "0"])
    captured = capsys.readouterr()
    assert status == 1
    assert "broken.jpg" in captured.err and "missing.png" in captured.err
    assert "Traceback" not in captured.err
    records = json.loads((out / "predictions.json").read_text())
    assert records and {r["file_name"] for r in records} == {str(folder / "good.png")}
    assert {"category_id", "bbox", "score", "segmentation"} <= set(records[0])
    assert (out / "good.png").is_file() and not (out / "broken.png").exists()
    assert "1 image(s) done, 2 failed" in captured.out and f"pictures: {out}/" in captured.out


def test_predict_succeeds_with_status_zero(tmp_path, weights, capsys):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((64, 64, 3), 127, np.uint8))
    assert main(["predict", str(path), "--model", SMALL, "--weights", str(weights),
                 "--out", str(tmp_path / "out"), "--no-draw"]) == 0
    assert json.loads((tmp_path / "out" / "predictions.json").read_text()) == []
    assert not (tmp_path / "out" / "a.png").exists()
    assert "pictures" not in capsys.readouterr().out  # --no-draw: none were drawn


def test_a_bad_checkpoint_is_one_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "weights.pth"
    bad.write_text("<html>404</html>")
    assert main(["predict", str(tmp_path), "--model", SMALL, "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: an HTML page (a web page downloaded instead of the file?), not a PyTorch checkpoint\n"


def test_a_box_only_checkpoint_in_a_mask_model_is_named(tmp_path, capsys):
    path = tmp_path / "box_only.pth"
    checkpoint.save(path, cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config("cascade_rcnn_r18w32_fpn_256")))
    assert main(["predict", str(tmp_path), "--model", SMALL, "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "roi_head.mask_head" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--model", SMALL, "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_shapes_then_evaluate_ground_truth_as_predictions(tmp_path, capsys):
    assert main(["shapes", str(tmp_path / "data"), "--num-images", "3", "--size", "96", "--seed", "4"]) == 0
    gt_path = tmp_path / "data" / "annotations.json"
    gt = json.loads(gt_path.read_text())
    predictions = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                    "score": 1.0, "segmentation": a["segmentation"]} for a in gt["annotations"]]
    (tmp_path / "p.json").write_text(json.dumps(predictions))
    assert main(["evaluate", "--gt-json", str(gt_path), "--predictions", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "r.json")]) == 0
    metrics = json.loads((tmp_path / "r.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert set(metrics["bbox"]) == set(METRIC_NAMES) | set(PER_IOU)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0) and metrics["segm"]["AP90"] == pytest.approx(1.0)
    assert "AP90" in capsys.readouterr().out


def test_evaluate_a_model_per_stage(tmp_path, capsys):
    """Each row scores its own stage. Every RoI scores the same in every stage (so all stages keep
    the same RoIs through NMS), stage 2's regression moves each box right by 0.1 of its width and
    stage 3's by 0.2 more, and the ground truth is stage 2's detections: stage 2 scores AP 1, stage
    1's boxes overlap the truth at IoU 0.9 / 1.1 = 0.82 (right at the thresholds 0.5 to 0.8: AP
    7/10) and stage 3's at 0.8 / 1.2 = 0.67 (right at 0.5 to 0.65: AP 4/10), as the ensemble's
    (its boxes are stage 3's). Boxes clipped at the image's edges overlap otherwise, so the APs may
    fall short of those, and COCO's 101-point interpolation adds up to ~1e-4 (measured: stage 1
    0.7001, stage 3 0.377 with AP75 0.0009; the same under AVX2 kernels). A trained tiny model's stages
    are not ordered reliably (the model test_train.py overfits scored bbox AP 0.60, 0.74 and 0.52
    for stages 1 to 3, 0.73 together), so the order is built."""
    generate_shapes(tmp_path / "data", num_images=2, size=96, seed=5)
    torch.manual_seed(0)
    name = "cascade_rcnn_r18w32_fpn_256"
    model = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(name).with_classes(SHAPE_CLASSES)).eval()
    make_confident(model, label=1)
    with torch.no_grad():
        for head in model.roi_head.bbox_head:  # every RoI scores the same in every stage: one NMS for all
            head.fc_cls.weight.zero_()
        for stage, shift in ((1, 0.1), (2, 0.2)):  # dx = bias x the stage's x std, in box widths
            regression = model.roi_head.bbox_head[stage].fc_reg
            regression.weight.zero_()
            regression.bias.zero_()
            regression.bias[0] = shift / model.config.stage_stds[stage][0]
    weights = tmp_path / "shapes_model.pth"
    checkpoint.save(weights, model)
    gt = json.loads((tmp_path / "data" / "annotations.json").read_text())
    gt["annotations"] = []
    for image in gt["images"]:
        found = model.predict(str(tmp_path / "data" / "images" / image["file_name"]), stage=1)[0]
        for record in found.to_coco({"image_id": image["id"]}, [c["id"] for c in gt["categories"]]):
            gt["annotations"].append({**record, "id": len(gt["annotations"]) + 1, "iscrowd": 0,
                                      "area": record["bbox"][2] * record["bbox"][3]})
    assert len(gt["annotations"]) > 10
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    assert main(["evaluate", "--gt-json", str(tmp_path / "gt.json"), "--model", name,
                 "--weights", str(weights), "--images", str(tmp_path / "data" / "images"), "--per-stage",
                 "--out", str(tmp_path / "r.json")]) == 0
    metrics = json.loads((tmp_path / "r.json").read_text())
    assert list(metrics) == ["stage 1", "stage 2", "stage 3", "ensemble"]
    box = {name: metrics[name]["bbox"] for name in metrics}
    print({name: {k: round(v[k], 4) for k in ("AP", "AP50", "AP75", "AP90")} for name, v in box.items()})
    assert box["stage 2"]["AP"] == pytest.approx(1.0)
    assert 0.6 <= box["stage 1"]["AP"] <= 0.701 and box["stage 1"]["AP75"] > 0.99 and box["stage 1"]["AP90"] == 0
    assert 0.3 <= box["stage 3"]["AP"] <= 0.401 and box["stage 3"]["AP75"] < 0.01
    assert box["ensemble"] == box["stage 3"]  # stage 3's boxes, and equal scores in every stage
    assert "stage 3" in capsys.readouterr().out


def test_evaluate_on_other_classes_than_the_models_names_the_fix(tmp_path, capsys):
    generate_shapes(tmp_path / "data", num_images=1, size=64, seed=5)
    assert main(["evaluate", "--gt-json", str(tmp_path / "data" / "annotations.json"), "--model", SMALL,
                 "--weights", "none", "--images", str(tmp_path / "data" / "images")]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the note on random weights
    assert last.startswith(f"error: {tmp_path / 'data' / 'annotations.json'}: its categories do not match")
    assert "expected 80 classes" in last and "the file has 5" in last
    assert last.endswith("give its checkpoint (--weights) and, if it carries no class names, --class-names "
                         "NAME,NAME,... (in the order of its class layers)")


def test_evaluate_with_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["evaluate", "--gt-json", str(tmp_path / "gt.json"), "--predictions", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "gt.json" in err and "Traceback" not in err


def test_demo_end_to_end_on_a_few_images(tmp_path, capsys):
    """The demo's whole job, shrunk: data, training with the demo's recipe from the shipped trunk,
    per-stage evaluation of the trained weights, metrics, pictures of the validation images."""
    from cascade_rcnn.engine.demo import DEMO_TRUNK, DemoSettings, run_demo

    settings = DemoSettings(train_images=4, val_images=2, epochs=1, lr_steps=(), warmup_iters=1, eval_every=1)
    metrics = run_demo(tmp_path, settings)
    out = capsys.readouterr().out
    assert f"{DEMO_TRUNK}: holds no roi_head; it starts from a fresh initialisation" in out
    # trained as the settings say: one step of the 4 images, AdamW at the warm-up's first lr
    rows = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    steps, evaluations = [r for r in rows if "loss" in r], [r for r in rows if "eval" in r]
    assert len(steps) == 1 and steps[0]["lr"] == pytest.approx(settings.lr * 0.001)
    recorded = checkpoint.read(tmp_path / "train" / "latest.pth")["train_config"]
    assert {k: recorded[k] for k in ("optimizer", "lr", "weight_decay", "clip_grad", "batch_size", "precision")} == {
        "optimizer": "adamw", "lr": settings.lr, "weight_decay": settings.weight_decay,
        "clip_grad": settings.clip_grad, "batch_size": settings.batch_size, "precision": "fp32"}
    # metrics.json is the per-stage table's ensemble row, and the trainer's own evaluation of its
    # final weights at the end of the epoch: the demo evaluated what it trained
    written = json.loads((tmp_path / "metrics.json").read_text())
    per_stage = json.loads((tmp_path / "metrics_per_stage.json").read_text())
    assert written == metrics == per_stage["ensemble"] == evaluations[-1]["eval"]
    assert list(per_stage) == ["stage 1", "stage 2", "stage 3", "ensemble"]
    assert set(written["bbox"]) == set(METRIC_NAMES) | set(PER_IOU)
    assert (tmp_path / "train" / "curves.png").stat().st_size > 0
    # the pictures are the validation images; after one step nothing scores 0.5 (measured), so
    # each is its image untouched - no box drawn where no detection was written
    pictures = sorted((tmp_path / "pictures").glob("*.png"))
    assert [p.name for p in pictures] == sorted(p.name for p in (tmp_path / "data" / "val" / "images").iterdir())
    assert json.loads((tmp_path / "pictures" / "predictions.json").read_text()) == []
    for picture in pictures:
        assert np.array_equal(cv2.imread(str(picture)), cv2.imread(str(tmp_path / "data" / "val" / "images" /
                                                                      picture.name)))
    assert f"pictures {tmp_path / 'pictures'}/" in out


def test_benchmark_reports_speed_and_memory_as_json(capsys):
    args = ["benchmark", "--model", "cascade_rcnn_r18w32_fpn_256", "--images", "2", "--size", "60x90",
            "--threads", "1", "--json"]
    assert main(args + ["--train", "--iterations", "1", "--train-batch-size", "1"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert "random" in captured.err and "random" in result["weights"]
    inference, training = result["inference"], result["training"]
    assert inference["images"] == 2 and inference["images_per_s"] > 0
    assert 0 < inference["median_latency_s"] <= inference["p90_latency_s"]
    assert inference["peak_memory_gb"] > 0.05  # the process's resident set: at least torch itself
    assert training["s_per_iter"] > 0 and training["peak_memory_gb"] > 0.05
    assert training["image_size"] == [256, 256] and training["images_per_iter"] == 1
    assert result["path"] == "fast" and result["reported_fps_v100"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_benchmark_on_cuda_reports_allocated_memory(precision, capsys):
    args = ["benchmark", "--model", "cascade_rcnn_r18w32_fpn_256", "--images", "2", "--size", "60x90",
            "--device", "cuda", "--json", "--train", "--iterations", "1", "--precision", precision]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    inference, training = result["inference"], result["training"]
    assert result["device"].startswith("cuda") and result["precision"] == precision
    assert inference["images_per_s"] > 0 and training["s_per_iter"] > 0
    # CUDA max_memory_allocated: at least the weights (5.7 M float32 parameters = 0.023 GB).
    assert 0.01 < inference["peak_memory_gb"] < training["peak_memory_gb"] < 20


def test_benchmark_prints_the_zoo_figures_beside_ours(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((50, 70, 3), 90, np.uint8))
    assert main(["benchmark", "--model", SMALL, "--image-dir", str(folder), "--exact", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "exact path" in out and "img/s" in out and "peak memory" in out
    assert main(["benchmark", "--model", SMALL, "--image-dir", str(tmp_path / "none")]) == 2
    assert main(["benchmark", "--model", SMALL, "--size", "big"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert main(["benchmark", "--model", SMALL, "--images", "0"]) == 2
    assert "--images must be at least 1" in capsys.readouterr().err


def test_benchmark_takes_a_detectron2_config_yaml(tmp_path, capsys):
    """``--config`` takes Detectron2's yacs file as build_model does (here its R-50 3x config with
    a _BASE_ chain, shrunk to the golden model's ResNet-18 at a small test size)."""
    shutil.copytree(DETECTRON2_CONFIGS, tmp_path / "configs")
    config = tmp_path / "configs" / "Misc" / "small.yaml"
    config.write_text('_BASE_: "cascade_mask_rcnn_R_50_FPN_3x.yaml"\n'
                      "MODEL:\n  RESNETS: {DEPTH: 18, RES2_OUT_CHANNELS: 64}\n  FPN: {OUT_CHANNELS: 64}\n"
                      "  ROI_BOX_HEAD: {FC_DIM: 256}\n  ROI_MASK_HEAD: {CONV_DIM: 32}\n"
                      "INPUT: {MIN_SIZE_TEST: 96, MAX_SIZE_TEST: 160}\n")
    assert main(["benchmark", "--config", str(config), "--images", "1", "--size", "60x90", "--threads", "1",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "small" and result["inference"]["images"] == 1
    assert "random" in result["weights"] and result["path"] == "fast"
    assert main(["benchmark", "--images", "1"]) == 2
    assert "give --model NAME, --config" in capsys.readouterr().err


VITDET_TINY = (Path(__file__).resolve().parents[2] / "shared" / "golden" / "vitdet_cascade_mask_rcnn_tiny"
               / "config.yaml")


@pytest.mark.skipif(not VITDET_TINY.is_file(), reason=f"ViTDet golden config not found at {VITDET_TINY}")
def test_benchmark_takes_a_vitdet_lazyconfig_dump(capsys):
    """``--config`` takes Detectron2's ViTDet LazyConfig dump (the tiny golden one: a 256 px ViT);
    its random relative position tables are drawn (spread_random_weights), the rest as for any row."""
    assert main(["benchmark", "--config", str(VITDET_TINY), "--images", "1", "--size", "60x90", "--threads", "1",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["inference"]["images"] == 1 and result["inference"]["detections_per_image"] > 0
    assert "random" in result["weights"] and result["path"] == "fast"

def coco_layout(root, seed: int = 6):
    """A COCO 2017 folder layout holding two tiny shapes sets."""
    for split in ("train", "val"):
        generate_shapes(root / f"gen_{split}", num_images=2, size=96, seed=seed)
        (root / f"gen_{split}" / "images").rename(root / f"{split}2017")
        (root / "annotations").mkdir(exist_ok=True)
        (root / f"gen_{split}" / "annotations.json").rename(root / "annotations" / f"instances_{split}2017.json")
    return root


def test_coco_root_picks_up_the_2017_layout_by_name(tmp_path, monkeypatch, capsys):
    status = main(["train", "--model", SMALL, "--coco-root", str(tmp_path)])
    assert status == 2 and "instances_train2017.json" in capsys.readouterr().err
    root = coco_layout(tmp_path / "coco")
    seen = {}
    monkeypatch.setattr("cascade_rcnn.engine.train.train", lambda model, config: seen.setdefault("config", config))
    assert main(["train", "--model", SMALL, "--coco-root", str(root), "--val-images", "elsewhere"]) == 0
    config = seen["config"]
    assert (config.train_json, config.train_images, config.val_json, config.val_images) == (
        str(root / "annotations" / "instances_train2017.json"), str(root / "train2017"),
        str(root / "annotations" / "instances_val2017.json"), "elsewhere")
    assert (config.filter_empty_gt, config.min_size, config.max_failed_fraction) == (True, 32, 0.01)
    gt = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    predictions = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                   for a in gt["annotations"]]
    (tmp_path / "p.json").write_text(json.dumps(predictions))
    assert main(["evaluate", "--coco-root", str(root), "--predictions", str(tmp_path / "p.json")]) == 0
    assert "100.0" in capsys.readouterr().out


def test_evaluate_refuses_a_missing_or_corrupt_image_naming_it(tmp_path, capsys):
    root = coco_layout(tmp_path / "coco")
    victim = sorted((root / "val2017").iterdir())[1]
    victim.write_bytes(b"garbage")
    weights = tmp_path / "shapes.pth"
    checkpoint.save(weights, cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(SMALL).with_classes(SHAPE_CLASSES)))
    status = main(["evaluate", "--coco-root", str(root), "--model", SMALL, "--weights", str(weights)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"instances_val2017.json: images that cannot be used with {root / 'val2017'}: 1 files that are " \
           f"not readable images (header check): {victim.name} (" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --- what --weights none, --class-names and the error policy mean in every command ---------------

@pytest.fixture
def built(monkeypatch):
    """The keyword arguments and result of every ``build_model`` call the commands make (the real
    one still runs)."""
    calls = []
    real = cascade_rcnn.api.build_model

    def spy(model, **kwargs):
        calls.append((kwargs, real(model, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr("cascade_rcnn.api.build_model", spy)
    return calls


def test_weights_none_means_random_weights_in_every_command(tmp_path, monkeypatch, built, capsys):
    generate_shapes(tmp_path / "data", num_images=2, size=96, seed=5)
    images, gt = tmp_path / "data" / "images", tmp_path / "data" / "annotations.json"
    assert main(["predict", str(images), "--model", SMALL, "--weights", "none", "--out", str(tmp_path / "p"),
                 "--no-draw"]) == 0
    assert "RANDOM" in capsys.readouterr().err
    assert main(["evaluate", "--gt-json", str(gt), "--images", str(images), "--model", SMALL, "--weights", "none",
                 "--class-names", ",".join(SHAPE_CLASSES)]) == 0
    monkeypatch.setattr("cascade_rcnn.deploy.export.export_onnx", lambda model, out, **kwargs: out)
    assert main(["export", "--model", SMALL, "--weights", "none", "--out", str(tmp_path / "m.onnx")]) == 0
    assert [kwargs["weights"] for kwargs, _ in built] == [None, None, None]

    seen = {}
    monkeypatch.setattr("cascade_rcnn.engine.train.train", lambda model, config: seen.setdefault("train", config))
    monkeypatch.setattr("cascade_rcnn.benchmarking.benchmark.run_benchmark",
                        lambda model, **kwargs: seen.setdefault("benchmark", kwargs))
    data = ["--train-json", str(gt), "--train-images", str(images)]
    assert main(["train", "--model", SMALL, *data, "--weights", "none"]) == 0
    assert seen.pop("train").weights is None  # as without --weights: the backbone's initialisation
    assert main(["benchmark", "--model", SMALL, "--weights", "none", "--json"]) == 0
    assert seen["benchmark"]["weights"] is None  # as without --weights: random, spread like trained ones
    assert main(["train", "--model", SMALL, *data, "--weights", "zoo"]) == 2
    assert capsys.readouterr().err.endswith(f"error: {SMALL} has no published weights (a project config): give "
                                            "--weights PATH (e.g. a training run's final.pth), or --weights none "
                                            "for random weights\n")


def test_class_names_name_the_classes_of_a_checkpoint_without_them(tmp_path, built, capsys):
    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(SMALL).with_classes(("cat", "dog", "emu")))
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": model.state_dict()}, bare)  # as MMDetection's file of a custom data set
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    predict = ["predict", str(image), "--model", SMALL, "--weights", str(bare), "--out", str(tmp_path / "out"),
               "--no-draw"]
    assert main(predict) == 2  # the config's 80 COCO classes, the file's 3
    assert "the checkpoint has 3 classes" in capsys.readouterr().err
    assert main([*predict, "--class-names", "cat, dog,emu"]) == 0
    kwargs, loaded = built[-1]
    assert kwargs["class_names"] == ["cat", "dog", "emu"] and loaded.class_names == ("cat", "dog", "emu")
    with pytest.raises(SystemExit):  # argparse's usage error
        main([*predict, "--class-names", "cat,,emu"])
    assert "expected distinct names" in capsys.readouterr().err
    assert main(["predict", str(image), "--onnx", str(tmp_path / "m.onnx"), "--class-names", "cat"]) == 2
    assert "drop --class-names" in capsys.readouterr().err


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), KeyError("stage"), ValueError("bad shape")])
def test_a_programming_error_keeps_its_traceback(tmp_path, monkeypatch, capsys, bug):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr("cascade_rcnn.data.shapes.generate_shapes", broken)
    with pytest.raises(type(bug)) as raised:  # not turned into "error: ..." and status 2
        main(["shapes", str(tmp_path)])
    assert raised.value is bug and capsys.readouterr().err == ""


def test_a_user_error_is_one_line_and_debug_shows_its_traceback(tmp_path, monkeypatch, capsys):
    bad = ["shapes", str(tmp_path), "--size", "32"]
    assert main(bad) == 2
    assert capsys.readouterr().err == "error: size must be at least 64 px (objects are 8 px to size / 3), got 32\n"
    for argv in (["--debug", *bad], [*bad, "--debug"]):
        with pytest.raises(UserInputError, match="at least 64 px"):
            main(argv)
    monkeypatch.setenv("CASCADE_RCNN_DEBUG", "1")
    with pytest.raises(UserInputError, match="at least 64 px"):
        main(bad)
    monkeypatch.setenv("CASCADE_RCNN_DEBUG", "0")
    assert main(["predict", str(tmp_path), "--model", SMALL, "--weights", "none", "--device", "gpu"]) == 2
    assert capsys.readouterr().err == "error: --device 'gpu': not a device; use cpu, cuda or cuda:N\n"


def test_predict_classes_keeps_only_the_named_classes(tmp_path, weights, capsys):
    from cascade_rcnn.models.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), (np.random.default_rng(1).random((96, 128, 3)) * 255).astype(np.uint8))
    common = ["predict", str(path), "--model", SMALL, "--weights", str(weights), "--score-thr", "0", "--no-draw"]
    assert main([*common, "--out", str(tmp_path / "all")]) == 0
    every = json.loads((tmp_path / "all" / "predictions.json").read_text())
    found = sorted({r["category_id"] for r in every})
    assert len(found) >= 3  # random weights: a few classes come out
    wanted = found[:2]
    names = [COCO_CLASSES[COCO_CATEGORY_IDS.index(category)] for category in wanted]
    assert main([*common, "--out", str(tmp_path / "some"), "--classes", f"{names[0]}, {names[1]}"]) == 0
    some = json.loads((tmp_path / "some" / "predictions.json").read_text())
    assert {r["category_id"] for r in some} == set(wanted)
    assert main([*common, "--out", str(tmp_path / "typo"), "--classes", "persn"]) == 2
    assert "unknown class 'persn' (did you mean person?)" in capsys.readouterr().err
