"""Training: SGD with warm-up and step decay, per-epoch atomic checkpoints, exact resume,
optional AMP and gradient clipping, DistributedDataParallel under torchrun."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..data.coco import CocoDataset, DatasetError
from ..data.loader import AugmentedDataset, batches_per_epoch, epoch_loader
from ..errors import CascadeRCNNError, UserInputError, user_input
from ..inference.predictor import CascadeRCNN
from ..models.config import ModelConfig
from ..models.settings import settings_text
from ..ops.compute_path import channels_last_trains_faster, channels_last_trains_safely, check_precision
from ..outputs.overwrite_guard import refuse_inputs_in
from ..weights import checkpoint
from ..weights.backbone_weights import backbone_weights_source, load_backbone_weights
from ..weights.zoo import published_url
from . import distributed
from .param_groups import parameter_groups
from .schedule import SCHEDULES, LRSchedule, scaled_lr
from .train_log import CURVES, METRICS, TrainLog
from .validate import evaluate_dataset

LATEST = "latest.pth"
FINAL = "final.pth"
RUN_FILES = (LATEST, FINAL, METRICS, CURVES)  # what a run writes in OUT (besides TensorBoard's folder)
SETTING = "model setting "  # prefix of the model settings in a checkpoint's progress record


@dataclass(frozen=True)
class OptimizerDefaults:
    lr_per_16: float  # lr for 16 images per step, scaled linearly with the real batch
    weight_decay: float


# SGD is MMDetection v2's recipe for Cascade R-CNN. AdamW (MMDetection's ConvNeXt Mask R-CNN
# recipe) learns much faster from scratch with little compute: the offline demo uses it.
OPTIMIZERS = {"sgd": OptimizerDefaults(lr_per_16=0.02, weight_decay=1e-4),
              "adamw": OptimizerDefaults(lr_per_16=2e-4, weight_decay=0.05)}


class TrainingStopped(CascadeRCNNError, RuntimeError):
    """The run stopped on purpose; the last good checkpoint is left as it was."""


class TrainingDiverged(TrainingStopped):
    """The loss became NaN or infinite."""


class TooManyFailedImages(TrainingStopped):
    """More than ``TrainConfig.max_failed_fraction`` of the images failed to load in one epoch."""


@dataclass
class TrainConfig:
    """One training run. ``batch_size`` is per process; lr defaults to 0.02 x total batch / 16."""

    train_json: str
    train_images: str
    out_dir: str = "runs/train"
    val_json: str | None = None
    val_images: str | None = None
    weights: str | None = None  # initial weights (a zoo checkpoint to fine-tune, or ours)
    # Backbone initialisation without ``weights``: None = the config's ImageNet weights if it has
    # them (zoo configs), "imagenet", "none" (random), or a path / URL (backbone_weights.py).
    backbone_weights: str | None = None
    schedule: str = "1x"
    epochs: int | None = None  # default: the schedule's (12 for 1x, 20 for 20e)
    lr_steps: tuple[int, ...] | None = None  # default: the schedule's decay epochs
    lr: float | None = None
    lr_per_16: float | None = None  # without lr: the lr for 16 images, scaled with the real batch (default OPTIMIZERS')
    batch_size: int = 2
    workers: int = 2
    warmup_iters: int = 500
    optimizer: str = "sgd"  # "sgd" (MMDetection's recipe) or "adamw"; see OPTIMIZERS
    momentum: float = 0.9  # SGD only
    weight_decay: float | None = None  # default: the optimizer's (OPTIMIZERS)
    # "fp32", "bf16" (CPUs with bfloat16 instructions, CUDA) or "fp16" (CUDA, with a gradient
    # scaler): autocast in the loss, master weights and loss terms in float32 (low_precision.py).
    precision: str = "fp32"
    clip_grad: float | None = None
    seed: int = 0
    eval_every: int = 1  # epochs; 0 = never
    checkpoint_every: int = 0  # iterations; 0 = at the end of every epoch only
    filter_empty_gt: bool = True  # leave out images without annotations (MMDetection's COCO recipe)
    min_size: int = 32  # leave out images whose shorter side is below this (MMDetection's COCO recipe)
    max_failed_fraction: float = 0.01  # stop when more of an epoch's images fail to load
    device: str = "cpu"
    resume: bool = False
    log_every: int = 10
    # Called after every iteration with the global iteration count (hooks, tests).
    on_iteration: Callable[[int], None] | None = field(default=None, repr=False)

    @property
    def total_epochs(self) -> int:
        return self.epochs if self.epochs is not None else SCHEDULES[self.schedule][0]

    @property
    def decay_epochs(self) -> tuple[int, ...]:
        return self.lr_steps if self.lr_steps is not None else SCHEDULES[self.schedule][1]


def train(model_config: ModelConfig, config: TrainConfig) -> Path:
    """Train ``model_config`` on ``config.train_json``; returns the final checkpoint's path.

    Unless it resumes, the run starts afresh: the checkpoints, metrics.jsonl and curves.png of an
    earlier run in ``config.out_dir`` are replaced from the start. An ``out_dir`` that is or holds
    one of the run's input files or folders is refused (``WouldOverwrite``)."""
    context = distributed.start(config.device)
    try:
        return _train(model_config, config, context)
    finally:
        distributed.stop(context)


