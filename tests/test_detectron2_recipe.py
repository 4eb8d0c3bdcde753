"""A Detectron2 yacs config's training recipe (``detectron2_config/yacs_recipe.py``): the zoo rows'
files as TrainConfig arguments and training sizes, Detectron2's schedules in epochs, a user's
schedule left to the command, refusals by key, and a tiny run of the golden config through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cascade_rcnn.cli import main
from cascade_rcnn.data import loader
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.data.transforms import normalize, resize, train_transform
from cascade_rcnn.detectron2_config import ZOO_FILES, read_yacs_config, recipe_parts, yacs_recipe
from cascade_rcnn.detectron2_config.model import read_detectron2_model
from cascade_rcnn.engine.param_groups import parameter_groups
from cascade_rcnn.engine.schedule import SCHEDULES
from cascade_rcnn.errors import ConfigError
from cascade_rcnn.inference.predictor import CascadeRCNN
from cascade_rcnn.models.input_norm import DETECTRON2_RESIZE, MMDETECTION_RESIZE
from cascade_rcnn.weights import checkpoint

ROW_1X, ROW_3X = "Misc/cascade_mask_rcnn_R_50_FPN_1x", "Misc/cascade_mask_rcnn_R_50_FPN_3x"
GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "d2_cascade_mask_rcnn_R_18_FPN" / "config.yaml"
COCO_TRAIN_IMAGES = 117266  # COCO train2017's images with annotations (Detectron2 filters out the others)
# Detectron2's Base-RCNN-FPN.yaml, which both rows build on, trains at these short sides (not 800 alone).
SHORT_SIDES = (640, 672, 704, 736, 768, 800)
RECIPE = {"optimizer": "sgd", "lr_per_16": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "warmup_iters": 1000,
          "filter_empty_gt": True, "min_size": 0, "checkpoint_every": 5000}


def config_file(tmp_path: Path, settings: dict) -> Path:
    """The 1x row's file (with its _BASE_) beside ``settings`` ({dotted key: value}) in tmp_path."""
    (tmp_path / "Misc").mkdir(exist_ok=True)
    (tmp_path / "Base-RCNN-FPN.yaml").write_text((ZOO_FILES / "Base-RCNN-FPN.yaml").read_text())
    tree: dict = {}
    for key, value in settings.items():
        *groups, name = key.split(".")
        node = tree
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = value
    path = tmp_path / "Misc" / "config.yaml"
    path.write_text((ZOO_FILES / f"{ROW_1X}.yaml").read_text() + yaml.safe_dump(tree))
    return path


def test_the_zoo_rows_recipes_become_train_config_arguments():
    for row, schedule in ((ROW_1X, "1x"), (ROW_3X, "d2_3x")):
        recipe, notes = yacs_recipe.training_recipe(ZOO_FILES / f"{row}.yaml")
        assert recipe == {**RECIPE, "schedule": schedule} and not notes
        model = read_detectron2_model(ZOO_FILES / f"{row}.yaml")
        assert model.train_scale_choice == tuple((1333, side) for side in SHORT_SIDES)
        assert model.train_scale_range is None and model.image_scale == (1333, 800)


@pytest.mark.parametrize("row, schedule", [(ROW_1X, "1x"), (ROW_3X, "d2_3x")])
def test_detectron2s_iterations_are_the_schedules_epochs_rounded(row, schedule):
    """Each row's iterations of 16 images over COCO train2017, in epochs, rounded: our schedule's."""
    config = read_yacs_config(ZOO_FILES / f"{row}.yaml")
    assert config.value("SOLVER.IMS_PER_BATCH") == 16

    def epochs(iterations: int) -> int:
        return round(iterations * 16 / COCO_TRAIN_IMAGES)

    assert SCHEDULES[schedule] == (epochs(config.value("SOLVER.MAX_ITER")),
                                   tuple(epochs(step) for step in config.value("SOLVER.STEPS")))


def test_a_schedule_that_is_no_zoo_rows_leaves_epochs_to_the_command(tmp_path):
    recipe, notes = yacs_recipe.training_recipe(config_file(tmp_path, {"SOLVER.MAX_ITER": 5000,
                                                                       "SOLVER.STEPS": [3000, 4000]}))
    assert "schedule" not in recipe and len(notes) == 1 and "--epochs" in notes[0]
    assert "config.yaml: SOLVER.STEPS [3000, 4000] of SOLVER.MAX_ITER 5000" in notes[0]


