"""The cascade: three box stages at rising IoU, each refining the previous stage's boxes.

At test time (MMDetection's CascadeRoIHead):
  proposals -> stage 1 -> refined boxes -> stage 2 -> refined boxes -> stage 3
  scores = softmax(mean of the three stages' logits); boxes = stage 3's regression;
  per-class NMS; masks = mean of the three mask heads' sigmoids on the final boxes.

In training each stage samples its own RoIs at its own IoU threshold (``loss``); Detectron2's
training rule (``DETECTRON2_CASCADE``) samples at stage 0 only and relabels the refined boxes after.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ...ops.assign_sample import IGNORED, AssignerSettings, SamplerSettings, assign, sample
from ...ops.box_coder import BoxCoder, WeightedBoxCoder
from ...ops.compute_path import ComputePath
from ...ops.giou import giou_loss
from ...ops.roi_align import DETECTRON2_LEVELS, MMDETECTION_LEVELS, MultiLevelRoIAlign, RoILevelRule
from ...ops.rois import boxes_per_image
from ...ops.smooth_l1 import smooth_l1_sum
from ..detections import BatchDetections, DetectionSettings, select_detections
from ..heads.mask_head import MaskHead


@dataclass(frozen=True)
class CascadeRoIHeadConfig:
    """``ModelConfig.roi_heads``: MMDetection's ``CascadeRoIHead``. One box head (and mask head)
    per stage, built from ``config.box_head`` / ``config.mask_head``; the stages' IoU thresholds,
    box-delta stds and loss weights, and the RoIs sampled per image, are the config's settable
    knobs (``stage_ious``, ``stage_stds``, ``stage_loss_weights``, ``rois_per_image``)."""

    positive_fraction: float = 0.25  # of each stage's sampled RoIs, at most
    box_roi_size: int = 7  # RoIAlign output of the box heads
    mask_roi_size: int = 14  # and of the mask heads (their 2x deconv gives 28 x 28 masks)
    featmap_strides: tuple[int, ...] = (4, 8, 16, 32)  # the pyramid levels RoIs are pooled from
    ignore_iof_thr: float = -1.0  # RoIs this much inside a crowd region ignored; -1: none (the zoo's)
    # A framework's rules, as values (MMDetection's by default; ``DETECTRON2_CASCADE`` below):
    # each stage's box coder: MMDetection's stds (``ModelConfig.stage_stds``), or, given here,
    # Detectron2's BBOX_REG_WEIGHTS per stage (deltas divided by them: ``WeightedBoxCoder``)
    stage_box_weights: tuple[tuple[float, float, float, float], ...] | None = None
    # test scores: softmax of the stages' mean logits (MMDetection), or the mean of the stages'
    # softmax probabilities (Detectron2)
    mean_of_probabilities: bool = False
    # a stage's class probabilities: softmax over the classes and background, or an independent
    # sigmoid per class, trained with per-class binary cross-entropy (Detectron2's use_sigmoid_ce:
    # its LVIS rows)
    sigmoid_scores: bool = False
    # with sigmoid_scores, Detectron2's federated loss (use_fed_loss): only the batch's ground-truth
    # classes and negative classes drawn by ``fed_loss_weights`` (one per class), this many in all,
    # enter the classification loss; 0: every class
    fed_loss_classes: int = 0
    fed_loss_weights: tuple[float, ...] = ()
    # one mask head per stage, their sigmoids averaged (MMDetection), or one on the final boxes
    # (Detectron2; ``mask_head.0``)
    one_mask_head: bool = False
    nms_rule: str = "mmcv"  # the final per-class NMS of the exact path (ops/nms.py GROUPED_NMS)
    level_rule: RoILevelRule = MMDETECTION_LEVELS  # which pyramid level pools a RoI
    # Training (``CascadeRoIHead.loss``), MMDetection's rules by default:
    # the ground truth is added to stage 0's proposals first, each box matched to itself, or after
    # them, matched by IoU like any proposal (Detectron2's add_ground_truth_to_proposals)
    gt_after_proposals: bool = False
    # a later stage adds the ground truth to the previous stage's refined RoIs (those that were
    # ground truth dropped) and samples again (MMDetection), or trains on every refined RoI
    # (ground-truth ones included; clipped to the image, empty ones dropped), relabelled at its
    # own IoU without added ground truth or sampling (Detectron2's _match_and_label_boxes)
    relabel_refined_rois: bool = False
    # the sampler puts the sampled RoIs in a random order even when it takes them all (Detectron2)
    always_shuffle: bool = False
    box_loss_beta: float = 1.0  # smooth-L1 beta of the box losses (Detectron2's SMOOTH_L1_BETA, 0: L1)
    # each stage's pooled box features pass 1 / num_stages of their gradient back (Detectron2)
    scale_box_gradients: bool = False
    # mask targets cropped from the bitmaps zero-padded to the batch (MMDetection's pad_mask) or
    # from the image-sized bitmaps (Detectron2's BitMasks.crop_and_resize)
    mask_targets_padded: bool = True

    def build(self, config, in_channels: int, strides: tuple[int, ...]) -> "CascadeRoIHead":
        """The RoI heads with their per-stage parts built from ``config``'s per-stage fields and
        head specs: box heads, box coders, IoU assigners; mask heads."""
        if tuple(strides[:len(self.featmap_strides)]) != self.featmap_strides:
            raise ValueError(f"{config.name}: the neck's levels have strides {tuple(strides)}; the RoI heads read "
                             f"levels of strides {self.featmap_strides} (give the backbone maps at those strides)")
        coders = ([WeightedBoxCoder(tuple(weights)) for weights in self.stage_box_weights]
                  if self.stage_box_weights is not None else [BoxCoder(tuple(stds)) for stds in config.stage_stds])
        # One threshold per stage, used for positives and negatives alike (no low-quality matches).
        assigners = [AssignerSettings(pos_iou=iou, neg_iou=iou, crowd_iof=self.ignore_iof_thr)
                     for iou in config.stage_ious]
        box_heads = [config.box_head.build(config) for _ in config.stage_stds]
        mask_heads = ([config.mask_head.build(config) for _ in range(1 if self.one_mask_head else config.num_stages)]
                      if config.with_mask else None)
        sampler = SamplerSettings(num=config.rois_per_image, positive_fraction=self.positive_fraction,
                                  always_shuffle=self.always_shuffle)
        return CascadeRoIHead(self, config.num_classes, box_heads, coders, assigners, config.stage_loss_weights,
                              sampler, mask_heads)


DETECTRON2_CASCADE = CascadeRoIHeadConfig(
    stage_box_weights=((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)),
    mean_of_probabilities=True, one_mask_head=True, nms_rule="torchvision", level_rule=DETECTRON2_LEVELS,
    gt_after_proposals=True, relabel_refined_rois=True, always_shuffle=True, box_loss_beta=0.0,
    scale_box_gradients=True, mask_targets_padded=False)


@dataclass
class SampledRoIs:
    """One stage's training RoIs for the batch, image by image (sampled: positives first)."""

    rois: torch.Tensor  # (K, 5) image index + xyxy
    labels: torch.Tensor  # (K,) class, num_classes = background
    box_targets: torch.Tensor  # (P, 4) encoded targets of the positives, in their order among the RoIs
    target_boxes: torch.Tensor  # (P, 4) the positives' ground-truth boxes (for a loss on decoded boxes)
    gt_index: torch.Tensor  # (P,) matched ground truth of each positive, within its image
    from_gt: torch.Tensor  # (K,) bool: the RoI is a ground-truth box added as a proposal