@dataclass
class _Run:
    """One training run between steps: what it trains, with what, and how far it is."""

    config: TrainConfig
    context: distributed.Context
    log: TrainLog
    dataset: CocoDataset
    val_set: CocoDataset | None  # None: no evaluation
    model: CascadeRCNN
    network: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    parameters: list[torch.nn.Parameter]  # those trained
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    layout: dict  # what a checkpoint must have been written with to be resumed (see _restore)
    latest: Path  # OUT/latest.pth, written after every epoch (and every checkpoint_every steps)
    epoch: int = 0  # epochs finished
    skip: int = 0  # batches of the current epoch already trained (resumed mid-epoch)
    iteration: int = 0  # optimiser steps taken

    @property
    def last_good(self) -> str:
        """The checkpoint a stopped run leaves, for its error message."""
        return str(self.latest) if self.latest.exists() else "none (no epoch finished)"


def _train(model_config: ModelConfig, config: TrainConfig, context: distributed.Context) -> Path:
    """Set up, train every epoch left, write the final weights."""
    run = _setup(model_config, config, context)
    _loop(run)
    final = Path(config.out_dir) / FINAL
    distributed.on_main(lambda: checkpoint.save(final, run.model), context)
    run.log.close()
    return final


def _setup(model_config: ModelConfig, config: TrainConfig, context: distributed.Context) -> _Run:
    """Check the options, load the data, build the model with its initial weights and the
    optimiser; with ``config.resume``, continue from OUT/latest.pth when there is one."""
    if config.optimizer not in OPTIMIZERS:
        raise UserInputError(f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    with user_input():
        check_precision(config.precision, context.device)
    out, latest = Path(config.out_dir), Path(config.out_dir) / LATEST
    refuse_inputs_in(out, [("--train-json", config.train_json), ("--train-images", config.train_images),
                           ("--val-json", config.val_json), ("--val-images", config.val_images),
                           ("--weights", config.weights), ("--backbone-weights", config.backbone_weights)], "--out")
    resuming = config.resume and latest.is_file()
    if context.is_main and not resuming:  # a fresh run: no checkpoint of another run left beside its own
        for name in (LATEST, FINAL):
            (out / name).unlink(missing_ok=True)
    log = TrainLog(out, enabled=context.is_main, append=resuming)
    dataset, val_set = _datasets(model_config, config, log)
    model_config = model_config.with_classes(dataset.class_names, dataset.category_ids)
    model = _initial_model(model_config, config, context, log)
    total_batch = config.batch_size * context.world_size
    lr_per_16 = config.lr_per_16 if config.lr_per_16 is not None else OPTIMIZERS[config.optimizer].lr_per_16
    schedule = LRSchedule(config.lr if config.lr is not None else scaled_lr(total_batch, lr_per_16),
                          config.decay_epochs, config.warmup_iters)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(config, model, schedule.base_lr)
    scaler = torch.amp.GradScaler(context.device.type, enabled=config.precision == "fp16")
    layout = {"num_items": len(dataset), "world_size": context.world_size, "batch_size": config.batch_size,
              "seed": config.seed, "optimizer": config.optimizer,
              **{f"{SETTING}{k}": v for k, v in settings_text(model_config).items()}}
    position = (0, 0, 0)  # epoch, batch, iteration
    if resuming:
        position = _restore(latest, model, optimizer, scaler, context, layout)
        log.message(f"resumed from {latest}: epoch {position[0] + 1}, batch {position[1]}, iteration {position[2]}")
    elif config.resume:
        log.message(f"--resume: no checkpoint at {latest}, starting from scratch")
    network = DistributedDataParallel(model) if context.distributed else model
    return _Run(config, context, log, dataset, val_set, model, network, parameters, optimizer, scaler,
                schedule, layout, latest, *position)


def _datasets(model_config: ModelConfig, config: TrainConfig, log: TrainLog
              ) -> tuple[CocoDataset, CocoDataset | None]:
    """The training set (its report logged; refused if nothing is left) and the validation set
    (refused if any image of it is unusable; None when never evaluated)."""
    if bool(config.val_json) != bool(config.val_images):
        raise UserInputError("give both --val-json and --val-images, or neither")
    dataset = CocoDataset(config.train_json, config.train_images, filter_empty_gt=config.filter_empty_gt,
                          min_size=config.min_size, with_masks=model_config.with_mask)
    log.message(f"training data {config.train_json}: {dataset.report.summary()}")
    if len(dataset) == 0:
        raise DatasetError(f"{config.train_json}: no usable training image left (see the report above)")
    val_set = None
    if config.val_json and config.eval_every:
        val_set = CocoDataset(config.val_json, config.val_images, class_names=list(dataset.class_names),
                              with_masks=False)
        val_set.require_every_image()
    return dataset, val_set


def _initial_model(model_config: ModelConfig, config: TrainConfig, context: distributed.Context,
                   log: TrainLog) -> CascadeRCNN:
    """The model (seeded per rank) with ``config.weights``, or else the backbone's initial
    weights, on the device in training mode."""
    with user_input():
        backbone_source = backbone_weights_source(model_config, config.backbone_weights, config.weights)
    torch.manual_seed(config.seed + context.rank)
    model = CascadeRCNN(model_config)
    fresh_parts = []
    if config.weights:
        fresh_parts = _load_initial_weights(model, initial_weights(model_config, config.weights), log)
    elif backbone_source:
        log.message(load_backbone_weights(model.backbone, backbone_source).summary())
    random_backbone = "backbone" in fresh_parts or not (config.weights or backbone_source)
    if random_backbone and (model_config.backbone.frozen_stages or model_config.backbone.norm_eval):
        log.message(f"warning: {model_config.name} expects pretrained weights (frozen stem and layer1, "
                    "fixed BatchNorm statistics) but none were given: its backbone stays random")
    model.to(context.device).train()
    channels_last = (model.path.channels_last and channels_last_trains_faster(context.device)
                     and channels_last_trains_safely(model, context.device))
    model.path = replace(model.path, precision=config.precision, channels_last=channels_last)
    return model


def _loop(run: _Run) -> None:
    """Every epoch left, from where the run stands, with a progress bar over all of them."""
    config, context = run.config, run.context
    augmented = AugmentedDataset(run.dataset, run.model.config, config.seed, with_masks=run.model.config.with_mask)
    per_epoch = batches_per_epoch(len(run.dataset), config.batch_size, context.world_size)
    progress = tqdm(total=per_epoch * config.total_epochs, initial=run.epoch * per_epoch + run.skip,
                    unit="it", disable=not context.is_main, dynamic_ncols=True)
    while run.epoch < config.total_epochs:
        loader = epoch_loader(augmented, run.epoch, config.batch_size, config.workers, config.seed,
                              context.rank, context.world_size, run.skip)
        failed_images = 0  # this epoch's, all ranks
        for batch_index, batch in enumerate(loader, start=run.skip):
            start = time.perf_counter()
            failed_images, empty_batches = _count_failures(run, batch, failed_images)
            if empty_batches:  # some rank has no image left: every rank skips the step together
                continue
            lr, loss, losses = _step(run, batch)
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)
            if run.iteration % config.log_every == 0 or batch_index + 1 == per_epoch:
                run.log.scalars(run.iteration, {
                    "epoch": run.epoch + (batch_index + 1) / per_epoch, "loss": loss, "lr": lr,
                    "step_s": time.perf_counter() - start, "mem_gb": _memory_gb(context.device),
                    "failed_images": failed_images, **losses})
            if config.checkpoint_every and run.iteration % config.checkpoint_every == 0 and batch_index + 1 < per_epoch:
                _save(run, batch_index + 1)
            if config.on_iteration is not None:
                config.on_iteration(run.iteration)
        _end_epoch(run, failed_images)
    progress.close()


