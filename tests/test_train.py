"""Training: losses fall, a tiny model overfits, resume is exact, DDP runs, bad runs stop cleanly."""
from __future__ import annotations

import json
import os
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from conftest import backbone_passes

import cascade_rcnn
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.engine.train import TrainConfig, TrainingDiverged, train
from cascade_rcnn.models.backbones.resnet import ResNet
from cascade_rcnn.ops.assign_sample import IGNORED, NEGATIVE, AssignerSettings, assign
from cascade_rcnn.weights import checkpoint

TRAIN_SIZE = 128


def train_config(with_mask: bool = True) -> cascade_rcnn.ModelConfig:
    """A from-scratch tiny model: all layers and BatchNorm trained, few RoIs."""
    return cascade_rcnn.ModelConfig(
        name="tiny_train", with_mask=with_mask,
        backbone=cascade_rcnn.ResNetConfig(depth=18, base_channels=8, frozen_stages=0, norm_eval=False),
        fpn_channels=16, fc_channels=64, image_scale=(TRAIN_SIZE, TRAIN_SIZE), anchor_scale=2.0,
        train_proposals=300, rois_per_image=64)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_images=4, size=TRAIN_SIZE, seed=3)
    return root


def run_config(shapes: Path, out: Path, **changes) -> TrainConfig:
    options = dict(train_json=str(shapes / "annotations.json"), train_images=str(shapes / "images"),
                   out_dir=str(out), epochs=2, lr_steps=(), batch_size=2, workers=0, lr=0.02,
                   warmup_iters=2, eval_every=0, log_every=1)
    options.update(changes)
    return TrainConfig(**options)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return checkpoint.state_dict_of(checkpoint.read(out / "final.pth"))


@pytest.mark.parametrize("capability, base_channels, channels_last",
                         [("AVX2", 16, False), ("AVX512", 16, True), ("AVX512", 8, False)])
