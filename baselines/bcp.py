"""BCP: Bidirectional Copy-Paste for semi-supervised medical image segmentation (Bai et al., CVPR 2023).

Two stages, as the official ``code/ACDC_BCP_train.py`` (``pre_train`` then ``self_train``):

1. Supervised pre-training with copy-paste between labeled images.  With the zero-centred mask ``M``
   (1 everywhere except one random box of 2/3 x 2/3 of the patch, ``bench.copy_paste_mask``), the
   input is ``X_a * M + X_b * (1 - M)`` and its label ``Y_a * M + Y_b * (1 - M)``.
2. Self-training with an EMA teacher, initialised from the pre-trained student at the switch.  The
   labeled and unlabeled batches are each split in halves ``a`` and ``b``, and copy-paste goes both
   ways with the same mask:

       X_in  = X_u^a * M + X_l^a * (1 - M)     labeled patch pasted into an unlabeled image
       X_out = X_l^b * M + X_u^b * (1 - M)     unlabeled patch pasted into a labeled image

   Their labels mix the teacher's pseudo-labels ``Y^_u`` (argmax, then the largest connected
   component per class) and the ground truth with the same ``M``.  Pixels that come from an
   unlabeled image weigh ``alpha`` = 0.5, labeled pixels 1.

The loss of each mixed image is the official ``mix_loss``: for each of the two regions (``M`` and
``1 - M``) a Dice over the region plus a cross-entropy averaged over the region, weighted by the
region's source, and ``(Dice + CE) / 2``; the step loss sums the two directions.

Choices beyond the paper, all from the official ACDC script unless stated:

* Stage lengths: 10k pre-training + 30k self-training iterations (``--pre_iterations``,
  ``--max_iterations``).  The harness runs one budget, so ``pretrain_fraction`` = 10k / 40k of the
  steps are pre-training and the ``paper`` budget is raised to 40k iterations (``budget_overrides``).
  The official code hands the best-validation pre-training checkpoint to stage 2; here stage 2 simply
  continues from the last pre-training step (the harness keeps the best validation state for the
  whole run).
* Learning rate: the official script keeps SGD at a constant 0.01 (its optimizer restarts from the
  pre-training state); this benchmark keeps the harness's SSL4MIS protocol, poly decay over all steps.
* Teacher: EMA decay 0.99 (``update_model_ema(model, ema_model, 0.99)``).  The harness's
  ``ema_update`` uses ``min(1 - 1 / (step + 1), decay)`` with the global step, which is the constant
  0.99 whenever pre-training lasted 100 steps or more; it averages parameters only, while the
  official code also averages BatchNorm buffers, which its teacher never uses: the teacher predicts
  in training mode (``ema_model.train()``), with batch statistics, as here (the harness puts the whole
  method in training mode).  Each half of the unlabeled batch goes through the teacher separately,
  and each mixed batch through the student separately, as in the official code (BatchNorm statistics
  are per forward pass).
* Largest connected component: 8-connectivity, the default of the ``skimage.measure.label`` used by
  ``get_ACDC_2DLargestCC``; generalised from ACDC's classes 1-3 to every foreground class.
* One mask per step for the whole batch, as ``generate_mask``.
* Test-time model: the student (the official script validates and saves ``model``, not the EMA one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from bench import (
    Batch,
    Method,
    Progress,
    StepOutput,
    TaskSpec,
    copy_paste_mask,
    dice_loss,
    ema_update,
    largest_component_per_class,
    make_teacher,
    mix_by_mask,
    register_method,
    unet_for,
)

REGION_EPSILON = 1e-16
"""Official ``mix_loss``: ``(CE * region).sum() / (region.sum() + 1e-16)``, so an empty region adds 0."""


@dataclass
class BCPParams:
    """Defaults and their sources:

    * ``pretrain_fraction`` 0.25: official ``--pre_iterations 10000`` before ``--max_iterations
      30000`` of self-training, i.e. 10k of 40k steps.
    * ``unlabeled_weight`` 0.5 (alpha, the weight of pixels from unlabeled images): official
      ``--u_weight 0.5``, the paper's alpha = 0.5.
    * ``ema_decay`` 0.99: official ``update_model_ema(model, ema_model, 0.99)``.
    * ``patch_fraction`` 2/3 (beta): the paper's zero region of beta H x beta W with beta = 2/3;
      official ``generate_mask`` (``int(img_x * 2 / 3)``).
    * ``largest_component`` True: official ``get_ACDC_masks(..., nms=1)`` on the teacher's output.
    """

    pretrain_fraction: float = 10_000 / 40_000
    unlabeled_weight: float = 0.5
    ema_decay: float = 0.99
    patch_fraction: float = 2 / 3
    largest_component: bool = True


def copy_paste_loss(
    logits: torch.Tensor, mixed_labels: torch.Tensor, mask: torch.Tensor, weight_where_one: float, weight_where_zero: float
) -> torch.Tensor:
    """Official ``mix_loss`` for one mixed image: per region of the mask (``M``, then ``1 - M``), Dice
    over the region plus cross-entropy averaged over the region, each region weighted by where its
    pixels came from; returns ``(Dice + CE) / 2``."""
    probs = torch.softmax(logits.float(), dim=1)
    pixel_ce = F.cross_entropy(logits.float(), mixed_labels.long(), reduction="none")
    region_one = mask.expand_as(pixel_ce).to(pixel_ce.dtype)
    dice_total = pixel_ce.new_zeros(())
    ce_total = pixel_ce.new_zeros(())
    for region, weight in ((region_one, weight_where_one), (1.0 - region_one, weight_where_zero)):
        dice_total = dice_total + weight * dice_loss(probs, mixed_labels, region)
        ce_total = ce_total + weight * (pixel_ce * region).sum() / (region.sum() + REGION_EPSILON)
    return (dice_total + ce_total) / 2


def _halves(tensor: torch.Tensor, pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``a`` and ``b`` halves of a batch (official ``[:sub_bs]`` and ``[sub_bs:]``)."""
    return tensor[:pairs], tensor[pairs : 2 * pairs]