class CascadeRoIHead(nn.Module):
    """The cascade's RoI heads, given their per-stage parts built (as Detectron2's
    ``CascadeROIHeads`` takes its box heads, predictors and matchers): stage k runs ``box_heads[k]``
    on RoIs pooled by the spec's level rule, decodes with ``coders[k]``, trains on RoIs labelled by
    ``assigners[k]`` with loss weight ``stage_loss_weights[k]``; ``mask_heads``: one per stage, or
    one (``spec.one_mask_head``), or None for a box-only model. ``spec`` holds the framework's rules."""

    def __init__(self, spec: CascadeRoIHeadConfig, num_classes: int, box_heads: list[nn.Module], coders: list[BoxCoder],
                 assigners: list[AssignerSettings], stage_loss_weights: tuple[float, ...], sampler: SamplerSettings,
                 mask_heads: list[nn.Module] | None = None):
        super().__init__()
        if not len(box_heads) == len(coders) == len(assigners) == len(stage_loss_weights):
            raise ValueError(f"one box head, coder, assigner and loss weight per stage, got {len(box_heads)}, "
                             f"{len(coders)}, {len(assigners)}, {len(stage_loss_weights)}")
        self.num_classes, self.spec = num_classes, spec
        self.coders, self.assigners, self.stage_loss_weights, self.sampler = coders, assigners, stage_loss_weights, sampler
        self.box_roi_align = MultiLevelRoIAlign(spec.box_roi_size, spec.featmap_strides, spec.level_rule)
        self.bbox_head = nn.ModuleList(box_heads)
        self.mask_roi_align = MultiLevelRoIAlign(spec.mask_roi_size, spec.featmap_strides, spec.level_rule)
        self.mask_head = nn.ModuleList(mask_heads) if mask_heads is not None else None

    @property
    def with_mask(self) -> bool:
        return self.mask_head is not None

    def forward_stage(self, stage: int, features: list[torch.Tensor], rois: torch.Tensor, path: ComputePath,
                      gradient_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (K, num_classes + 1) and deltas (K, 4) - or (K, num_classes * 4) for a head with
        one box per class - of one stage for (K, 5) RoIs; the pooled features pass
        ``gradient_scale`` of their gradient back (None: all of it)."""
        pooled = self.box_roi_align(features, rois, path)
        if gradient_scale is not None:
            pooled = ScaleGradient.apply(pooled, gradient_scale)
        return self.bbox_head[stage](pooled, path)

    def predict(self, features: list[torch.Tensor], rois: torch.Tensor, image_sizes: torch.Tensor,
                settings: DetectionSettings, path: ComputePath, stage: int | None = None,
                box_scales: torch.Tensor | None = None) -> BatchDetections:
        """The detections of a batch: pyramid ``features``, (R, 5) RPN RoIs and the (B, 2)
        unpadded (h, w) -> boxes, scores, labels (and mask probabilities of the detected class).

        ``stage=k`` scores with stage k alone; ``box_scales`` (B, 4) maps the boxes before the
        NMS (``select_detections``). Boxes and scores come back float32 at any precision.
        """
        return self.predict_stages(features, rois, image_sizes, settings, path, (stage,), box_scales)[0]

    def predict_stages(self, features: list[torch.Tensor], rois: torch.Tensor, image_sizes: torch.Tensor,
                       settings: DetectionSettings, path: ComputePath, stages: Sequence[int | None],
                       box_scales: torch.Tensor | None = None) -> list[BatchDetections]:
        """``predict`` for each of ``stages`` (None: the cascade's output; k: stage k alone), from
        one run of the stages."""
        features = self.box_roi_align.readable(features, path)
        results = []
        for stage, (boxes, class_probs, image_index) in zip(stages, self.stage_boxes(features, rois, image_sizes,
                                                                                      path, stages)):
            detections = select_detections(boxes.float(), class_probs.float(), image_index, image_sizes, settings,
                                           path, box_scales, self.spec.nms_rule)
            if self.with_mask:
                mask_rois = torch.cat([detections.image_index[:, None].to(detections.boxes.dtype),
                                       detections.boxes], dim=1)
                detections.mask_probs = self.predict_masks(features, mask_rois, detections.labels, path, stage)
            results.append(detections)
        return results

    def stage_boxes(self, features: list[torch.Tensor], rois: torch.Tensor, image_sizes: torch.Tensor,
                    path: ComputePath, stages: Sequence[int | None]
                    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Run the stages once on (K, 5) RoIs (image index, box); image_sizes (B, 2) unpadded (h, w).

        For each of ``stages``: boxes (K, 4) - or (K, num_classes, 4) for a head with one box per
        class -, class probabilities (K, num_classes + 1) and the (K,) image index of each row, in
        resized-image pixels. None is the cascade's output (scores of all stages, boxes of the
        last); k is stage k alone (its scores, its boxes). A head with one box per class passes the
        box of each RoI's best class (by its own logits) to the next stage, as MMDetection.
        """
        image_index = rois[:, 0].long()
        max_shapes = image_sizes.to(rois.dtype)[image_index]
        outputs = [len(self.coders) - 1 if stage is None else stage for stage in stages]
        last = max(outputs)
        stage_logits, output_boxes = [], {}
        for index, coder in enumerate(self.coders[:last + 1]):
            logits, deltas = self.forward_stage(index, features, rois, path)
            logits, deltas = logits.float(), deltas.float()  # float32 at bf16/fp16 too
            stage_logits.append(logits)
            if deltas.shape[1] == 4:
                boxes = coder.decode(rois[:, 1:], deltas, max_shapes)
                if index in outputs:
                    output_boxes[index] = boxes
            else:
                if index in outputs:  # every class's box: (K, C, 4)
                    per_class = deltas.shape[1] // 4
                    output_boxes[index] = coder.decode(
                        rois[:, 1:].repeat_interleave(per_class, dim=0), deltas.reshape(-1, 4),
                        max_shapes.repeat_interleave(per_class, dim=0)).reshape(-1, per_class, 4)
                if index < last:
                    boxes = coder.decode(rois[:, 1:], class_deltas(deltas, logits[:, :-1].argmax(dim=1)), max_shapes)
            if index < last:
                rois = torch.cat([rois[:, :1], boxes], dim=1)
        return [(output_boxes[output], self._probabilities(stage_logits[output]) if stage is not None
                 else self._cascade_probabilities(stage_logits), image_index)
                for stage, output in zip(stages, outputs)]

    def _cascade_probabilities(self, stage_logits: list[torch.Tensor]) -> torch.Tensor:
        """The cascade's class probabilities from every stage's (K, C + 1) logits."""
        if self.spec.mean_of_probabilities:  # Detectron2: sum(probabilities) * (1 / 3), same order
            return sum(self._probabilities(logits) for logits in stage_logits) * (1.0 / len(stage_logits))
        # MMDetection averages LOGITS and applies softmax afterwards (sum(...) / 3, same order).
        return self._probabilities(sum(stage_logits) / float(len(stage_logits)))

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(K, C + 1) class logits -> probabilities (the last column the background's)."""
        return logits.sigmoid() if self.spec.sigmoid_scores else logits.softmax(dim=-1)

    def loss(self, features: list[torch.Tensor], rois: torch.Tensor, targets: list[dict],
             image_sizes: torch.Tensor, padded_size: tuple[int, int], path: ComputePath) -> dict[str, torch.Tensor]:
        """Training losses of all stages, weighted by ``stage_loss_weights`` (1, 0.5, 0.25).

        rois: (R, 5) detached RPN proposals; targets: per image ``boxes`` (G, 4) xyxy and ``labels``
        (G,) in resized pixels, ``masks`` (G, h, w) for mask models - or ``polygons``, per object a
        list of rings [x0, y0, x1, y1, ...] (``polygon_mask_targets``) -, optional ``crowd_boxes``;
        image_sizes: (B, 2) unpadded (h, w); padded_size: (H, W) of the padded batch.
        Each stage adds the ground truth to its proposals, assigns at its own IoU threshold,
        samples ``rois_per_image`` RoIs (512 in MMDetection, <= 25 % positive), and the next stage
        trains on those RoIs after this stage's regression (ground truth dropped). With the spec's
        ``relabel_refined_rois`` (Detectron2) only stage 0 adds the ground truth and samples.
        """
        features = self.box_roi_align.readable(features, path)
        proposals = boxes_per_image(rois, len(targets))
        gradient_scale = 1.0 / len(self.coders) if self.spec.scale_box_gradients else None
        losses = {}
        for stage, (coder, weight) in enumerate(zip(self.coders, self.stage_loss_weights)):
            batch = self._sample_stage(stage, proposals, targets)
            logits, deltas = self.forward_stage(stage, features, batch.rois, path, gradient_scale)
            num_rois = max(batch.rois.shape[0], 1)
            positive = batch.labels < self.num_classes
            losses[f"s{stage}_cls"] = weight * classification_loss(logits, batch.labels, self.spec)
            if deltas.shape[1] > 4:  # one box per class: the ground-truth class's
                deltas = class_deltas(deltas, torch.where(positive, batch.labels, logits[:, :-1].argmax(dim=1)))
            giou_weight = self.bbox_head[stage].giou_loss_weight
            if giou_weight is None:
                box_loss = smooth_l1_sum(deltas[positive], batch.box_targets, self.spec.box_loss_beta)
            else:  # on the decoded boxes (not clipped), as MMDetection's reg_decoded_bbox
                decoded = coder.decode(batch.rois[positive, 1:], deltas[positive])
                box_loss = giou_weight * giou_loss(decoded, batch.target_boxes).sum()
            losses[f"s{stage}_box"] = weight * box_loss / num_rois
            losses[f"s{stage}_acc"] = (logits.argmax(1) == batch.labels).float().mean().detach()
            if self.with_mask and (stage == 0 or not self.spec.one_mask_head):  # one head: stage 0's positives
                losses[f"s{stage}_mask"] = weight * self._mask_loss(stage, features, batch, targets, padded_size,
                                                                    path)
            if stage + 1 < len(self.coders):
                proposals = self._refine(coder, batch, deltas.detach(), image_sizes)
        return losses

    def _sample_stage(self, stage: int, proposals: list[torch.Tensor], targets: list[dict]) -> "SampledRoIs":
        rois, labels, box_targets, target_boxes, gt_index, from_gt = [], [], [], [], [], []
        relabel_only = stage > 0 and self.spec.relabel_refined_rois
        for image, (image_proposals, target) in enumerate(zip(proposals, targets)):
            gt_boxes = target["boxes"]
            num_gt, num_proposals = gt_boxes.shape[0], image_proposals.shape[0]
            if relabel_only:  # the previous stage's refined RoIs as they are
                candidates = image_proposals
                is_gt = torch.zeros(num_proposals, dtype=torch.bool, device=gt_boxes.device)
            elif self.spec.gt_after_proposals:
                candidates = torch.cat([image_proposals, gt_boxes])
                is_gt = torch.arange(num_proposals + num_gt, device=gt_boxes.device) >= num_proposals
            else:
                candidates = torch.cat([gt_boxes, image_proposals])
                is_gt = torch.arange(num_gt + num_proposals, device=gt_boxes.device) < num_gt
            assigned = assign(candidates, gt_boxes, self.assigners[stage], target.get("crowd_boxes"))
            if relabel_only:  # every RoI, in order
                chosen = torch.nonzero(assigned != IGNORED).squeeze(1)
                positives = chosen[assigned[chosen] >= 0]
            else:
                if not self.spec.gt_after_proposals:  # each ground-truth box is its own match
                    assigned[:num_gt] = torch.arange(num_gt, device=gt_boxes.device)
                positives, negatives = sample(assigned, self.sampler)
                chosen = torch.cat([positives, negatives])
            rois.append(torch.cat([candidates.new_full((chosen.numel(), 1), image), candidates[chosen]], dim=1))
            matched = assigned[positives]
            chosen_labels = target["labels"].new_full((chosen.numel(),), self.num_classes)
            chosen_labels[assigned[chosen] >= 0] = target["labels"][matched]
            labels.append(chosen_labels)
            box_targets.append(self.coders[stage].encode(candidates[positives], gt_boxes[matched]))
            target_boxes.append(gt_boxes[matched])
            gt_index.append(matched)
            from_gt.append(is_gt[chosen])
        return SampledRoIs(torch.cat(rois), torch.cat(labels), torch.cat(box_targets), torch.cat(target_boxes),
                           torch.cat(gt_index), torch.cat(from_gt))

    def _mask_loss(self, stage: int, features: list[torch.Tensor], batch: "SampledRoIs",
                   targets: list[dict], padded_size: tuple[int, int], path: ComputePath) -> torch.Tensor:
        """BCE on the ground-truth class channel of the positives' (S x S: 28 x 28) masks (mean)."""
        positive = batch.labels < self.num_classes
        rois = batch.rois[positive]
        logits = self.mask_head[stage](self.mask_roi_align(features, rois, path))
        if rois.shape[0] == 0:
            return logits.sum() * 0
        labels = batch.labels[positive]
        mask_targets = []
        for image, target in enumerate(targets):
            mine = rois[:, 0] == image
            if not mine.any():
                continue
            if "masks" in target:
                crop_size = padded_size if self.spec.mask_targets_padded else tuple(target["masks"].shape[-2:])
                image_targets = crop_mask_targets(target["masks"], batch.gt_index[mine], rois[mine, 1:], crop_size,
                                                  logits.shape[-1])
            else:
                image_targets = polygon_mask_targets(target["polygons"], batch.gt_index[mine], rois[mine, 1:],
                                                     logits.shape[-1])
            mask_targets.append(image_targets.to(logits.dtype))
        channel = logits[torch.arange(rois.shape[0], device=rois.device), labels]
        # RoIs are grouped by image (the RPN gives them image by image), so the per-image crops line up.
        return F.binary_cross_entropy_with_logits(channel, torch.cat(mask_targets))

    def _refine(self, coder: BoxCoder, batch: "SampledRoIs", deltas: torch.Tensor, image_sizes: torch.Tensor
                ) -> list[torch.Tensor]:
        """The stage's regressed RoIs (clipped to the image), per image, without the ones that were
        ground truth; with ``relabel_refined_rois`` (Detectron2) with them, but without empty boxes."""
        image_index = batch.rois[:, 0].long()
        max_shapes = image_sizes.to(deltas)[image_index]
        refined = coder.decode(batch.rois[:, 1:], deltas, max_shapes)
        if self.spec.relabel_refined_rois:
            keep = (refined[:, 2] - refined[:, 0] > 0) & (refined[:, 3] - refined[:, 1] > 0)
        else:
            keep = ~batch.from_gt
        return [refined[keep & (image_index == i)] for i in range(len(image_sizes))]

    def predict_masks(self, features: list[torch.Tensor], rois: torch.Tensor, labels: torch.Tensor,
                      path: ComputePath, stage: int | None = None) -> torch.Tensor:
        """(K, 28, 28) probabilities of class ``labels[k]`` inside (K, 5) RoI k: mean of the
        stages' sigmoids (or stage ``stage``'s alone)."""
        roi_features = self.mask_roi_align(features, rois, path)
        heads = self.mask_head if stage is None or self.spec.one_mask_head else [self.mask_head[stage]]
        if path.class_mask_logits:
            label_probs = _class_mask_probs(heads, roi_features, rois, labels, group_rois=not path.exporting)
        else:
            # MMDetection's order of work: every class's logits, sigmoid, mean, then pick the class.
            probs = torch.stack([head(roi_features).float().sigmoid() for head in heads]).mean(dim=0)
            label_probs = probs[torch.arange(rois.shape[0], device=rois.device), labels]
        return label_probs


def _class_mask_probs(heads: list[MaskHead], roi_features: torch.Tensor, rois: torch.Tensor, labels: torch.Tensor,
                      group_rois: bool) -> torch.Tensor:
    """The fast path's (K, 28, 28) mean mask probabilities of each detection's class.

    Boxes are class-agnostic, so one box often comes out as several detections (one per class):
    with ``group_rois`` the mask convs run once per distinct box (a data-dependent grouping that
    the exported graph skips); they run channels-last (the faster layout for convs here), and
    only the detected class's logit channel is computed.
    """
    rows = None
    if group_rois:
        distinct, inverse = torch.unique(rois, dim=0, return_inverse=True)
        if distinct.shape[0] < rois.shape[0]:
            first = torch.full((distinct.shape[0],), rois.shape[0], dtype=torch.long, device=rois.device)
            first.scatter_reduce_(0, inverse, torch.arange(rois.shape[0], device=rois.device), "amin")
            roi_features, rows = roi_features[first], inverse
    roi_features = roi_features.contiguous(memory_format=torch.channels_last)
    return torch.stack([head.class_logits(roi_features, labels, rows).float().sigmoid() for head in heads]).mean(dim=0)


def crop_mask_targets(masks: torch.Tensor, gt_index: torch.Tensor, boxes: torch.Tensor,
                      padded_size: tuple[int, int], size: int) -> torch.Tensor:
    """(P, size, size) binary targets (28 x 28 for MMDetection's mask heads): each matched (G, h, w)
    ground-truth bitmap cropped with RoIAlign at its (P, 4) box, then >= 0.5.

    As MMDetection (``pad_mask=True``), the bitmaps are first zero-padded to the batch's padded
    (H, W): RoIAlign then blends the last row/column with zeros instead of repeating it, which
    changes targets of boxes reaching the image's bottom or right edge.
    """
    padded = F.pad(masks, (0, padded_size[1] - masks.shape[-1], 0, padded_size[0] - masks.shape[-2]))
    gt_rois = torch.cat([gt_index[:, None].to(boxes.dtype), boxes], dim=1)
    crops = roi_align(padded[:, None].to(boxes.dtype), gt_rois, size, 1.0, sampling_ratio=0, aligned=True)
    return crops[:, 0] >= 0.5


def polygon_mask_targets(polygons: list, gt_index: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(P, size, size) binary targets from polygons, as Detectron2's ``PolygonMasks.crop_and_resize``:
    each matched object's rings ([x0, y0, x1, y1, ...], float64) moved to its (P, 4) box's corner,
    scaled by ``size / max(side, 0.1)`` (computed in float32, as Detectron2 on its float32 boxes)
    and rasterised at size x size by the COCO API (``pycocotools``: polygons to RLE, merged)."""
    from pycocotools import mask as mask_utils

    targets = []
    for index, box in zip(gt_index.tolist(), boxes.detach().float().cpu().numpy()):
        width, height = box[2] - box[0], box[3] - box[1]
        ratio_w, ratio_h = size / max(width, 0.1), size / max(height, 0.1)  # float32 / float32 sides
        rings = []
        for ring in polygons[index]:
            ring = np.asarray(ring, dtype=np.float64)
            ring = np.stack([(ring[0::2] - box[0]) * ratio_w, (ring[1::2] - box[1]) * ratio_h], axis=1).reshape(-1)
            rings.append(ring)
        if rings:
            bitmap = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(rings, size, size))).astype(bool)
        else:
            bitmap = np.zeros((size, size), dtype=bool)
        targets.append(torch.from_numpy(bitmap))
    if not targets:
        return torch.zeros(0, size, size, dtype=torch.bool, device=boxes.device)
    return torch.stack(targets).to(boxes.device)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, spec: CascadeRoIHeadConfig) -> torch.Tensor:
    """A stage's classification loss: logits (K, C + 1), labels (K,) in 0..C (C: background).
    Cross-entropy of the softmax; or, with ``spec.sigmoid_scores``, the binary cross-entropy of
    each class's sigmoid against "is this RoI's class", summed over the classes (over the
    federated ones only, with ``spec.fed_loss_classes``) and divided by K."""
    if not spec.sigmoid_scores:
        return F.cross_entropy(logits, labels)
    num_classes = logits.shape[1] - 1
    targets = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits[:, :num_classes], targets, reduction="none")
    if spec.fed_loss_classes:
        loss = loss * federated_classes(labels, num_classes, spec.fed_loss_classes, spec.fed_loss_weights)
    return loss.sum() / max(logits.shape[0], 1)


def federated_classes(labels: torch.Tensor, num_classes: int, wanted: int, weights: tuple[float, ...]) -> torch.Tensor:
    """(C,) 0/1: the classes of Detectron2's federated loss for one batch: every class among
    ``labels`` (the background counting as one of the ``wanted``), plus negative classes drawn
    without replacement with chances proportional to ``weights`` until there are ``wanted``."""
    present = torch.unique(labels)
    chosen = torch.zeros(num_classes + 1, device=labels.device)
    chosen[present] = 1.0
    if len(present) < wanted:
        chances = torch.zeros(num_classes + 1, device=labels.device)
        chances[:num_classes] = torch.tensor(weights, device=labels.device)
        chances[present] = 0.0
        draws = min(wanted - len(present), int((chances > 0).sum()))
        if draws:
            chosen[torch.multinomial(chances, draws, replacement=False)] = 1.0
    return chosen[:num_classes]


class ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``scale`` backward (Detectron2's _ScaleGradient)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def class_deltas(deltas: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(K, 4) deltas of class ``labels[k]`` from a head's (K, C * 4) deltas (one box per class)."""
    return deltas.reshape(deltas.shape[0], -1, 4)[torch.arange(deltas.shape[0], device=deltas.device), labels]