def test_the_trainer_uses_channels_last_only_where_it_trains_faster_and_safely(
        shapes, tmp_path, monkeypatch, capability, base_channels, channels_last):
    """On a CPU without AVX-512 channels-last convolutions train slower (BENCHMARKS.md): the
    trainer feeds the backbone contiguous batches there, channels-last ones elsewhere - except
    for a model with a strided 1x1 conv of fewer than 16 input channels (the width-8 ResNet's
    layer2 downsample), whose channels-last weight gradient crashes torch 2.14.1 on AVX-512 CPUs
    (tools/channels_last_conv_crash.py)."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    seen = []

    def record_layout(module, args):
        if isinstance(module, ResNet):
            seen.append(args[0].is_contiguous(memory_format=torch.channels_last))

    model_config = train_config()
    model_config = model_config.with_changes(backbone=replace(model_config.backbone, base_channels=base_channels))
    hook = torch.nn.modules.module.register_module_forward_pre_hook(record_layout)
    try:
        train(model_config, run_config(shapes, tmp_path / "run", epochs=1))
    finally:
        hook.remove()
    assert len(seen) == 2 and all(layout == channels_last for layout in seen)  # the epoch's 2 steps


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_after_a_kill_mid_epoch_gives_the_same_weights(shapes, tmp_path, optimizer):
    uninterrupted = tmp_path / "full"
    train(train_config(), run_config(shapes, uninterrupted, checkpoint_every=1, optimizer=optimizer))

    def kill_at_third_iteration(iteration: int) -> None:
        if iteration == 3:  # after the mid-epoch checkpoint of iteration 3 (epoch 2, batch 1)
            raise KeyboardInterrupt

    interrupted = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(train_config(), run_config(shapes, interrupted, checkpoint_every=1, optimizer=optimizer,
                                         on_iteration=kill_at_third_iteration))
    assert not (interrupted / "final.pth").exists()
    progress = checkpoint.read(interrupted / "latest.pth")["progress"]
    assert {k: progress[k] for k in ("epoch", "batch", "iteration")} == {"epoch": 1, "batch": 1, "iteration": 3}
    train(train_config(), run_config(shapes, interrupted, checkpoint_every=1, optimizer=optimizer, resume=True))
    expected, resumed = final_weights(uninterrupted), final_weights(interrupted)
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key


def test_losses_are_finite_fall_and_are_logged(shapes, tmp_path):
    out = tmp_path / "run"
    train(train_config(), run_config(shapes, out, epochs=8, lr_steps=(7,), clip_grad=10.0))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 16
    keys = {"rpn_cls", "rpn_box", "s0_cls", "s0_box", "s0_mask", "s1_cls", "s2_cls", "s2_mask", "lr"}
    assert keys <= set(steps[0])
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    first, last = sum(r["loss"] for r in steps[:4]) / 4, sum(r["loss"] for r in steps[-4:]) / 4
    assert last < 0.85 * first, (first, last)
    assert (out / "curves.png").stat().st_size > 1000


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(shapes, tmp_path):
    out = tmp_path / "run"
    train(train_config(), run_config(shapes, out, epochs=1))
    before = (out / "latest.pth").read_bytes()
    with pytest.raises(TrainingDiverged, match="not finite"):
        train(train_config(), run_config(shapes, out, epochs=3, lr=1e12, warmup_iters=0, resume=True))
    assert (out / "latest.pth").read_bytes() == before


def test_a_fresh_run_replaces_the_earlier_runs_log_and_checkpoints_a_resumed_one_continues(shapes, tmp_path):
    out = tmp_path / "run"

    def iterations() -> list[int]:
        return [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    train(train_config(), run_config(shapes, out, epochs=1))
    assert iterations() == [1, 2]
    train(train_config(), run_config(shapes, out, epochs=1))
    assert iterations() == [1, 2]  # one run per log, not two mixed
    train(train_config(), run_config(shapes, out, epochs=2, resume=True))
    assert iterations() == [1, 2, 3, 4]
    with pytest.raises(TrainingDiverged):  # a fresh run that stops in its first epoch
        train(train_config(), run_config(shapes, out, epochs=1, lr=1e12, warmup_iters=0))
    assert not any((out / name).exists() for name in ("latest.pth", "final.pth", "curves.png"))
    assert iterations() == [1]  # its own first step only: the second one diverged


def test_fine_tuning_with_another_class_count_reinitialises_only_class_layers(shapes, tmp_path, capsys):
    source = tmp_path / "source.pth"
    three_classes = cascade_rcnn.CascadeRCNN(train_config().with_classes(("x", "y", "z")))
    checkpoint.save(source, three_classes)
    out = tmp_path / "run"
    train(train_config(), run_config(shapes, out, epochs=1, weights=str(source)))
    assert "re-initialised roi_head.bbox_head.0.fc_cls.weight" in capsys.readouterr().out
    tuned = cascade_rcnn.build_model(train_config(), weights=out / "final.pth")
    assert tuned.config.num_classes == 5  # the shapes data set's classes
    assert tuned.roi_head.bbox_head[0].fc_cls.out_features == 6


def test_a_trunk_file_initialises_its_parts_and_the_rest_starts_fresh(shapes, tmp_path, capsys):
    """Initial weights holding only the backbone, FPN and RPN (the demo's trunk): those load, the
    RoI heads keep the seeded fresh initialisation, and the log says so."""
    source = cascade_rcnn.CascadeRCNN(train_config())
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(1.0)  # unlike any fresh initialisation
    trunk_file = tmp_path / "trunk.pth"
    torch.save({"state_dict": {k: v for k, v in source.state_dict().items() if not k.startswith("roi_head.")}},
               trunk_file)
    out = tmp_path / "run"
    seen = []
    train(train_config(), run_config(shapes, out, epochs=1, lr=0.0, warmup_iters=0, weights=str(trunk_file),
                                     on_iteration=seen.append))
    assert seen == [1, 2] and "holds no roi_head; it starts from a fresh initialisation" in capsys.readouterr().out
    names = tuple(c["name"] for c in json.loads((shapes / "annotations.json").read_text())["categories"])
    torch.manual_seed(0)  # the trainer's seed: the fresh model it starts from
    fresh = cascade_rcnn.CascadeRCNN(train_config().with_classes(names)).state_dict()
    trained = final_weights(out)
    parameters = dict(source.named_parameters())
    for key, value in trained.items():  # lr 0: the weights are the initial ones (BatchNorm statistics move)
        if key in parameters:
            expected = (fresh if key.startswith("roi_head.") else source.state_dict())[key]
            assert torch.equal(value, expected), key


def test_initial_weights_missing_part_of_a_part_are_refused(shapes, tmp_path):
    """Only whole parts may be absent: a backbone with a layer missing is another architecture."""
    state = cascade_rcnn.CascadeRCNN(train_config()).state_dict()
    del state["backbone.layer4.1.conv2.weight"]
    partial = tmp_path / "partial.pth"
    torch.save({"state_dict": state}, partial)
    with pytest.raises(checkpoint.CheckpointError, match="1 missing .*backbone.layer4.1.conv2.weight"):
        train(train_config(), run_config(shapes, tmp_path / "run", epochs=1, weights=str(partial)))
    trunk = {k: v for k, v in state.items() if not k.startswith("roi_head.")}
    torch.save({"state_dict": trunk}, partial)
    with pytest.raises(checkpoint.CheckpointError, match="missing"):  # to predict, every part is needed
        cascade_rcnn.build_model(train_config(), weights=partial)


def test_initial_weights_without_a_backbone_and_of_other_classes_say_both(shapes, tmp_path, capsys):
    """A file of another class count that lacks the backbone: the class layers are re-initialised,
    the backbone starts fresh, and a config that expects a pretrained backbone warns about it."""
    frozen = replace(train_config(), backbone=cascade_rcnn.ResNetConfig(depth=18, base_channels=8))
    source = cascade_rcnn.CascadeRCNN(frozen.with_classes(("x", "y", "z"))).state_dict()
    no_backbone = tmp_path / "no_backbone.pth"
    torch.save({"state_dict": {k: v for k, v in source.items() if not k.startswith("backbone.")}}, no_backbone)
    train(frozen, run_config(shapes, tmp_path / "run", epochs=1, weights=str(no_backbone)))
    out = capsys.readouterr().out
    assert f"{no_backbone}: holds no backbone; it starts from a fresh initialisation" in out
    assert "in the data: re-initialised roi_head.bbox_head.0.fc_cls.weight" in out
    assert "expects pretrained weights" in out and "its backbone stays random" in out


def test_a_checkpoint_without_weights_is_refused_not_taken_for_all_parts_absent(tmp_path):
    empty = tmp_path / "empty.pth"
    torch.save({"state_dict": {}}, empty)
    model = cascade_rcnn.CascadeRCNN(train_config())
    with pytest.raises(checkpoint.CheckpointError, match="empty.pth: no state dict of tensors found"):
        checkpoint.load_into(model, checkpoint.read(empty), empty, absent_parts_fresh=True)


def test_crowd_regions_follow_the_configs_ignore_iof_thr():
    """MMDetection's MaxIoUAssigner: with ignore_iof_thr > 0 a box more than that fraction inside a
    crowd region is ignored, a would-be positive too; the zoo's -1 leaves crowd regions out."""
    boxes = torch.tensor([[0., 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110], [44, 44, 56, 56]])
    gt = torch.tensor([[0., 0, 10, 10], [45, 45, 55, 55]])
    crowd = torch.tensor([[40., 40, 70, 70]])
    assert assign(boxes, gt, AssignerSettings(0.5, 0.5), crowd).tolist() == [0, NEGATIVE, NEGATIVE, 1]
    assert assign(boxes, gt, AssignerSettings(0.5, 0.5, crowd_iof=0.5), crowd).tolist() == [0, IGNORED, NEGATIVE,
                                                                                          IGNORED]


def test_images_without_annotations_train_as_negatives(tmp_path):
    root = tmp_path / "data"
    generate_shapes(root, num_images=2, size=TRAIN_SIZE, seed=1)
    data = json.loads((root / "annotations.json").read_text())
    first = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != first]
    (root / "annotations.json").write_text(json.dumps(data))
    out = tmp_path / "run"
    train(train_config(), run_config(root, out, epochs=1, filter_empty_gt=False, batch_size=1))
    assert (out / "final.pth").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "loss" in r]) == 2  # the empty image made a step of its own


