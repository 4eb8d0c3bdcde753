"""The ViTDet zoo rows (Detectron2's projects/ViTDet COCO and LVIS v1 cascades) as Detectron2
resolves their LazyConfig files, LVIS's sigmoid scores and federated loss, and refusals by key."""
from __future__ import annotations

import math

import pytest
import torch

import cascade_rcnn
from cascade_rcnn.detectron2_config.lazy_model import read_lazy_model
from cascade_rcnn.errors import ConfigError
from cascade_rcnn.models.lvis_classes import LVIS_CLASSES, LVIS_FREQUENCIES, LVIS_IMAGE_COUNTS
from cascade_rcnn.models.roi_heads.cascade import CascadeRoIHeadConfig, classification_loss, federated_classes
from cascade_rcnn.weights.zoo import DETECTRON2_CONFIGS, MODEL_ZOO

# (name, embed dim, depth, heads, global blocks, drop path) as the configs set them
# (projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py and the _l_ / _h_ files that change it).
VITS = {"b": (768, 12, 12, (2, 5, 8, 11)), "l": (1024, 24, 16, (5, 11, 17, 23)), "h": (1280, 32, 16, (7, 15, 23, 31))}
ROWS = {"COCO/cascade_mask_rcnn_vitdet_b_100ep": "b", "COCO/cascade_mask_rcnn_vitdet_l_100ep": "l",
        "COCO/cascade_mask_rcnn_vitdet_h_75ep": "h", "LVIS/cascade_mask_rcnn_vitdet_b_100ep": "b",
        "LVIS/cascade_mask_rcnn_vitdet_l_100ep": "l", "LVIS/cascade_mask_rcnn_vitdet_h_100ep": "h"}


@pytest.mark.parametrize("name", ROWS)
def test_each_row_is_the_lazyconfig_as_detectron2_resolved_it(name):
    config = MODEL_ZOO[name]
    assert config == cascade_rcnn.get_config(name) and config.framework == "Detectron2"
    read = read_lazy_model(DETECTRON2_CONFIGS / "ViTDet" / f"{name}.yaml", name)
    assert config.backbone == read.backbone and config.roi_heads == read.roi_heads and config.neck == read.neck
    dim, depth, heads, global_blocks = VITS[ROWS[name]]
    vit = config.backbone
    assert (vit.embed_dim, vit.depth, vit.num_heads, vit.window_size, vit.img_size) == (dim, depth, heads, 14, 1024)
    assert set(vit.window_blocks) == set(range(depth)) - set(global_blocks)
    assert vit.square_pad == 1024 and config.image_scale == (1024, 1024) and not config.bgr_input
    assert config.rpn_head.num_convs == 2 and config.box_head.num_convs == 4 and config.fc_channels == 1024
    assert config.url.endswith(".pkl") and f"/ViTDet/{name.split('/')[0]}/" in config.url
    lvis = name.startswith("LVIS")
    assert config.class_names == (LVIS_CLASSES if lvis else cascade_rcnn.get_config(
        "Misc/cascade_mask_rcnn_R_50_FPN_3x").class_names)
    assert config.roi_heads.sigmoid_scores == lvis and config.roi_heads.fed_loss_classes == (50 if lvis else 0)
    assert (config.test_score_thr, config.test_max_per_image) == ((0.02, 300) if lvis else (0.05, 100))


def test_the_lvis_table_is_lvis_v1():
    assert len(LVIS_CLASSES) == 1203 and LVIS_CLASSES[0] == "aerosol_can" and LVIS_CLASSES[-1] == "zucchini"
    assert {f: LVIS_FREQUENCIES.count(f) for f in "rcf"} == {"r": 337, "c": 461, "f": 405}
    assert min(LVIS_IMAGE_COUNTS) >= 1


def test_a_predictor_argument_we_do_not_follow_is_refused_by_key(tmp_path):
    text = (DETECTRON2_CONFIGS / "ViTDet" / "LVIS" / "cascade_mask_rcnn_vitdet_b_100ep.yaml").read_text()
    for old, new, count, key in (
            ("use_sigmoid_ce: true", "use_sigmoid_ce: true\n      focal_gamma: 2.0", 1, "box_predictors.0.focal_gamma"),
            ("use_fed_loss: true", "use_fed_loss: false", 2, "box_predictors.2.use_fed_loss"),  # stages disagree
            ("names: lvis_v1_", "names: my_own_", 2, "box_predictors.0.use_fed_loss")):  # not LVIS
        assert old in text
        (tmp_path / "config.yaml").write_text(text.replace(old, new, count))
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            read_lazy_model(tmp_path / "config.yaml")


def test_sigmoid_scores_are_each_classes_sigmoid_and_softmax_otherwise():
    tiny = cascade_rcnn.get_config("cascade_mask_rcnn_r18w32_fpn_256")
    logits = torch.randn(5, len(tiny.class_names) + 1)
    for sigmoid, expected in ((True, logits.sigmoid()), (False, logits.softmax(dim=-1))):
        config = tiny.with_changes(roi_heads=CascadeRoIHeadConfig(sigmoid_scores=sigmoid))
        assert torch.equal(cascade_rcnn.CascadeRCNN(config).roi_head._probabilities(logits), expected)


def test_the_sigmoid_loss_is_per_class_binary_cross_entropy_over_the_rois():
    """Against the formula written out: -[y log s(x) + (1 - y) log(1 - s(x))] summed over the
    classes (background column excluded), divided by the number of RoIs."""
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 2, 3, 3, 1, 0])  # 3 classes, 3 = background
    y = torch.nn.functional.one_hot(labels, 4)[:, :3].float()
    p = logits[:, :3].sigmoid()
    expected = -(y * p.log() + (1 - y) * (1 - p).log()).sum() / 6
    loss = classification_loss(logits, labels, CascadeRoIHeadConfig(sigmoid_scores=True))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert classification_loss(logits[:0], labels[:0], CascadeRoIHeadConfig(sigmoid_scores=True)).item() == 0.0


def test_the_federated_loss_keeps_the_batchs_classes_and_draws_negatives_by_weight():
    torch.manual_seed(0)
    labels = torch.tensor([5, 5, 9, 20, 20])  # 20 classes: 20 is the background
    weights = tuple(0.0 if c in (3, 7) else 1.0 for c in range(20))  # never draw 3 or 7
    for _ in range(20):
        chosen = federated_classes(labels, 20, 6, weights)
        assert chosen.shape == (20,) and chosen[[5, 9]].tolist() == [1.0, 1.0]
        assert chosen.sum().item() == 6 - 1  # the background counts as one of the 6
        assert chosen[[3, 7]].tolist() == [0.0, 0.0]
    assert federated_classes(labels, 20, 2, weights).sum().item() == 2  # no room left: the batch's only
    spec = CascadeRoIHeadConfig(sigmoid_scores=True, fed_loss_classes=6, fed_loss_weights=weights)
    logits = torch.randn(5, 21)
    torch.manual_seed(1)
    mask = federated_classes(labels, 20, 6, weights)
    y = torch.nn.functional.one_hot(labels, 21)[:, :20].float()
    per_class = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :20], y, reduction="none")
    torch.manual_seed(1)
    assert classification_loss(logits, labels, spec).item() == pytest.approx(
        (per_class * mask).sum().item() / 5, rel=1e-6)
    assert not math.isclose((per_class * mask).sum().item(), per_class.sum().item())
