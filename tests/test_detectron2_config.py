"""Detectron2 yacs configs read as data: safe_load only, ``_BASE_`` chains merged as fvcore merges
them, onto Detectron2's defaults by yacs's rules (no unknown keys, types kept), and values the
caller does not support refused by key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cascade_rcnn.weights.zoo import DETECTRON2_CONFIGS
from cascade_rcnn.detectron2_config import (ANY, DEFAULTS, RUN_ONLY_KEYS, read_yacs_config,
                                            refuse_unsupported)
from cascade_rcnn.detectron2_config.resolved import as_tuples, dotted_leaves
from cascade_rcnn.detectron2_config.yacs_file import MAX_BASE_DEPTH, MAX_BYTES
from cascade_rcnn.errors import ConfigError

CONFIGS = DETECTRON2_CONFIGS  # Detectron2's own config files, shipped for the zoo rows
BASE = CONFIGS / "Base-RCNN-FPN.yaml"
R50_3X = CONFIGS / "Misc" / "cascade_mask_rcnn_R_50_FPN_3x.yaml"
R50_1X = CONFIGS / "Misc" / "cascade_mask_rcnn_R_50_FPN_1x.yaml"
X152 = CONFIGS / "Misc" / "cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.yaml"
GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "d2_cascade_mask_rcnn_R_18_FPN"
GOLDEN_CONFIG = GOLDEN / "config.yaml"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refused(path: Path, match: str) -> str:
    with pytest.raises(ConfigError, match=match) as error:
        read_yacs_config(path)
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.skipif(not GOLDEN_CONFIG.is_file(), reason=f"Detectron2 golden config not found at {GOLDEN_CONFIG}")
def test_a_runs_dump_reads_with_every_value_as_written():
    config = read_yacs_config(GOLDEN_CONFIG)
    written = dict(dotted_leaves(yaml.safe_load(GOLDEN_CONFIG.read_text())))
    assert dict(config.leaves()) == {key: as_tuples(value) for key, value in written.items()}
    assert {config.source(key) for key in written} == {GOLDEN_CONFIG}
    assert config["MODEL"]["RESNETS"]["DEPTH"] == 18 and config["MODEL"]["FPN"]["OUT_CHANNELS"] == 64


def test_the_3x_chain_resolves_over_its_base_and_the_defaults():
    config = read_yacs_config(R50_3X)
    model = config["MODEL"]
    assert model["ROI_HEADS"]["NAME"] == "CascadeROIHeads" and model["MASK_ON"] is True
    assert model["ROI_BOX_CASCADE_HEAD"]["IOUS"] == (0.5, 0.6, 0.7)
    assert model["ROI_BOX_CASCADE_HEAD"]["BBOX_REG_WEIGHTS"] == ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0),
                                                                 (30.0, 30.0, 15.0, 15.0))
    assert model["ROI_BOX_HEAD"]["CLS_AGNOSTIC_BBOX_REG"] is True and model["ROI_BOX_HEAD"]["NUM_FC"] == 2
    assert model["ANCHOR_GENERATOR"]["SIZES"] == ((32,), (64,), (128,), (256,), (512,))
    assert model["RPN"]["POST_NMS_TOPK_TRAIN"] == 2000  # the file over its base's 1000
    assert model["RPN"]["PRE_NMS_TOPK_TRAIN"] == 2000  # the base over the default 12000
    assert model["RPN"]["PRE_NMS_TOPK_TEST"] == 1000 and model["RPN"]["NMS_THRESH"] == 0.7  # base, default
    assert config["INPUT"]["MIN_SIZE_TRAIN"] == tuple(range(640, 801, 32))  # the string "(640, ...)" read as a tuple
    assert config["DATASETS"]["TRAIN"] == ("coco_2017_train",)
    assert config.value("SOLVER.STEPS") == (210000, 250000) and config.value("SOLVER.MAX_ITER") == 270000
    assert config.value("SOLVER.BASE_LR") == 0.02 and config.value("SOLVER.WEIGHT_DECAY_BIAS") is None
    assert config.source("MODEL.ROI_HEADS.NAME") == R50_3X
    assert config.source("INPUT.MIN_SIZE_TRAIN").resolve() == BASE.resolve()
    assert config.source("SEED") == R50_3X and config.path == R50_3X


def test_the_1x_and_x152_configs_resolve():
    one_x = read_yacs_config(R50_1X)
    assert one_x.value("SOLVER.STEPS") == (60000, 80000) and one_x.value("SOLVER.MAX_ITER") == 90000
    x152 = read_yacs_config(X152)
    resnets = x152["MODEL"]["RESNETS"]
    assert (resnets["DEPTH"], resnets["NUM_GROUPS"], resnets["WIDTH_PER_GROUP"], resnets["STRIDE_IN_1X1"]) == \
        (152, 32, 8, False)
    assert resnets["DEFORM_ON_PER_STAGE"] == (False, True, True, True)
    assert x152.value("MODEL.ROI_BOX_HEAD.NORM") == "GN" and x152.value("MODEL.ROI_MASK_HEAD.NUM_CONV") == 8
    assert x152.value("INPUT.MIN_SIZE_TRAIN") == (640, 864) and x152.value("INPUT.MIN_SIZE_TRAIN_SAMPLING") == "range"
    assert x152.value("INPUT.CROP.ENABLED") is True and x152.value("INPUT.CROP.TYPE") == "relative_range"


def test_values_follow_yacs_literals_and_casts(tmp_path):
    config = read_yacs_config(write(tmp_path, "c.yaml", (
        "SOLVER:\n  WEIGHT_DECAY: 1e-4\n  WEIGHT_DECAY_BIAS: 0.0\n  STEPS: [5, 7]\n"
        "MODEL:\n  PIXEL_MEAN: '(1.0, 2.0, 3.0)'\n  WEIGHTS: 'detectron2://x/y.pkl'\n  RESNETS:\n    NORM: SyncBN\n"
        "  ROI_HEADS:\n    NAME: null\n")))
    assert config.value("SOLVER.WEIGHT_DECAY") == 1e-4  # YAML reads 1e-4 as a string, yacs as a number
    assert config.value("SOLVER.WEIGHT_DECAY_BIAS") == 0.0  # a number for a None default
    assert config.value("SOLVER.STEPS") == (5, 7)  # a list for a tuple default
    assert config.value("MODEL.PIXEL_MEAN") == (1.0, 2.0, 3.0)
    assert config.value("MODEL.WEIGHTS") == "detectron2://x/y.pkl"
    assert config.value("MODEL.RESNETS.NORM") == "SyncBN" and config.value("MODEL.ROI_HEADS.NAME") is None


def test_the_config_is_read_only():
    config = read_yacs_config(R50_3X)
    with pytest.raises(TypeError):
        config["MODEL"]["MASK_ON"] = False  # type: ignore[index]
    assert isinstance(config.value("MODEL.PIXEL_MEAN"), tuple)


def test_an_unknown_key_is_refused_naming_it_and_its_file(tmp_path):
    path = write(tmp_path, "c.yaml", "MODEL:\n  ROI_HEADS:\n    NUM_CLASS: 3\n")
    refused(path, rf"^{path}: Non-existent config key: MODEL.ROI_HEADS.NUM_CLASS$")
    base = write(tmp_path, "base.yaml", "SOLVER:\n  LR: 0.1\n")
    refused(write(tmp_path, "child.yaml", "_BASE_: base.yaml\n"), rf"^{base}: Non-existent config key: SOLVER.LR$")
    refused(write(tmp_path, "old.yaml", "MODEL:\n  WEIGHT: a.pkl\n"),
            r"Non-existent config key: MODEL.WEIGHT \(VERSION 2 calls it MODEL.WEIGHTS\)$")
    refused(write(tmp_path, "nested.yaml", "MODEL:\n  _BASE_: base.yaml\n"), r"Non-existent config key: MODEL._BASE_$")


@pytest.mark.parametrize("text, match", [
    ("SOLVER:\n  BASE_LR: 1\n", r"SOLVER.BASE_LR = 1 is a int; Detectron2's SOLVER.BASE_LR is a float"),
    ("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: ten\n", r"MODEL.ROI_HEADS.NUM_CLASSES = 'ten' is a str; .* is a int"),
    ("MODEL:\n  MASK_ON: 1\n", r"MODEL.MASK_ON = 1 is a int; .* is a bool"),
    ("INPUT:\n  MIN_SIZE_TRAIN: 800\n", r"INPUT.MIN_SIZE_TRAIN = 800 is a int; .* is a tuple"),
    ("MODEL:\n  PIXEL_MEAN: '{1.0, 2.0}'\n", r"MODEL.PIXEL_MEAN = \{1.0, 2.0\} is a set"),
    ("MODEL: 5\n", r"MODEL is a group of keys in Detectron2's config, not a value \(5\)"),
    ("MODEL:\n  MASK_ON:\n    X: 1\n", r"MODEL.MASK_ON is a value in Detectron2's config, not a group of keys"),
    ("SEED: 2024-01-01\n", r"SEED = datetime.date\(2024, 1, 1\) is a date"),
    ("MODEL:\n  PIXEL_MEAN: [{a: 1}]\n", r"MODEL.PIXEL_MEAN\[0\] = \{'a': 1\} is a dict"),
    ("1: 2\n", r"key 1 under the top level is not a config key"),
    ("- MODEL\n", r"a Detectron2 config is a YAML mapping of keys, not a list"),
    ("", r"a Detectron2 config is a YAML mapping of keys, not an empty file"),
    ("SEED: &a [1, *a]\n", r"SEED\[1\]\[1\].* is nested deeper than 32 levels"),
    ("MODEL: &a {MASK_ON: *a}\n", r"MODEL.MASK_ON.MASK_ON.*\.\.\. is nested deeper than 32 levels"),
    ("MODEL: [\n", r"cannot be read as YAML \(expected the node content"),
    ("VERSION: 1\nMODEL:\n  WEIGHT: a.pkl\n", r"a VERSION 1 config; only VERSION 2 configs are read"),
    ("VERSION: 3\n", r"VERSION 3 is newer than the Detectron2 config VERSION 2"),
    ("VERSION: '2'\n", r"VERSION must be a whole number \(2\), got '2'"),
])
def test_a_value_yacs_would_not_take_is_refused_by_key(text, match, tmp_path):
    path = write(tmp_path, "c.yaml", text)
    refused(path, rf"^{path}(:\d+)?: {match}")


def test_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, "evil.yaml",
                 f"MODEL:\n  WEIGHTS: !!python/object/apply:os.system ['touch {marker}']\n")
    message = refused(path, rf"^{path}:2: could not determine a constructor for the tag "
                            r"'tag:yaml.org,2002:python/object/apply:os.system'; .*yaml.safe_load")
    assert not marker.exists(), message


@pytest.mark.parametrize("name, text, match", [
    ("absolute.yaml", f"_BASE_: {BASE.resolve()}\n", r"'.*' is not a relative path"),
    ("home.yaml", "_BASE_: ~/base.yaml\n", r"'.*' is not a relative path"),
    ("url.yaml", "_BASE_: https://example.com/base.yaml\n", r"'.*' is a URL"),
    ("scheme.yaml", "_BASE_: detectron2://Base-RCNN-FPN.yaml\n", r"'.*' is a URL"),
    ("names_missing.yaml", "_BASE_: [missing.yaml]\n", r"'missing.yaml': no such file .*/missing.yaml$"),
    ("self.yaml", "_BASE_: self.yaml\n", r"'self.yaml' is a cycle \(.*/self.yaml -> .*/self.yaml\)$"),
    ("mapping.yaml", "_BASE_: {a: b}\n", r"must be a path or a list of paths"),
])
def test_base_files_that_are_not_relative_existing_files_are_refused(name, text, match, tmp_path):
    path = write(tmp_path, name, text)
    refused(path, rf"^{path}: _BASE_ {match}")


def test_base_cycles_and_deep_chains_are_refused(tmp_path):
    write(tmp_path, "a.yaml", "_BASE_: sub/b.yaml\n")
    write(tmp_path, "sub/b.yaml", "_BASE_: ../a.yaml\n")
    refused(tmp_path / "a.yaml", r"^.*b.yaml: _BASE_ '../a.yaml' is a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)$")
    for index in range(MAX_BASE_DEPTH + 1):
        write(tmp_path, f"chain{index}.yaml", f"_BASE_: chain{index + 1}.yaml\n")
    write(tmp_path, f"chain{MAX_BASE_DEPTH + 1}.yaml", "SEED: 1\n")
    refused(tmp_path / "chain0.yaml", rf"_BASE_ files nest deeper than {MAX_BASE_DEPTH}$")


def test_later_bases_override_earlier_ones_and_the_file_overrides_its_bases(tmp_path):
    write(tmp_path, "one.yaml", "SOLVER:\n  MAX_ITER: 1\n  BASE_LR: 0.1\n")
    write(tmp_path, "two.yaml", "SOLVER:\n  MAX_ITER: 2\n")
    config = read_yacs_config(write(tmp_path, "c.yaml", "_BASE_: [one.yaml, two.yaml]\nSOLVER:\n  GAMMA: 0.5\n"))
    assert config["SOLVER"]["MAX_ITER"] == 2 and config["SOLVER"]["BASE_LR"] == 0.1
    assert config["SOLVER"]["GAMMA"] == 0.5 and config["SOLVER"]["STEPS"] == DEFAULTS["SOLVER"]["STEPS"]
    assert config.source("SOLVER.MAX_ITER") == tmp_path / "two.yaml"


def test_huge_deep_or_alias_bombing_files_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("SEED: 1\n" + "#" * MAX_BYTES)
    refused(big, rf"^{big}: {MAX_BYTES + 8} bytes is too large")
    refused(write(tmp_path, "deep.yaml", "SEED: " + "[" * 5000 + "]" * 5000 + "\n"),
            r":1: cannot be read as YAML \(nested deeper than 32 levels\)$")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    refused(write(tmp_path, "bomb.yaml", bomb), r"holds more than 100000 values")


def test_run_only_keys_never_decide(tmp_path):
    run_only = ("OUTPUT_DIR: /out\nSEED: 7\nCUDNN_BENCHMARK: true\nFLOAT32_PRECISION: high\nVIS_PERIOD: 20\n"
                "GLOBAL:\n  HACK: 2.0\nDATALOADER:\n  NUM_WORKERS: 0\nSOLVER:\n  CHECKPOINT_PERIOD: 1\n"
                "TEST:\n  EVAL_PERIOD: 1\n  EXPECTED_RESULTS: [[bbox, AP, 40.0, 0.1]]\n")
    config = read_yacs_config(write(tmp_path, "run.yaml", run_only + "MODEL:\n  DEVICE: cpu\n  WEIGHTS: a.pkl\n"))
    assert config.value("SEED") == 7 and config.value("MODEL.DEVICE") == "cpu"
    refuse_unsupported(config, {})
    model = read_yacs_config(write(tmp_path, "model.yaml", run_only + "MODEL:\n  RPN:\n    NMS_THRESH: 0.6\n"))
    with pytest.raises(ConfigError, match=r"model.yaml: MODEL.RPN.NMS_THRESH = 0.6 is not supported"):
        refuse_unsupported(model, {})


def test_keys_the_table_covers_pass():
    config = read_yacs_config(R50_3X)
    defaults = dict(dotted_leaves(DEFAULTS))
    differing = {key for key, value in config.leaves() if value != defaults[key] and key not in RUN_ONLY_KEYS}
    assert "SOLVER.STEPS" in differing and "MODEL.ROI_HEADS.NAME" in differing
    table = {key: ANY for key in differing if not key.startswith("SOLVER.")}
    refuse_unsupported(config, {**table, "SOLVER": ANY})  # a group covers every key under it
    refuse_unsupported(config, {**table, "SOLVER": ANY, "MODEL.ROI_HEADS.NAME": ["CascadeROIHeads"],
                                "INPUT.MIN_SIZE_TRAIN": [[640, 672, 704, 736, 768, 800]],  # a list for a tuple
                                "MODEL.RPN.PRE_NMS_TOPK_TRAIN": lambda value: value <= 2000})


def test_the_first_unsupported_value_is_refused_by_key_and_file():
    config = read_yacs_config(R50_3X)
    with pytest.raises(ConfigError, match=rf"^{R50_3X}: MODEL.MASK_ON = True is not supported; only "
                                          r"Detectron2's default, False, is$"):
        refuse_unsupported(config, {})
    with pytest.raises(ConfigError, match=r"^.*Base-RCNN-FPN.yaml: MODEL.BACKBONE.NAME = 'build_resnet_fpn_backbone'"
                                          r" is not supported \(supported: 'a', 'b'\)$"):
        refuse_unsupported(config, {"MODEL.MASK_ON": [True], "MODEL.BACKBONE.NAME": {"b", "a"}})
    with pytest.raises(ConfigError, match=r"MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000 is not supported$"):
        refuse_unsupported(config, {"MODEL": ANY, "MODEL.RPN.PRE_NMS_TOPK_TRAIN": lambda value: value > 2000})


@pytest.mark.parametrize("table, match", [
    ({"MODEL.ROI_HEADS.NUM_CLASS": ANY}, "'MODEL.ROI_HEADS.NUM_CLASS' is not a key of Detectron2's config"),
    ({"MODEL.ROI_HEADS.NAME": "CascadeROIHeads"}, "is not ANY, a collection of values or a predicate"),
    ({"MODEL.ROI_HEADS.NUM_CLASSES": 80}, "is not ANY, a collection of values or a predicate"),
])
def test_a_table_naming_no_key_or_no_rule_is_a_bug_of_its_caller(table, match):
    with pytest.raises(ValueError, match=match) as error:
        refuse_unsupported(read_yacs_config(R50_3X), table)
    assert not isinstance(error.value, ConfigError)


@pytest.mark.skipif(not GOLDEN_CONFIG.with_name("overrides.json").is_file(),
                    reason=f"Detectron2 golden config not found at {GOLDEN_CONFIG.parent}")
def test_defaults_and_the_3x_chain_are_what_detectron2_resolved():
    """The golden dump is get_cfg() + the 3x file + overrides.json's list: every other value (and
    its type) checks our defaults and our reading of the chain against Detectron2's own."""
    overrides = json.loads(GOLDEN_CONFIG.with_name("overrides.json").read_text())["inference"]
    expected = dict(read_yacs_config(R50_3X).leaves())
    expected.update(zip(overrides[0::2], overrides[1::2]))
    expected["MODEL.WEIGHTS"] = "checkpoint.pth"  # as the dump shows it (its README)
    dumped = {key: as_tuples(value) for key, value in dotted_leaves(yaml.safe_load(GOLDEN_CONFIG.read_text()))}
    assert dumped == expected
    assert {key: type(value) for key, value in dumped.items()} == {key: type(value) for key, value in expected.items()}