DDP_SCRIPT = """
import sys
import torch
from cascade_rcnn.engine.train import TrainConfig, train
sys.path.insert(0, {tests!r})
from test_train import ddp_config
torch.set_num_threads(1)
train(ddp_config(), TrainConfig(train_json={json!r}, train_images={images!r}, out_dir={out!r},
      epochs=1, lr_steps=(), batch_size=1, workers=0, lr=0.02, warmup_iters=0, eval_every=0, log_every=1,
      seed={seed}))
"""

# Two gloo ranks (one image each) against one process (both images in one batch): after the one
# step, the weights must agree to float noise. That holds only where every loss normaliser is the
# same for both images, so the test data are built for it: the second image is the first one's
# pixels inverted (different gradients: a rank that skipped the all-reduce would train on its own
# image only) under the same annotations and the same flip (the seed is chosen so), so the RPN's
# anchor labels are the same; every anchor and every RoI is sampled (no random subset, no RNG
# draw), each image keeps its full 300 proposals, so each stage trains on 300 + G RoIs per image;
# no mask head (its loss is a mean over the positives, whose count differs) and BatchNorm in eval
# mode (batch statistics of one image differ from those of two). The ranks' models start from
# different seeds (seed + rank): DDP must broadcast rank 0's.
# Measured (AMD EPYC, AVX-512 and ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 alike, 1 thread
# per rank): max |DDP - single| over all weights 3.4e-8, after a step whose largest weight change
# is 0.068. Deliberate breaks of train.py, each failing: no DistributedDataParallel (no
# all-reduce, no broadcast) 0.022; DDP without the initial broadcast (init_sync=False) 0.12; the
# loss times the world size (gradients summed, not averaged) 0.068. The bound, 1e-5, is 300x the
# noise and 2000x below the smallest break.
DDP_ATOL = 1e-5