def test_what_the_recipe_follows_besides_the_zoos_values(tmp_path, monkeypatch):
    path = config_file(tmp_path, {"SOLVER.BASE_LR": 0.005, "SOLVER.IMS_PER_BATCH": 4, "SOLVER.MOMENTUM": 0.8,
                                  "SOLVER.WEIGHT_DECAY": 5e-4, "SOLVER.WEIGHT_DECAY_BIAS": 5e-4,
                                  "SOLVER.WEIGHT_DECAY_NORM": 0.5, "SOLVER.WARMUP_ITERS": 100000,
                                  "SOLVER.CHECKPOINT_PERIOD": 250, "SOLVER.AMP.ENABLED": True,
                                  "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 5.0, "INPUT.MASK_FORMAT": "bitmask",
                                  "DATALOADER.FILTER_EMPTY_ANNOTATIONS": False, "DATASETS.TRAIN": ["my_set"]})
    monkeypatch.setattr(recipe_parts, "cpu_has_bf16_instructions", lambda: True)
    recipe, _ = yacs_recipe.training_recipe(path)
    assert recipe == {**RECIPE, "lr_per_16": pytest.approx(0.02), "momentum": 0.8, "weight_decay": 5e-4,
                      "warmup_iters": 90000, "checkpoint_every": 250, "filter_empty_gt": False, "precision": "bf16"}
    # warm-up: at most MAX_ITER, as Detectron2; no schedule: the row's iterations, but of 4 images
    assert yacs_recipe.training_recipe(path, "cuda")[0]["precision"] == "fp16"
    monkeypatch.setattr(recipe_parts, "cpu_has_bf16_instructions", lambda: False)
    recipe, notes = yacs_recipe.training_recipe(path)
    assert "precision" not in recipe and "SOLVER.AMP.ENABLED" in notes[-1]


def test_weight_decay_norm_has_nothing_to_act_on():
    """Detectron2's WEIGHT_DECAY_NORM (0.0) would spare norm parameters from weight decay: the model a
    yacs config builds trains none (frozen BatchNorm, no norm in the FPN or heads), and every trained
    parameter, biases included, decays by WEIGHT_DECAY, as Detectron2's WEIGHT_DECAY_BIAS null says."""
    model = CascadeRCNN(read_detectron2_model(GOLDEN if GOLDEN.is_file() else ZOO_FILES / f"{ROW_1X}.yaml"))
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    assert any(isinstance(module, norms) for module in model.modules())
    assert not [name for name, module in model.named_modules() if isinstance(module, norms)
                and any(p.requires_grad for p in module.parameters())]
    groups = parameter_groups(model, 1e-4)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4
    assert any(p.ndim == 1 for p in groups[0]["params"])  # the biases


@pytest.mark.parametrize("key, value, model_reads_it", [
    ("SOLVER.NESTEROV", True, True),
    ("SOLVER.BIAS_LR_FACTOR", 2.0, True),
    ("SOLVER.WEIGHT_DECAY_BIAS", 0.0, True),
    ("SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR", True),
    ("SOLVER.WARMUP_METHOD", "constant", True),
    ("SOLVER.WARMUP_FACTOR", 0.01, True),
    ("SOLVER.GAMMA", 0.5, True),
    ("SOLVER.RESCALE_INTERVAL", True, True),
    ("SOLVER.REFERENCE_WORLD_SIZE", 8, True),
    ("SOLVER.CLIP_GRADIENTS.ENABLED", True, True),
    ("SOLVER.MOMENTUM", 1.5, True),
    ("SOLVER.STEPS", [80000, 60000], True),
    ("INPUT.RANDOM_FLIP", "vertical", True),
    ("DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler", True),
    ("DATALOADER.ASPECT_RATIO_GROUPING", False, True),
    ("DATASETS.PROPOSAL_FILES_TRAIN", ["proposals.pkl"], True),
    ("INPUT.CROP.ENABLED", True, False),
])
def test_a_recipe_key_we_do_not_follow_is_refused_by_key(tmp_path, key, value, model_reads_it):
    path = config_file(tmp_path, {key: value})
    with pytest.raises(ConfigError, match=rf"config\.yaml: {key.replace('.', '[.]')} = ") as error:
        yacs_recipe.training_recipe(path)
    assert "\n" not in str(error.value)
    if model_reads_it:
        read_detectron2_model(path)  # the model itself is still read (for prediction)


def test_range_sampling_draws_the_short_side_between_two_sides(tmp_path):
    config = read_detectron2_model(config_file(tmp_path, {"INPUT.MIN_SIZE_TRAIN": [640, 864],
                                                          "INPUT.MIN_SIZE_TRAIN_SAMPLING": "range",
                                                          "INPUT.MAX_SIZE_TRAIN": 1440}))
    assert config.train_scale_range == ((1440, 640), (1440, 864)) and config.train_scale_choice is None
    with pytest.raises(ConfigError, match=r"config\.yaml: INPUT\.MIN_SIZE_TRAIN_SAMPLING = 'range'"):
        read_detectron2_model(config_file(tmp_path, {"INPUT.MIN_SIZE_TRAIN": [640, 704, 800],
                                                     "INPUT.MIN_SIZE_TRAIN_SAMPLING": "range"}))