def _count_failures(run: _Run, batch, failed_images: int) -> tuple[int, int]:
    """Warn about each image of ``batch`` that failed to load, and stop the run once more than
    ``max_failed_fraction`` of the images failed in this epoch. Returns (the epoch's failed images
    so far, all ranks; how many ranks' batches have no image left)."""
    for failed in batch.failed:
        rank = f"rank {run.context.rank}: " if run.context.distributed else ""
        tqdm.write(f"{rank}warning: skipped a training image: {failed.reason}", file=sys.stderr)
    failed_now, empty_batches = distributed.sum_ints([len(batch.failed), int(not batch.targets)], run.context)
    failed_images += failed_now
    if failed_images > run.config.max_failed_fraction * len(run.dataset):
        raise TooManyFailedImages(
            f"{failed_images} of the {len(run.dataset)} training images failed to load in epoch {run.epoch + 1} "
            f"(more than {run.config.max_failed_fraction:.2%}; the warnings above name them); the last "
            f"good checkpoint is {run.last_good}")
    return failed_images, empty_batches


def _step(run: _Run, batch) -> tuple[float, float, dict[str, float]]:
    """One optimiser step on ``batch`` at the schedule's lr. Returns the lr, the loss (the sum of
    the network's outputs less the ``*_acc`` accuracies) and every output. Raises
    :class:`TrainingDiverged` on a non-finite loss, before any weight changes."""
    config, context, optimizer = run.config, run.context, run.optimizer
    lr = run.schedule.lr(run.epoch, run.iteration)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints from before the groups have none
    batch = batch.to(context.device)
    losses = run.network(batch.images, batch.targets, batch.sizes)
    total = sum(v for k, v in losses.items() if not k.endswith("_acc"))
    if not distributed.all_true(bool(torch.isfinite(total)), context):
        raise TrainingDiverged(
            f"loss is not finite at epoch {run.epoch + 1}, iteration {run.iteration} "
            f"({', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())}); "
            f"the last good checkpoint is {run.last_good}. Lower --lr, or use --clip-grad.")
    optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    if config.clip_grad:
        run.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(run.parameters, config.clip_grad)
    run.scaler.step(optimizer)
    run.scaler.update()
    run.iteration += 1
    return lr, total.item(), {k: v.item() for k, v in losses.items()}