@register_method()
class BCP(Method):
    name = "bcp"
    paper = "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation (Bai et al., CVPR 2023)"
    Params = BCPParams
    unlabeled_views = ("weak",)
    budget_overrides: ClassVar[dict[str, dict[str, Any]]] = {"paper": {"iterations": 40_000}}
    """Official ACDC schedule: 10k pre-training + 30k self-training iterations."""

    def __init__(self, params: BCPParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        if not 0.0 <= params.pretrain_fraction < 1.0:
            raise ValueError(f"bcp: pretrain_fraction must lie in [0, 1), got {params.pretrain_fraction}")
        self.network = unet_for(task)
        self.teacher = make_teacher(self.network)
        self.pretrain_steps = round(params.pretrain_fraction * task.total_steps)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        if progress.step < self.pretrain_steps:
            return self.pretraining_step(batch)
        if progress.step == self.pretrain_steps:
            self.teacher.load_state_dict(self.network.state_dict())
        return self.self_training_step(batch)

    def pretraining_step(self, batch: Batch) -> StepOutput:
        """Stage 1: copy-paste between two halves of the labeled batch, every pixel supervised."""
        pairs = self._pairs(batch.labeled_images.shape[0])
        images_a, images_b = _halves(batch.labeled_images, pairs)
        labels_a, labels_b = _halves(batch.labels, pairs)
        mask = self._mask(batch.labeled_images)
        mixed_images = mix_by_mask(mask, images_a, images_b)
        mixed_labels = mix_by_mask(mask, labels_a, labels_b)
        loss = copy_paste_loss(self.network(mixed_images), mixed_labels, mask, 1.0, 1.0)
        return StepOutput(loss, {"loss_pretraining": float(loss.detach())})

    def self_training_step(self, batch: Batch) -> StepOutput:
        """Stage 2: bidirectional copy-paste between labeled and unlabeled images, EMA pseudo-labels."""
        unlabeled_images = batch.unlabeled["weak"]
        pairs = self._pairs(min(batch.labeled_images.shape[0], unlabeled_images.shape[0]))
        labeled_a, labeled_b = _halves(batch.labeled_images, pairs)
        labels_a, labels_b = _halves(batch.labels, pairs)
        unlabeled_a, unlabeled_b = _halves(unlabeled_images, pairs)
        with torch.no_grad():
            pseudo_labels_a = self.teacher_pseudo_labels(unlabeled_a)
            pseudo_labels_b = self.teacher_pseudo_labels(unlabeled_b)

        mask = self._mask(unlabeled_images)
        alpha = self.params.unlabeled_weight
        unlabeled_with_labeled_patch = mix_by_mask(mask, unlabeled_a, labeled_a)
        unlabeled_with_labeled_patch_labels = mix_by_mask(mask, pseudo_labels_a, labels_a)
        labeled_with_unlabeled_patch = mix_by_mask(mask, labeled_b, unlabeled_b)
        labeled_with_unlabeled_patch_labels = mix_by_mask(mask, labels_b, pseudo_labels_b)

        inward_loss = copy_paste_loss(
            self.network(unlabeled_with_labeled_patch), unlabeled_with_labeled_patch_labels, mask, alpha, 1.0
        )
        outward_loss = copy_paste_loss(
            self.network(labeled_with_unlabeled_patch), labeled_with_unlabeled_patch_labels, mask, 1.0, alpha
        )
        loss = inward_loss + outward_loss
        return StepOutput(loss, {"loss_inward": float(inward_loss.detach()), "loss_outward": float(outward_loss.detach())})

    def teacher_pseudo_labels(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher argmax, filtered to the largest connected component per class (official
        ``get_ACDC_masks(ema_model(x), nms=1)``)."""
        pseudo_labels = self.teacher(images).argmax(dim=1)
        if self.params.largest_component:
            pseudo_labels = largest_component_per_class(pseudo_labels, self.task.num_classes)
        return pseudo_labels

    def on_step_end(self, progress: Progress) -> None:
        if progress.step >= self.pretrain_steps:
            ema_update(self.teacher, self.network, self.params.ema_decay, progress.step)

    def _mask(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        return copy_paste_mask(height, width, self.params.patch_fraction, device=images.device)

    def _pairs(self, batch_size: int) -> int:
        if batch_size < 2:
            raise ValueError(
                f"bcp: copy-paste pairs the two halves of a batch, so labeled and unlabeled batches need "
                f"at least 2 images each, got {batch_size}"
            )
        return batch_size // 2

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "unlabeled_weight": trial.suggest_float("unlabeled_weight", 0.1, 1.0),
            "pretrain_fraction": trial.suggest_float("pretrain_fraction", 0.05, 0.5),
            "patch_fraction": trial.suggest_float("patch_fraction", 0.4, 0.8),
        }
