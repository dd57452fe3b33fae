"""URPC: uncertainty rectified pyramid consistency.

Luo, Wang, Liao, Chen, Song, Chen, Zhang, Metaxas, Zhang, "Semi-supervised medical image segmentation
via uncertainty rectified pyramid consistency", Medical Image Analysis 80 (2022) 102517.
Official 2D code: HiLab-git/SSL4MIS ``code/train_uncertainty_rectified_pyramid_consistency_2D.py``
(the training step) and ``code/networks/unet.py`` (``UNet_URDS``, the network; see ``upsample`` in
:class:`URPCParams` for the two versions of that file).

The method, in the order of the training step:

1. **Pyramid prediction.**  One U-Net decoder emits logits at ``S`` scales (``S = 4`` for the 5-level
   U-Net), each resized to the input; the auxiliary heads see perturbed features in training
   (dropout, attention feature dropout, feature noise), which :class:`bench.DeepSupervisionUNet` owns.
   Labeled and unlabeled images go through the network as one batch, as in SSL4MIS, so BatchNorm
   statistics cover both.
2. **Supervised loss** on the labeled images: the mean over scales of ``0.5 CE + 0.5 Dice``
   (SSL4MIS sums four CE and four Dice terms and divides by 8).
3. **Pyramid average and uncertainty** on the unlabeled images: ``p_mean = (1/S) sum_s p_s`` and, per
   scale and pixel, ``u_s = sum_c p_mean log(p_mean / p_s) = KL(p_mean || p_s)``.  SSL4MIS computes it as
   ``nn.KLDivLoss(reduction='none')(log p_s, p_mean)``, whose target is the average: the divergence
   *from the average to the scale*.  (The direction ``sum_c p_s log(p_s / p_mean)`` that is sometimes
   quoted is the reverse one; this module follows the official code.)
4. **Rectified consistency** per scale,
   ``L_s = mean(exp(-u_s) (p_mean - p_s)^2) / (mean(exp(-u_s)) + eps) + mean(u_s)``: squared distances
   to the average are weighted down where the scale disagrees with the pyramid, and the second term
   keeps the uncertainty itself small.  ``L_c = (1/S) sum_s L_s``; nothing is detached (SSL4MIS lets
   gradients flow through ``p_mean`` and ``u_s`` too).
5. **Total** ``L = L_sup + lambda(t) L_c`` with the SSL4MIS ramp-up
   ``lambda(t) = 0.1 * sigmoid_rampup(t // 150, 200)``.

At test time the main (finest) output is the prediction, as SSL4MIS' 2D validation of the URPC network
does (``val_2D.test_single_volume_ds`` keeps ``output_main``, the first output).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from bench import (
    Batch,
    DeepSupervisionUNet,
    Method,
    Progress,
    StepOutput,
    TaskSpec,
    UNetConfig,
    ce_dice_loss,
    register_method,
    ssl4mis_consistency_weight,
)


@dataclass
class URPCParams:
    """Defaults are those of the official SSL4MIS script for ACDC
    (``train_uncertainty_rectified_pyramid_consistency_2D.py``).

    - ``ce_weight``, ``dice_weight`` = 0.5: ``supervised_loss = (4 CE + 4 Dice) / 8``, the mean over
      the four scales of ``0.5 CE + 0.5 Dice``.
    - ``consistency`` = 0.1, ``consistency_rampup_epochs`` = 200, ``iterations_per_epoch`` = 150:
      ``--consistency``, ``--consistency_rampup`` and the ``iter_num // 150`` passed to
      ``get_current_consistency_weight``; the ramp ends at 200 x 150 = 30 000 iterations, the whole
      ACDC schedule (the same SSL4MIS staircase as Mean Teacher, ``bench.ssl4mis_consistency_weight``).
      The epoch length is stated for that 30k schedule and scaled to the run's length
      (``bench.schedule_scaled``; the identity at the paper budget).
    - ``epsilon`` = 1e-8: the guard in the denominator ``mean(exp(-u)) + 1e-8``.
    - ``upsample`` = ``"transpose"``: ``UNet_URDS`` (SSL4MIS ``code/networks/unet.py`` at 126084dd)
      builds its ``UpBlock`` without a ``bilinear`` argument, whose default there is ``False``, i.e.
      2x2 transposed convolutions, unlike the plain ``UNet``, which passes ``bilinear=True``.  Another
      version of that file (9c2d4689, where the class is ``UNet_URPC``, the name the training script's
      ``--model unet_urpc`` asks for) changed ``UpBlock``'s default to ``True``, so that version's URPC
      up-samples bilinearly, and its coarsest auxiliary head sees element-wise ``F.dropout(x, 0.5)``
      rather than ``dropout2d``.  This module follows the ``UNet_URDS`` version; ``upsample="bilinear"``
      gives the other's up-sampling.
    """

    ce_weight: float = 0.5
    dice_weight: float = 0.5
    consistency: float = 0.1
    consistency_rampup_epochs: float = 200.0
    iterations_per_epoch: int = 150
    epsilon: float = 1e-8
    upsample: str = "transpose"


def pyramid_log_probs(scale_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Log-probabilities of every scale, stacked ``[S, B, C, H, W]``, in float32.

    ``log_softmax`` instead of SSL4MIS' ``torch.log(softmax)``: the same values where the latter is
    finite, and no ``-inf`` (then NaN) where a probability underflows.
    """
    return torch.stack([F.log_softmax(logits.float(), dim=1) for logits in scale_logits])


