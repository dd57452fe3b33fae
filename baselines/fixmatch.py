"""FixMatch (Sohn et al., NeurIPS 2020) in its segmentation form, as UniMatch runs it on ACDC.

Weak-to-strong consistency: the prediction on the weak view of an unlabeled image, where it is
confident, supervises the prediction on a strongly perturbed view of the same image (FixMatch
Sec. 2.2, Eq. 4, per pixel).  The strong view is photometric jitter/blur plus CutMix with another
unlabeled image (UniMatch ``fixmatch.py``), and the mixed target is the weak pseudo-label of
whichever image each pixel came from.

Per step, with ``y^w = argmax p^w`` and ``c^w = max p^w`` of the weak view:

    L_x = (CE(p_x, y) + Dice(p_x, y)) / 2                               (labeled)
    L_u = Dice(p^s, mix(y^w), mask = mix(c^w) >= tau)                   (unlabeled)
    L   = (L_x + lambda_u L_u) / 2

Choices (UniMatch's medical code, ``more-scenarios/medical``, has ``unimatch.py`` but no FixMatch
script; this module is its FixMatch as the ablation without feature perturbation and second strong
view, i.e. UniMatch's top-level ``fixmatch.py`` with the medical losses):

* The unlabeled loss is Dice only, pixels below the threshold ignored, as every unlabeled term of
  the medical ``unimatch.py`` (``criterion_dice(..., ignore=conf < conf_thresh)``).
* The weak view goes through the network together with the labeled batch in training mode and is
  detached, as in UniMatch (``model(torch.cat((img_x, img_u_w)))``), so BatchNorm sees both.
* CutMix partner: UniMatch mixes with a second unlabeled batch and predicts it in eval mode only
  because that batch is not otherwise forwarded.  With the harness's one unlabeled batch the partner
  of image ``i`` is image ``i - 1`` (``torch.roll``); its weak prediction is already at hand, so both
  halves of a mixed target come from the same training-mode weak forward, and no extra forward pass
  (nor an eval/train switch inside the step) is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench import (
    Batch,
    Method,
    Progress,
    PseudoLabels,
    StepOutput,
    TaskSpec,
    ce_dice_loss,
    confident_dice_loss,
    cutmix_boxes,
    cutmix_from_partner,
    register_method,
    unet_for,
)


@dataclass
class FixMatchParams:
    """Defaults and their sources:

    * ``confidence_threshold`` 0.95: UniMatch ``more-scenarios/medical/configs/acdc.yaml``
      (``conf_thresh``); FixMatch paper Sec. 4 uses the same tau.
    * ``unlabeled_weight`` 1.0: FixMatch paper Sec. 2.2 (loss ``l_s + lambda_u l_u``) with
      lambda_u = 1 (Sec. 4); UniMatch then averages, ``loss = (loss_x + loss_u_s) / 2``.
    * ``cutmix_probability`` 0.5: UniMatch ``obtain_cutmix_box(p=0.5)``.
    """

    confidence_threshold: float = 0.95
    unlabeled_weight: float = 1.0
    cutmix_probability: float = 0.5


@register_method()
class FixMatch(Method):
    name = "fixmatch"
    paper = "FixMatch (Sohn et al., NeurIPS 2020), segmentation form of UniMatch (Yang et al., CVPR 2023)"
    Params = FixMatchParams
    unlabeled_views = ("weak", "strong")

    def __init__(self, params: FixMatchParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.network = unet_for(task)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        labeled_count = batch.labeled_images.shape[0]
        weak_images, strong_images = batch.unlabeled["weak"], batch.unlabeled["strong"]

        joint_logits = self.network(torch.cat([batch.labeled_images, weak_images]))
        labeled_logits, weak_logits = joint_logits[:labeled_count], joint_logits[labeled_count:]
        weak_targets = PseudoLabels.from_logits(weak_logits)

        batch_size, _, height, width = strong_images.shape
        box = cutmix_boxes(batch_size, height, width, self.params.cutmix_probability, device=strong_images.device)
        mixed_images, mixed_targets = cutmix_from_partner(box, strong_images, weak_targets)
        strong_logits = self.network(mixed_images)

        supervised_loss = ce_dice_loss(labeled_logits, batch.labels)
        unlabeled_loss = confident_dice_loss(strong_logits, mixed_targets, self.params.confidence_threshold)
        loss = (supervised_loss + self.params.unlabeled_weight * unlabeled_loss) / 2
        return StepOutput(loss, {
            "loss_supervised": float(supervised_loss.detach()),
            "loss_unlabeled": float(unlabeled_loss.detach()),
            "confident_fraction": float(weak_targets.confident(self.params.confidence_threshold).mean()),
        })

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "confidence_threshold": trial.suggest_float("confidence_threshold", 0.8, 0.99),
            "unlabeled_weight": trial.suggest_float("unlabeled_weight", 0.25, 4.0, log=True),
            "cutmix_probability": trial.suggest_float("cutmix_probability", 0.0, 1.0),
        }
