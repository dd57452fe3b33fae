"""UniMatch (Yang et al., CVPR 2023), medical configuration (``more-scenarios/medical/unimatch.py``).

FixMatch widened in two directions.  Image level: two strong views of each unlabeled image, each
with its own photometric perturbation and its own CutMix box, are both guided by the one weak view
(dual-stream perturbation).  Feature level: the weak view's encoder features, dropped out channel-wise
with p = 0.5, must also reproduce the weak pseudo-label (feature-perturbation stream,
``UNet.forward(x, feature_perturbation=True)``).

Per step, with ``y^w = argmax p^w`` and ``c^w = max p^w`` of the weak view:

    L_x    = (CE(p_x, y) + Dice(p_x, y)) / 2
    L_s_k  = Dice(p^{s_k}, mix_k(y^w), mask = mix_k(c^w) >= tau)    k = 1, 2 (own CutMix box each)
    L_fp   = Dice(p^{fp},  y^w,        mask = c^w >= tau)
    L      = (L_x + mu (L_s_1 + L_s_2) / 2 + lambda L_fp) / 2,   mu = lambda = 0.5

i.e. the official ``(loss_x + 0.25 loss_u_s1 + 0.25 loss_u_s2 + 0.5 loss_u_w_fp) / 2``.

As in the official code: the labeled batch and the weak view share one forward pass with feature
perturbation (BatchNorm sees clean and perturbed features of both); the two strong views share a
second one; unlabeled terms are Dice only with low-confidence pixels ignored.  The one departure is
the CutMix partner: UniMatch draws it from a second unlabeled loader and predicts it in eval mode;
here the partner of image ``i`` is image ``i - 1`` of the same batch (``torch.roll``), whose weak
prediction is already computed, so the pasted box takes the partner's training-mode weak
pseudo-label and confidence, with no extra forward pass.
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
class UniMatchParams:
    """Defaults and their sources:

    * ``confidence_threshold`` 0.95: ``more-scenarios/medical/configs/acdc.yaml`` (``conf_thresh``).
    * ``image_perturbation_weight`` 0.5 (mu) and ``feature_perturbation_weight`` 0.5 (lambda): the
      paper's final unlabeled loss ``lambda L_fp + mu (L_s1 + L_s2) / 2`` with lambda = mu = 0.5,
      which is the official ``0.25 loss_u_s1 + 0.25 loss_u_s2 + 0.5 loss_u_w_fp``.
    * ``cutmix_probability`` 0.5: ``dataset/transform.py`` ``obtain_cutmix_box(p=0.5)``, drawn
      independently for each strong view.
    """

    confidence_threshold: float = 0.95
    image_perturbation_weight: float = 0.5
    feature_perturbation_weight: float = 0.5
    cutmix_probability: float = 0.5


@register_method()
class UniMatch(Method):
    name = "unimatch"
    paper = "UniMatch: Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic Segmentation (Yang et al., CVPR 2023)"
    Params = UniMatchParams
    unlabeled_views = ("weak", "strong", "strong2")

    def __init__(self, params: UniMatchParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.network = unet_for(task)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        params = self.params
        labeled_count = batch.labeled_images.shape[0]
        weak_images = batch.unlabeled["weak"]

        clean_logits, perturbed_logits = self.network(
            torch.cat([batch.labeled_images, weak_images]), feature_perturbation=True
        )
        labeled_logits, weak_logits = clean_logits[:labeled_count], clean_logits[labeled_count:]
        feature_perturbed_logits = perturbed_logits[labeled_count:]
        weak_targets = PseudoLabels.from_logits(weak_logits)

        strong_streams = []
        for view in ("strong", "strong2"):
            strong_images = batch.unlabeled[view]
            batch_size, _, height, width = strong_images.shape
            box = cutmix_boxes(batch_size, height, width, params.cutmix_probability, device=strong_images.device)
            strong_streams.append(cutmix_from_partner(box, strong_images, weak_targets))
        (first_images, first_targets), (second_images, second_targets) = strong_streams
        first_logits, second_logits = self.network(torch.cat([first_images, second_images])).chunk(2)

        supervised_loss = ce_dice_loss(labeled_logits, batch.labels)
        threshold = params.confidence_threshold
        first_strong_loss = confident_dice_loss(first_logits, first_targets, threshold)
        second_strong_loss = confident_dice_loss(second_logits, second_targets, threshold)
        feature_loss = confident_dice_loss(feature_perturbed_logits, weak_targets, threshold)
        unlabeled_loss = (
            params.image_perturbation_weight * (first_strong_loss + second_strong_loss) / 2
            + params.feature_perturbation_weight * feature_loss
        )
        loss = (supervised_loss + unlabeled_loss) / 2
        return StepOutput(loss, {
            "loss_supervised": float(supervised_loss.detach()),
            "loss_strong": float((first_strong_loss + second_strong_loss).detach()) / 2,
            "loss_feature_perturbation": float(feature_loss.detach()),
            "confident_fraction": float(weak_targets.confident(threshold).mean()),
        })

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "confidence_threshold": trial.suggest_float("confidence_threshold", 0.8, 0.99),
            "image_perturbation_weight": trial.suggest_float("image_perturbation_weight", 0.1, 2.0, log=True),
            "feature_perturbation_weight": trial.suggest_float("feature_perturbation_weight", 0.1, 2.0, log=True),
        }