def _end_epoch(run: _Run, failed_images: int) -> None:
    """Say how many images failed, move to the next epoch, checkpoint it, evaluate when due."""
    if failed_images:
        run.log.message(f"epoch {run.epoch + 1}: {failed_images} image(s) failed to load and were skipped")
    run.epoch, run.skip = run.epoch + 1, 0
    _save(run, 0)
    if run.val_set is not None and (run.epoch % run.config.eval_every == 0 or run.epoch == run.config.total_epochs):
        run.model.eval()
        metrics = evaluate_dataset(run.model, run.val_set, run.config.val_json, run.context)
        run.model.train()
        if run.context.is_main:
            run.log.evaluation(run.iteration, run.epoch, metrics)


def _make_optimizer(config: TrainConfig, model: CascadeRCNN, lr: float) -> torch.optim.Optimizer:
    """The optimizer over the model's trainable parameters, grouped by ``parameter_groups``
    (the backbone spec's lr and weight-decay rules, e.g. ConvNeXt's layer-wise lr decay)."""
    weight_decay = (config.weight_decay if config.weight_decay is not None
                    else OPTIMIZERS[config.optimizer].weight_decay)
    groups = parameter_groups(model, weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)


def initial_weights(model_config: ModelConfig, weights: str) -> str:
    """``TrainConfig.weights`` as a path or URL: ``"zoo"`` is the config's published checkpoint."""
    return published_url(model_config) if weights == "zoo" else weights


