"""Batches for training: deterministic order and augmentation, sharded across processes.

Everything random here is a function of (seed, epoch, image index), so a run resumed from a
checkpoint - even mid-epoch - sees exactly the batches an uninterrupted run would have seen,
whatever the number of loader workers.

An image that fails to load (unreadable or changed since the data set was checked, an I/O error)
does not raise in the worker: it comes back as a ``FailedSample`` and the batch goes on without it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import torch
from torch.utils.data import DataLoader, Dataset

from ..models.config import ModelConfig
from ..models.input_norm import MMDETECTION_RESIZE
from .coco import CocoDataset
from .lsj import large_scale_jitter
from .resize_crop import resize_crop
from .transforms import TrainSample, pad_batch, train_transform


@dataclass(frozen=True)
class FailedSample:
    """An image that could not be loaded: its file name and the one-line reason (naming the path)."""

    file_name: str
    reason: str


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) padded; B = 0 when every image of the batch failed
    targets: list[dict]
    sizes: torch.Tensor  # (B, 2) long: each image's (h, w) before padding
    failed: list[FailedSample] = field(default_factory=list)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.images.to(device, non_blocking=True),
                     [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in self.targets],
                     self.sizes, self.failed)


class AugmentedDataset(Dataset):
    """Applies ``train_transform`` with a flip, and a scale drawn from the config's
    ``train_scale_choice`` or ``train_scale_range`` (if any), DETR's resize-crop
    (``train_resize_crop``) or ViTDet's large-scale jitter (``train_lsj``), decided by (seed,
    epoch, index)."""

    def __init__(self, dataset: CocoDataset, config: ModelConfig, seed: int, flip_probability: float = 0.5,
                 with_masks: bool = True):
        self.dataset, self.config, self.seed = dataset, config, seed
        self.flip_probability, self.with_masks = flip_probability, with_masks
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> TrainSample | FailedSample:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
        flip = bool(torch.rand((), generator=generator) < self.flip_probability)
        scale = training_scale(self.config, generator)
        try:
            sample = self.dataset[index]
        except (OSError, ValueError, cv2.error) as error:  # ImageError and DatasetError are ValueErrors
            return FailedSample(self.dataset.records[index].file_name, str(error).splitlines()[0])
        if not self.with_masks:
            sample = {k: v for k, v in sample.items() if k != "masks"}
        rule = self.config.resize_rule  # the model's, for a scale of the image as it was loaded
        if self.config.train_resize_crop:
            (sample, scale), rule = resize_crop(sample, generator), MMDETECTION_RESIZE
        elif self.config.train_lsj:
            (sample, scale), rule = large_scale_jitter(sample, self.config.train_lsj, generator), MMDETECTION_RESIZE
        return train_transform(sample, scale, flip, self.config.pixel_mean, self.config.pixel_std,
                               self.config.bgr_input, rule)


def training_scale(config: ModelConfig, generator: torch.Generator) -> tuple[int, int]:
    """The (long, short) scale one training image is resized to fit: ``image_scale``; with a
    ``train_scale_choice`` one of its scales, each as likely; with a ``train_scale_range`` each side
    drawn uniformly between the two scales' sides (inclusive)."""
    if config.train_scale_choice is not None:
        return config.train_scale_choice[int(torch.randint(len(config.train_scale_choice), (), generator=generator))]
    if config.train_scale_range is None:
        return config.image_scale
    (long_a, short_a), (long_b, short_b) = config.train_scale_range
    long_side = int(torch.randint(min(long_a, long_b), max(long_a, long_b) + 1, (), generator=generator))
    short_side = int(torch.randint(min(short_a, short_b), max(short_a, short_b) + 1, (), generator=generator))
    return long_side, short_side


def epoch_order(num_items: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This process's share of a shuffled epoch: the same permutation on every rank, strided."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    total = -(-num_items // world_size) * world_size  # equal shares, as DistributedSampler
    padded = (order * -(-total // num_items))[:total]
    return padded[rank::world_size]


def group_by_orientation(order: list[int], landscape: list[bool], batch_size: int) -> list[list[int]]:
    """Batches of ``order`` whose images are all landscape or all portrait, so padding to the
    largest image of a batch wastes little (MMDetection's GroupSampler). The few images left over
    of each kind share the last batches, so there are ceil(len(order) / batch_size) batches, as
    without grouping (every DDP rank then runs the same number of steps)."""
    buckets: dict[bool, list[int]] = {True: [], False: []}
    batches = []
    for index in order:
        bucket = buckets[landscape[index]]
        bucket.append(index)
        if len(bucket) == batch_size:
            batches.append(bucket[:])
            bucket.clear()
    rest = buckets[True] + buckets[False]
    return batches + [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]


def collate(samples: list[TrainSample | FailedSample]) -> Batch:
    failed = [s for s in samples if isinstance(s, FailedSample)]
    loaded = [s for s in samples if not isinstance(s, FailedSample)]
    images = pad_batch([s.tensor for s in loaded]) if loaded else torch.zeros(0, 3, 0, 0)
    sizes = torch.tensor([s.size for s in loaded], dtype=torch.long).reshape(-1, 2)
    return Batch(images, [s.target for s in loaded], sizes, failed)


def epoch_loader(dataset: AugmentedDataset, epoch: int, batch_size: int, workers: int, seed: int,
                 rank: int = 0, world_size: int = 1, skip_batches: int = 0) -> DataLoader:
    """Batches of one epoch, starting after ``skip_batches`` (for a mid-epoch resume)."""
    dataset.epoch = epoch
    order = epoch_order(len(dataset), seed, epoch, rank, world_size)
    batches = group_by_orientation(order, dataset.dataset.landscape, batch_size)[skip_batches:]
    # A generator of its own: the loader must not draw its worker seed from the global RNG, which
    # the RoI samplers use and which a resumed run restores from the checkpoint.
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed + epoch))


def batches_per_epoch(num_items: int, batch_size: int, world_size: int = 1) -> int:
    per_rank = -(-num_items // world_size)
    return -(-per_rank // batch_size)