def test_training_a_detectron2_zoo_row_follows_its_recipe(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("cascade_rcnn.engine.train.train", lambda model, config: calls.append((model, config))
                        or Path("final.pth"))
    base = ["train", "--train-json", str(tmp_path / "t.json"), "--train-images", str(tmp_path), "--out",
            str(tmp_path / "run")]
    assert main([*base, "--model", ROW_3X]) == 0
    model, config = calls[-1]
    assert {name: getattr(config, name) for name in RECIPE} == RECIPE and config.schedule == "d2_3x"
    assert model.train_scale_choice == tuple((1333, side) for side in SHORT_SIDES)
    assert main([*base, "--model", ROW_3X, "--schedule", "3x", "--checkpoint-every", "0"]) == 0  # options win
    assert (calls[-1][1].schedule, calls[-1][1].checkpoint_every) == ("3x", 0)
    path = config_file(tmp_path, {"SOLVER.MAX_ITER": 5000, "SOLVER.STEPS": [3000]})
    assert main([*base, "--config", str(path), "--overwrite"]) == 0
    assert calls[-1][1].schedule == "1x" and "note: " in capsys.readouterr().err  # the model's, said


@pytest.mark.skipif(not GOLDEN.is_file(), reason=f"Detectron2 golden data not found at {GOLDEN}")
def test_the_golden_config_trains_through_the_cli_with_its_recipe(tmp_path, monkeypatch):
    """The golden R-18 config (Detectron2's 3x solver, "choice" of short sides), its training sides
    made small, for one epoch of one iteration on shapes data."""
    text = GOLDEN.read_text()
    sides = "  MIN_SIZE_TRAIN:\n" + "".join(f"  - {side}\n" for side in SHORT_SIDES)
    assert sides in text and "  MAX_SIZE_TRAIN: 1333\n" in text
    config = tmp_path / "config.yaml"
    config.write_text(text.replace(sides, "  MIN_SIZE_TRAIN:\n  - 96\n  - 128\n")
                      .replace("  MAX_SIZE_TRAIN: 1333\n", "  MAX_SIZE_TRAIN: 192\n"))
    drawn = []

    def recorded(model_config, generator):
        drawn.append(training_scale(model_config, generator))
        return drawn[-1]

    training_scale = loader.training_scale
    monkeypatch.setattr(loader, "training_scale", recorded)
    generate_shapes(tmp_path / "data", num_images=2, size=160, seed=3)
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--train-json", str(tmp_path / "data" / "annotations.json"),
                 "--train-images", str(tmp_path / "data" / "images"), "--backbone-weights", "none",
                 "--epochs", "1", "--batch-size", "2", "--workers", "0", "--eval-every", "0",
                 "--set", "train_proposals=300", "--set", "rois_per_image=64", "--out", str(out)]) == 0
    assert len(drawn) == 2 and set(drawn) <= {(192, 96), (192, 128)}
    ran = checkpoint.read(out / "latest.pth")["train_config"]
    assert {name: ran[name] for name in RECIPE} == RECIPE and ran["schedule"] == "d2_3x" and ran["epochs"] == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) >= 1 and all(np.isfinite(losses))
    # the recipe's lr, 0.02 per 16 images, for 2 images at the first of its 1000 warm-up iterations (0.001x)
    assert [row["lr"] for row in rows if "lr" in row] == [pytest.approx(0.02 * 2 / 16 * 0.001)]


def test_training_images_are_resized_by_the_models_rule():
    """A Detectron2 model's training image: ResizeShortestEdge's size, Pillow's bilinear (what its
    prediction input gets, checked bit for bit against Detectron2), not OpenCV's."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    sample = {"image": image, "boxes": np.array([[10.0, 10.0, 60.0, 50.0]]), "labels": np.array([1]),
              "masks": np.ones((1, 97, 131), dtype=np.uint8)}
    mean, std = (103.53, 116.28, 123.675), (1.0, 1.0, 1.0)
    for rule, library in ((DETECTRON2_RESIZE, "pil"), (MMDETECTION_RESIZE, "cv2")):
        trained = train_transform(sample, (1333, 160), False, mean, std, True, rule)
        expected = resize(image, (1333, 160), rule)
        assert expected.rule.library == library and trained.size == expected.size
        assert torch.equal(trained.tensor, normalize(expected.image, mean, std, True))
        assert trained.target["masks"].shape[1:] == expected.size
    assert not torch.equal(train_transform(sample, (1333, 160), False, mean, std, True, DETECTRON2_RESIZE).tensor,
                           train_transform(sample, (1333, 160), False, mean, std, True).tensor)