def _load_initial_weights(model: CascadeRCNN, weights: str, log: TrainLog) -> list[str]:
    """Load ``weights``; if its class count differs from the data set's, re-initialise the
    class layers (and say which); parts of the detector the file has no key of (e.g. the RoI
    heads of a trunk) keep their fresh initialisation (said too). Returns those parts' names."""
    path = checkpoint.resolve(weights)
    loaded = checkpoint.read(path)
    state = checkpoint.state_dict_of(loaded, path)
    key = "roi_head.bbox_head.0.fc_cls.weight"
    differs = key in state and state[key].shape != model.state_dict()[key].shape
    skipped = checkpoint.load_into(model, loaded, path, reinit_class_layers=differs, absent_parts_fresh=True)
    class_layers = [name for name in skipped if differs and name.endswith(checkpoint.CLASS_LAYER_SUFFIXES)]
    fresh_parts = sorted({name.split(".", 1)[0] for name in skipped if name not in class_layers})
    if fresh_parts:
        log.message(f"{path}: holds no {', '.join(fresh_parts)}; "
                    f"{'it starts' if len(fresh_parts) == 1 else 'they start'} from a fresh initialisation")
    if class_layers:
        log.message(f"{path}: {state[key].shape[0] - 1} classes in the checkpoint, "
                    f"{model.config.num_classes} in the data: re-initialised {', '.join(class_layers)}")
    return fresh_parts


def _save(run: _Run, batch: int) -> None:
    """OUT/latest.pth at ``batch`` of the run's epoch: everything needed to continue exactly
    (weights, optimizer, scaler, position, RNG states)."""
    rng = distributed.gather_lists([torch.get_rng_state()], run.context)
    settings = {k: v for k, v in asdict(run.config).items() if k != "on_iteration"}
    distributed.on_main(lambda: checkpoint.save(
        run.latest, run.model, optimizer=run.optimizer.state_dict(), scaler=run.scaler.state_dict(),
        progress={"epoch": run.epoch, "batch": batch, "iteration": run.iteration, **run.layout},
        rng_per_rank=rng, train_config=settings), run.context)


def _restore(path: Path, model: CascadeRCNN, optimizer, scaler, context: distributed.Context,
             layout: dict) -> tuple[int, int, int]:
    """Load a training checkpoint; refuse one whose data, batch or process layout differs,
    since the position inside the epoch would then point at other images."""
    loaded = checkpoint.read(path)
    progress = loaded["progress"]
    # Checkpoints from before --optimizer used SGD; those from before --set, the run's settings.
    recorded = {"optimizer": "sgd", **{k: v for k, v in layout.items() if k.startswith(SETTING)}, **progress}
    changed = {k: (recorded.get(k), v) for k, v in layout.items() if recorded.get(k) != v}
    if changed:
        raise UserInputError(f"{path}: cannot resume exactly, the run changed since it was written "
                             f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())}); "
                             "start a new --out, or pass the checkpoint as --weights")
    checkpoint.load_into(model, loaded, path)
    optimizer.load_state_dict(loaded["optimizer"])
    if loaded["scaler"]:  # empty when the run was written without fp16
        scaler.load_state_dict(loaded["scaler"])
    torch.set_rng_state(loaded["rng_per_rank"][context.rank])
    return progress["epoch"], progress["batch"], progress["iteration"]


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