def ddp_config() -> cascade_rcnn.ModelConfig:
    config = train_config(with_mask=False)
    return config.with_changes(backbone=replace(config.backbone, norm_eval=True),
                               rpn_samples_per_image=10**9, rois_per_image=10**9)


def test_two_gloo_ranks_give_the_weights_of_one_process_on_the_same_global_batch(tmp_path):
    from cascade_rcnn.data.coco import CocoDataset
    from cascade_rcnn.data.loader import AugmentedDataset

    data = tmp_path / "data"
    generate_shapes(data, num_images=1, size=TRAIN_SIZE, seed=3)
    coco = json.loads((data / "annotations.json").read_text())
    first = data / "images" / coco["images"][0]["file_name"]
    inverted = data / "images" / "inverted.png"
    cv2.imwrite(str(inverted), 255 - cv2.imread(str(first)))
    coco["images"].append({**coco["images"][0], "id": coco["images"][0]["id"] + 1, "file_name": inverted.name})
    coco["annotations"] += [{**a, "id": 1000 + a["id"], "image_id": coco["images"][1]["id"]}
                            for a in coco["annotations"]]
    (data / "annotations.json").write_text(json.dumps(coco))
    dataset = CocoDataset(data / "annotations.json", data / "images", with_masks=False)

    def same_flip(seed: int) -> bool:
        samples = AugmentedDataset(dataset, ddp_config(), seed, with_masks=False)
        return torch.equal(samples[0].target["boxes"], samples[1].target["boxes"])

    seed = next(s for s in range(50) if same_flip(s))

    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), json=str(data / "annotations.json"),
                                        images=str(data / "images"), out=str(tmp_path / "ddp"), seed=seed))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node", "2", str(script)], capture_output=True, text=True,
                            env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "loss" in r]) == 1  # 2 images / (2 ranks x 1 image), logged by rank 0 only

    train(ddp_config(), run_config(data, tmp_path / "single", epochs=1, batch_size=2, warmup_iters=0, seed=seed))
    torch.manual_seed(seed)
    classes = tuple(c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"]))
    initial = cascade_rcnn.CascadeRCNN(ddp_config().with_classes(classes)).state_dict()
    expected, distributed = final_weights(tmp_path / "single"), final_weights(tmp_path / "ddp")
    assert expected.keys() == distributed.keys() == initial.keys()
    noise = max((expected[k].double() - distributed[k].double()).abs().max().item() for k in expected)
    step = max((expected[k].double() - initial[k].double()).abs().max().item() for k in expected)
    print(f"max |DDP - single| {noise:.3g}, largest weight change {step:.3g}")
    assert step > 1000 * DDP_ATOL, step  # the step moved the weights: the comparison means something
    assert noise <= DDP_ATOL, noise


def test_evaluation_every_epoch_is_logged(shapes, tmp_path):
    out = tmp_path / "run"
    train(train_config(), run_config(shapes, out, epochs=1, eval_every=1, val_json=str(shapes / "annotations.json"),
                                     val_images=str(shapes / "images")))
    evaluations = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                   if "eval" in line]
    assert len(evaluations) == 1 and evaluations[0]["epoch"] == 1
    assert {"bbox", "segm"} == set(evaluations[0]["eval"])
    assert 0 <= evaluations[0]["eval"]["bbox"]["AP90"] <= 1


