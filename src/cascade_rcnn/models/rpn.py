"""Region proposal network: a shared 3x3 conv + ReLU, then sigmoid objectness and box deltas on
every pyramid level; its training loss and its proposals for the RoI heads."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.assign_sample import AssignerSettings, SamplerSettings, assign, sample
from ..ops.box_coder import BoxCoder, WeightedBoxCoder
from ..ops.compute_path import ComputePath
from ..ops.nms import level_nms
from ..ops.onnx_forms import exported_proposals
from ..ops.rois import rois_from_boxes
from ..ops.smooth_l1 import smooth_l1_sum
from .anchors import ANCHOR_RULES, grid_anchors, inside_image

RPN_CODER = BoxCoder((1.0, 1.0, 1.0, 1.0))
# How ``rpn_loss`` sums and normalises: each image's sampled anchors, over MMDetection's count of
# them; or the batch's anchor grid at once, over the sampling budget (Detectron2's RPN.losses).
RPN_LOSS_RULES = ("per_image_over_sampled", "batch_over_budget")


@dataclass(frozen=True)
class RPNHeadConfig:
    """``ModelConfig.rpn_head``: MMDetection's ``RPNHead`` with its zoo settings. Anchor sizes,
    proposal counts and sampled anchors per image are the config's (``anchor_scale``,
    ``train_proposals`` / ``test_proposals`` and their ``_pre_nms``, ``rpn_samples_per_image``:
    settable knobs)."""

    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # 3x3 conv + ReLU layers before the two outputs: 1 (keys ``rpn_conv``), or more (ViTDet's 2,
    # Detectron2's ``conv_dims=[-1, -1]``; keys ``rpn_conv.0``, ``rpn_conv.1``, ...).
    num_convs: int = 1
    nms_iou: float = 0.7  # NMS within each level, training and test
    positive_fraction: float = 0.5  # of the sampled anchors, at most
    pos_iou: float = 0.7  # assigner: positive at IoU >= pos_iou, negative below neg_iou,
    neg_iou: float = 0.3  # and each ground truth's best anchors if >= min_pos_iou
    min_pos_iou: float = 0.3
    ignore_iof_thr: float = -1.0  # anchors this much inside a crowd region ignored; -1: none (the zoo's)
    # A framework's rules, as values (MMDetection's by default; ``DETECTRON2_RPN`` below):
    anchor_rule: str = "side_ratios"  # models/anchors.py ANCHOR_RULES
    box_coder: BoxCoder | WeightedBoxCoder = RPN_CODER
    # Proposals per level: the best by sigmoid score, a level shorter than the cut left unsorted
    # (MMDetection), or ``torch.topk`` of the logits, always sorted (Detectron2).
    rank_by_logits: bool = False
    nms_rule: str = "mmcv"  # ops/nms.py GROUPED_NMS
    # Training (``rpn_loss``): anchors reaching more than ``anchor_border`` px outside the image
    # take no part (MMDetection's allowed_border 0), or None: every anchor (Detectron2's
    # BOUNDARY_THRESH -1); Detectron2's low-quality matches (``AssignerSettings``) and its sampler
    # (``SamplerSettings.always_shuffle``); the box loss's smooth-L1 beta (Detectron2's
    # RPN.SMOOTH_L1_BETA, 0: L1); how the losses are summed and normalised (``RPN_LOSS_RULES``).
    anchor_border: float | None = 0.0
    low_quality_own_match: bool = False
    always_shuffle: bool = False
    box_loss_beta: float = 1.0 / 9.0
    loss_rule: str = "per_image_over_sampled"

    @property
    def assigner(self) -> AssignerSettings:
        return AssignerSettings(self.pos_iou, self.neg_iou, low_quality_min_iou=self.min_pos_iou,
                                crowd_iof=self.ignore_iof_thr, low_quality_own_match=self.low_quality_own_match)

    def build(self, config, in_channels: int, strides: tuple[int, ...]) -> "RPNHead":
        if self.num_convs < 1:
            raise ValueError(f"{config.name}: the RPN head needs at least one conv, got num_convs={self.num_convs}")
        return RPNHead(in_channels, strides, scales=(config.anchor_scale,), ratios=self.ratios, spec=self,
                       assigner=self.assigner,
                       sampler=SamplerSettings(num=config.rpn_samples_per_image,
                                               positive_fraction=self.positive_fraction,
                                               always_shuffle=self.always_shuffle),
                       train_proposals=self.proposal_settings(config.train_proposals_pre_nms or config.train_proposals,
                                                              config.train_proposals),
                       test_proposals=self.proposal_settings(config.test_proposals_pre_nms or config.test_proposals,
                                                             config.test_proposals))

    def proposal_settings(self, pre_nms_per_level: int, max_proposals: int) -> "ProposalSettings":
        return ProposalSettings(pre_nms_per_level, self.nms_iou, max_proposals, self.box_coder, self.rank_by_logits,
                                self.nms_rule)


DETECTRON2_RPN = RPNHeadConfig(anchor_rule="area_kept", box_coder=WeightedBoxCoder((1.0, 1.0, 1.0, 1.0)),
                               rank_by_logits=True, nms_rule="torchvision", anchor_border=None,
                               low_quality_own_match=True, always_shuffle=True, box_loss_beta=0.0,
                               loss_rule="batch_over_budget")


@dataclass(frozen=True)
class ProposalSettings:
    """How many proposals survive, per image (MMDetection: 1000 at test, 2000 in training), and
    the rules that pick them (``RPNHeadConfig``)."""

    pre_nms_per_level: int = 1000
    nms_iou: float = 0.7
    max_proposals: int = 1000
    coder: BoxCoder | WeightedBoxCoder = RPN_CODER
    rank_by_logits: bool = False
    nms_rule: str = "mmcv"


class RPNHead(nn.Module):
    """Anchor head on each pyramid level; ``num_anchors`` = ratios x scales (3)."""

    def __init__(self, channels: int, strides: tuple[int, ...], scales: tuple[float, ...],
                 ratios: tuple[float, ...], spec: RPNHeadConfig, assigner: AssignerSettings, sampler: SamplerSettings,
                 train_proposals: ProposalSettings, test_proposals: ProposalSettings):
        super().__init__()
        self.strides = strides
        self.spec = spec
        self.coder = spec.box_coder
        self.assigner, self.sampler = assigner, sampler
        self.train_proposals, self.test_proposals = train_proposals, test_proposals
        num_anchors = len(scales) * len(ratios)
        convs = [nn.Conv2d(channels, channels, 3, padding=1) for _ in range(spec.num_convs)]
        self.rpn_conv = convs[0] if len(convs) == 1 else nn.ModuleList(convs)
        self.rpn_cls = nn.Conv2d(channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(channels, num_anchors * 4, 1)
        for conv in (*convs, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.register_buffer("base_anchors", torch.stack(
            [ANCHOR_RULES[spec.anchor_rule](s, scales, ratios) for s in strides]), persistent=False)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: objectness logits (B, H*W*A) and deltas (B, H*W*A, 4), in anchor order."""
        logits, deltas = [], []
        for feature in features:
            hidden = feature
            for conv in (self.rpn_conv if isinstance(self.rpn_conv, nn.ModuleList) else [self.rpn_conv]):
                hidden = conv(hidden).relu_()
            batch = feature.shape[0]
            logits.append(self.rpn_cls(hidden).permute(0, 2, 3, 1).reshape(batch, -1))
            deltas.append(self.rpn_reg(hidden).permute(0, 2, 3, 1).reshape(batch, -1, 4))
        return logits, deltas

    def anchors(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level (H*W*A, 4) anchors in padded-image pixels."""
        return [grid_anchors(self.base_anchors[level], tuple(f.shape[-2:]), stride)
                for level, (f, stride) in enumerate(zip(features, self.strides))]

    def proposals(self, logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                  image_sizes: torch.Tensor, path: ComputePath, training: bool) -> torch.Tensor:
        """(R, 5) RoIs (image index, x1, y1, x2, y2), image by image, each image's by descending
        score, in resized-image pixels: the training or test proposals (``training``) of the
        per-level (B, N_l) logits and (B, N_l, 4) deltas; image_sizes (B, 2) unpadded (h, w).
        Exporting, the batched form of the graph (``onnx_forms.exported_proposals``)."""
        settings = self.train_proposals if training else self.test_proposals
        with torch.no_grad():
            if path.exporting:
                return exported_proposals(logits, deltas, anchors, image_sizes, settings.coder, settings.pre_nms_per_level,
                                          settings.nms_iou, settings.max_proposals)
            return rois_from_boxes([propose([level[i] for level in logits], [level[i] for level in deltas], anchors,
                                            image_sizes[i:i + 1], settings, path)[0]
                                    for i in range(image_sizes.shape[0])])

    def loss(self, logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
             targets: list[dict], image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        """``rpn_loss`` with this head's assigner, sampler and rules."""
        return rpn_loss(logits, deltas, anchors, targets, image_sizes, self.assigner, self.sampler, self.coder,
                        anchor_border=self.spec.anchor_border, box_loss_beta=self.spec.box_loss_beta,
                        loss_rule=self.spec.loss_rule)


def propose(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
            image_size: torch.Tensor, settings: ProposalSettings, path: ComputePath
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposals (P, 4) and their scores (P,) for ONE image, from per-level (N_l,) logits.

    MMDetection's order of work: the top ``pre_nms_per_level`` anchors of each level by sigmoid
    score, decoded and clipped to the resized (unpadded) image's (1, 2) (h, w), boxes with zero
    width or height dropped, NMS separately per level, then the best ``max_proposals`` overall.
    With ``settings.rank_by_logits`` (Detectron2) each level's best are ``torch.topk`` of the logits,
    which stay the scores.
    """
    level_boxes, level_scores, level_ids = [], [], []
    for level, (level_logits, level_deltas, level_anchors) in enumerate(zip(logits, deltas, anchors)):
        if settings.rank_by_logits:
            scores, order = level_logits.topk(min(settings.pre_nms_per_level, level_logits.shape[0]))
            level_deltas, level_anchors = level_deltas[order], level_anchors[order]
        else:
            scores = level_logits.sigmoid()
        # MMDetection leaves a level shorter than pre_nms_per_level unsorted (that order decides
        # NMS ties); the exported graph (onnx_forms.exported_proposals) always sorts and slices.
        if not settings.rank_by_logits and 0 < settings.pre_nms_per_level < scores.shape[0]:
            scores, order = scores.sort(descending=True)
            scores, order = scores[:settings.pre_nms_per_level], order[:settings.pre_nms_per_level]
            level_deltas, level_anchors = level_deltas[order], level_anchors[order]
        level_boxes.append(settings.coder.decode(level_anchors, level_deltas, max_shape=image_size))
        level_scores.append(scores)
        level_ids.append(torch.full_like(scores, level, dtype=torch.long))
    boxes = torch.cat(level_boxes)
    scores, ids = torch.cat(level_scores), torch.cat(level_ids)
    valid = torch.nonzero((boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)).squeeze(1)
    boxes, scores, ids = boxes[valid], scores[valid], ids[valid]
    keep = level_nms(boxes, scores, ids, settings.nms_iou, path, settings.nms_rule)[:settings.max_proposals]
    return boxes[keep], scores[keep]


def rpn_loss(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
             targets: list[dict], image_sizes: torch.Tensor, assigner: AssignerSettings, sampler: SamplerSettings,
             coder: BoxCoder | WeightedBoxCoder = RPN_CODER, anchor_border: float | None = 0.0,
             box_loss_beta: float = 1.0 / 9.0, loss_rule: str = "per_image_over_sampled") -> dict[str, torch.Tensor]:
    """Objectness BCE + smooth L1 (beta ``box_loss_beta``, MMDetection's 1/9) on ``sampler.num``
    (256) sampled anchors per image.

    Only anchors reaching at most ``anchor_border`` px (0: fully inside) outside the unpadded image,
    ``image_sizes`` (B, 2) (h, w), take part; None: every anchor. ``loss_rule`` (``RPN_LOSS_RULES``):
    MMDetection's sums each image's sampled anchors and divides by the batch's sampled-anchor count
    as MMDetection counts it (``SamplingResult.avg_factor``): max(positives, 1) + max(negatives, 1)
    per image, so an image without positives counts one more. Detectron2's marks the sampled
    anchors on the batch's (B, N) anchor grid, sums each loss once over the marked anchors in grid
    order and divides by the sampling budget, ``sampler.num`` x images.
    """
    if loss_rule not in RPN_LOSS_RULES:
        raise ValueError(f"unknown RPN loss rule {loss_rule!r}; known: {', '.join(RPN_LOSS_RULES)}")
    all_anchors = torch.cat(anchors)
    all_logits = torch.cat(logits, dim=1)  # (B, N)
    all_deltas = torch.cat(deltas, dim=1)  # (B, N, 4)
    cls_losses, box_losses, num_sampled = [], [], 0
    grid_labels = torch.full(all_logits.shape, -1, dtype=torch.long, device=all_logits.device)
    grid_targets = []
    for image, (target, size) in enumerate(zip(targets, image_sizes)):
        if anchor_border is None:
            inside = torch.arange(all_anchors.shape[0], device=all_anchors.device)
        else:
            inside = torch.nonzero(inside_image(all_anchors, size, anchor_border)).squeeze(1)
        assigned = assign(all_anchors[inside], target["boxes"], assigner, target.get("crowd_boxes"))
        positives, negatives = sample(assigned, sampler)
        if loss_rule == "batch_over_budget":
            grid_labels[image, inside[negatives]] = 0
            grid_labels[image, inside[positives]] = 1
            matched = torch.full((all_anchors.shape[0],), -1, dtype=torch.long, device=all_anchors.device)
            matched[inside[positives]] = assigned[positives]
            marked = torch.nonzero(grid_labels[image] == 1).squeeze(1)  # grid order
            grid_targets.append(coder.encode(all_anchors[marked], target["boxes"][matched[marked]]))
            continue
        sampled = torch.cat([positives, negatives])
        labels = torch.cat([torch.ones_like(positives), torch.zeros_like(negatives)]).to(all_logits.dtype)
        cls_losses.append(F.binary_cross_entropy_with_logits(
            all_logits[image, inside[sampled]], labels, reduction="sum"))
        positive_anchors = all_anchors[inside[positives]]
        box_targets = coder.encode(positive_anchors, target["boxes"][assigned[positives]])
        box_losses.append(smooth_l1_sum(all_deltas[image, inside[positives]], box_targets, box_loss_beta))
        num_sampled += max(positives.numel(), 1) + max(negatives.numel(), 1)
    if loss_rule == "batch_over_budget":
        budget = sampler.num * len(targets)
        marked = grid_labels >= 0
        cls_loss = F.binary_cross_entropy_with_logits(all_logits[marked], grid_labels[marked].to(all_logits.dtype),
                                                      reduction="sum")
        box_loss = smooth_l1_sum(all_deltas[grid_labels == 1], torch.cat(grid_targets), box_loss_beta)
        return {"rpn_cls": cls_loss / budget, "rpn_box": box_loss / budget}
    return {"rpn_cls": sum(cls_losses) / num_sampled, "rpn_box": sum(box_losses) / num_sampled}
