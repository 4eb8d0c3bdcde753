"""The demo's shipped trunk and how it is made (the demo's whole job: tests/test_cli.py)."""
from __future__ import annotations

import torch

import cascade_rcnn
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.engine.demo import DEMO_MODEL, DEMO_TRUNK, TRUNK_PARTS, DemoSettings, make_trunk
from cascade_rcnn.weights import checkpoint


def trunk_state(path) -> dict[str, torch.Tensor]:
    return checkpoint.state_dict_of(checkpoint.read(path), path)


def test_the_shipped_trunk_is_the_demo_models_backbone_fpn_and_rpn():
    """Every key of those parts, none of the RoI heads', the model's shapes, float16 (half the file)."""
    state = trunk_state(DEMO_TRUNK)
    own = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(DEMO_MODEL)).state_dict()
    assert set(state) == {key for key in own if key.split(".", 1)[0] in TRUNK_PARTS}
    assert all(state[key].shape == own[key].shape for key in state)
    assert {value.dtype for value in state.values() if value.is_floating_point()} == {torch.float16}
    assert all(torch.isfinite(value.float()).all() for value in state.values())


def test_make_trunk_trains_on_its_own_seed_and_keeps_the_trunk(tmp_path):
    """A shrunk ``make_trunk``: the training data is of its own seed (not the demo's 0 and 1), the
    file holds the trained trunk in float16, and the demo starts from such a file."""
    settings = DemoSettings.from_scratch(train_images=4, epochs=1, lr_steps=(), warmup_iters=1)
    out = make_trunk(tmp_path / "trunk.pth", tmp_path / "work", settings, seed=5)
    state = trunk_state(out)
    trained = trunk_state(tmp_path / "work" / "train" / "final.pth")
    assert set(state) == {key for key in trained if key.split(".", 1)[0] in TRUNK_PARTS}
    assert all(torch.equal(state[key], trained[key].half() if trained[key].is_floating_point() else trained[key])
               for key in state)
    demo_data = tmp_path / "demo_seed_0"
    generate_shapes(demo_data, 4, settings.image_size, seed=0)
    assert (tmp_path / "work" / "data" / "train" / "annotations.json").read_bytes() != \
        (demo_data / "annotations.json").read_bytes()
    model = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(DEMO_MODEL))
    skipped = checkpoint.load_into(model, checkpoint.read(out), out, absent_parts_fresh=True)
    assert skipped and all(key.startswith("roi_head.") for key in skipped)