def pyramid_mean_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """``log p_mean`` with ``p_mean = (1/S) sum_s p_s``, computed in log space for stability."""
    return torch.logsumexp(log_probs, dim=0) - math.log(log_probs.shape[0])


def scale_uncertainty(scale_log_probs: torch.Tensor, mean_log_probs: torch.Tensor) -> torch.Tensor:
    """``u_s = KL(p_mean || p_s)`` per pixel, ``[B, 1, H, W]`` (SSL4MIS ``variance_*``)."""
    return (mean_log_probs.exp() * (mean_log_probs - scale_log_probs)).sum(dim=1, keepdim=True)


def rectified_consistency(
    scale_probs: torch.Tensor, mean_probs: torch.Tensor, uncertainty: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """``mean(exp(-u) (p_mean - p_s)^2) / (mean(exp(-u)) + eps) + mean(u)`` for one scale.

    With ``u = 0`` everywhere this is the plain mean squared distance to the pyramid average (up to
    ``1 + eps``); a constant ``u = c`` adds ``c`` and leaves the distance term unweighted.
    """
    certainty = torch.exp(-uncertainty)
    squared_distance = (mean_probs - scale_probs) ** 2
    return (squared_distance * certainty).mean() / (certainty.mean() + epsilon) + uncertainty.mean()


def uncertainty_rectified_pyramid_consistency(
    scale_logits: Sequence[torch.Tensor], epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``L_c = (1/S) sum_s L_s`` over the scales' logits of unlabeled images; also returns the mean
    uncertainty over scales (for the training log)."""
    log_probs = pyramid_log_probs(scale_logits)
    mean_log_probs = pyramid_mean_log_probs(log_probs)
    mean_probs = mean_log_probs.exp()
    per_scale, uncertainties = [], []
    for scale_log_probs in log_probs:
        uncertainty = scale_uncertainty(scale_log_probs, mean_log_probs)
        per_scale.append(rectified_consistency(scale_log_probs.exp(), mean_probs, uncertainty, epsilon))
        uncertainties.append(uncertainty.mean())
    return torch.stack(per_scale).mean(), torch.stack(uncertainties).mean()


@register_method()
class URPC(Method):
    name = "urpc"
    paper = (
        "Luo et al., Semi-supervised medical image segmentation via uncertainty rectified pyramid "
        "consistency, MedIA 2022 (SSL4MIS train_uncertainty_rectified_pyramid_consistency_2D.py)"
    )
    Params = URPCParams
    unlabeled_views = ("weak",)

    def __init__(self, params: URPCParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        config = UNetConfig(in_channels=task.in_channels, num_classes=task.num_classes, widths=task.network_widths)
        self.network = DeepSupervisionUNet(config, upsample=params.upsample)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        num_labeled = batch.labeled_images.shape[0]
        scale_logits = self.network(torch.cat([batch.labeled_images, batch.unlabeled["weak"]]))

        supervised_loss = torch.stack([
            ce_dice_loss(logits[:num_labeled], batch.labels, self.params.ce_weight, self.params.dice_weight)
            for logits in scale_logits
        ]).mean()
        consistency_loss, mean_uncertainty = uncertainty_rectified_pyramid_consistency(
            [logits[num_labeled:] for logits in scale_logits], self.params.epsilon
        )
        consistency_weight = ssl4mis_consistency_weight(
            progress.step, self.params.consistency, self.params.consistency_rampup_epochs,
            self.params.iterations_per_epoch, progress.total_steps,
        )
        loss = supervised_loss + consistency_weight * consistency_loss
        return StepOutput(loss, {
            "loss_supervised": float(supervised_loss.detach()),
            "loss_consistency": float(consistency_loss.detach()),
            "uncertainty": float(mean_uncertainty.detach()),
            "consistency_weight": consistency_weight,
        })

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The main (finest) head; the auxiliary heads only regularise training."""
        return self.network(images)[0]

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "consistency": trial.suggest_float("consistency", 0.01, 1.0, log=True),
            "consistency_rampup_epochs": trial.suggest_float("consistency_rampup_epochs", 10.0, 200.0, log=True),
        }