def test_bf16_autocast_trains_with_float32_master_weights(shapes, tmp_path, pretend_cpu_has_bf16):
    out = tmp_path / "run"
    with backbone_passes() as passes:
        final = train(train_config(), run_config(shapes, out, epochs=1, precision="bf16", log_every=1))
    assert passes == [(2, {torch.bfloat16})] * 2  # the epoch's 2 steps of 2 images ran in bf16
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    state = checkpoint.state_dict_of(checkpoint.read(final), final)
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


def test_training_refuses_a_precision_the_device_cannot_run(shapes, tmp_path):
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        train(train_config(), run_config(shapes, tmp_path / "run", epochs=1, precision="fp16"))


def test_a_tiny_model_overfits_a_few_images(shapes, tmp_path):
    """Training really learns: after ~150 steps on 4 images their box AP is high."""
    from cascade_rcnn.data.coco import CocoDataset
    from cascade_rcnn.engine.validate import evaluate_dataset

    out = tmp_path / "run"
    torch.manual_seed(0)
    final = train(train_config(), run_config(shapes, out, epochs=150, lr_steps=(120,), batch_size=4, lr=0.02,
                                             warmup_iters=10, clip_grad=10.0, log_every=50))
    model = cascade_rcnn.build_model(train_config(), weights=final)
    metrics = evaluate_dataset(model, CocoDataset(shapes / "annotations.json", shapes / "images"),
                               shapes / "annotations.json")
    assert metrics["bbox"]["AP50"] > 0.8, metrics["bbox"]
    assert metrics["bbox"]["AP"] > 0.5, metrics["bbox"]


def test_resume_refuses_a_changed_run(shapes, tmp_path):
    out = tmp_path / "run"
    train(train_config(), run_config(shapes, out, epochs=1))
    with pytest.raises(ValueError, match="batch_size: 2 -> 1"):
        train(train_config(), run_config(shapes, out, epochs=2, batch_size=1, resume=True))
    other_settings = train_config().with_changes(stage_ious=(0.5, 0.6, 0.75))
    with pytest.raises(ValueError, match="model setting stage_ious: 0.5,0.6,0.7 -> 0.5,0.6,0.75"):
        train(other_settings, run_config(shapes, out, epochs=2, resume=True))


def test_resume_refuses_another_optimizer(shapes, tmp_path):
    out = tmp_path / "run"
    train(train_config(), run_config(shapes, out, epochs=1))
    with pytest.raises(ValueError, match="optimizer: sgd -> adamw"):
        train(train_config(), run_config(shapes, out, epochs=2, optimizer="adamw", resume=True))


def test_unknown_optimizer_is_refused(shapes, tmp_path):
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; choose one of sgd, adamw"):
        train(train_config(), run_config(shapes, tmp_path / "run", optimizer="adam"))


def test_validation_needs_both_json_and_images(shapes, tmp_path):
    with pytest.raises(ValueError, match="both --val-json and --val-images"):
        train(train_config(), run_config(shapes, tmp_path / "run", val_json=str(shapes / "annotations.json")))
