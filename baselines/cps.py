"""Cross Pseudo Supervision, CPS (Chen et al., CVPR 2021) in the SSL4MIS 2D ACDC setting.

Two U-Nets of the same architecture that differ only in their initialisation (paper Sec. 3.1) see the
same images.  Each is trained, in the order computed here, with

1. the supervised loss ``L_s`` on the labeled images (``0.5 CE + 0.5 Dice`` in SSL4MIS; CE in the paper);
2. the cross pseudo supervision ``L_cps``: the cross-entropy of network A against the one-hot argmax of
   network B, ``ce(p_A, argmax p_B)``, and vice versa.  The pseudo-label is a target: no gradient flows
   through it into the network that produced it;
3. ``L = L_s + lambda(t) L_cps`` summed over both networks.

Where the paper and SSL4MIS differ, SSL4MIS ``train_cross_pseudo_supervision_2D.py`` is followed:
``L_cps`` covers the unlabeled images only (the paper adds the same term on labeled images,
``L_cps^l``; ``pseudo_supervise_labeled=True`` restores it), and ``lambda`` is SSL4MIS' ramped 0.1
rather than the paper's constant 1.5 (VOC) / 6 (Cityscapes).

At test time network A is used: CPS infers with one network (paper Sec. 3.1), and SSL4MIS'
``model1`` is the Kaiming-initialised one, as network A is here.

Short schedules handicap network A.  ``kaiming_normal_`` draws conv weights about 2.5x the norm of
PyTorch's default initialisation; behind BatchNorm a weight's scale does not change the output, so the
same SGD step moves it roughly 6x less (the step relative to the weight scales as ``lr / ||w||^2``).
SSL4MIS trains 30x longer (30k iterations; CPC-SAM Table 1 reports CPS above the U-Net there, 56.87 vs
45.95 Dice with 3 patients); a 1,000-iteration run does not outgrow it: on real ACDC with
3 labeled patients (``quick`` budget, seed 0) network A's conv norms were still at their initial values
at the best step (5.7, 8.1, 11.3 vs 5.1, 8.0, 11.3 at initialisation) and it reached 0.14 validation
Dice on 10 volumes where network B (Xavier) reached 0.39.  Budgets that short should be read with this
in mind (``--set cps.init_a=xavier --set cps.init_b=kaiming`` swaps the two).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench import (
    Batch,
    Method,
    OptimizerSpec,
    Progress,
    StepOutput,
    TaskSpec,
    ce_dice_loss,
    cross_entropy_to_argmax,
    init_weights,
    poly_decay,
    register_method,
    ssl4mis_consistency_weight,
    unet_for,
)

SSL4MIS_SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}
"""``optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=0.0001)``, one per network."""


@dataclass
class CPSParams:
    """Iteration counts are stated for SSL4MIS's 30k-iteration schedule and scaled to the run's length
    (``bench.schedule_scaled``; the identity at the paper budget).

    Defaults of SSL4MIS ``code/train_cross_pseudo_supervision_2D.py``.

    - ``consistency`` 0.1 over ``consistency_rampup_epochs`` 200 "epochs" of ``iterations_per_epoch``
      150 iterations: ``--consistency``, ``--consistency_rampup`` and ``iter_num // 150``.  The paper
      uses a constant trade-off weight (1.5 on PASCAL VOC, 6 on Cityscapes) for DeepLabv3+.
    - ``pseudo_supervise_labeled`` False: SSL4MIS applies the cross pseudo supervision to the
      unlabeled half of the batch only; the paper also applies it to labeled images (``L_cps^l``).
    - ``init_a`` ``"kaiming"``, ``init_b`` ``"xavier"``: SSL4MIS re-initialises ``model1`` with
      ``kaiming_normal_`` and ``model2`` with ``xavier_normal_``, the "different initialisation" that
      is the only perturbation between the two networks.
    - ``ce_weight``/``dice_weight`` 0.5/0.5: ``0.5 * (ce_loss + dice_loss)`` on labeled images.
    """

    consistency: float = 0.1
    consistency_rampup_epochs: float = 200.0
    iterations_per_epoch: int = 150
    pseudo_supervise_labeled: bool = False
    init_a: str = "kaiming"
    init_b: str = "xavier"
    ce_weight: float = 0.5
    dice_weight: float = 0.5


@register_method()
class CPS(Method):
    name = "cps"
    paper = ("Semi-Supervised Semantic Segmentation with Cross Pseudo Supervision (Chen et al., CVPR 2021); "
             "SSL4MIS train_cross_pseudo_supervision_2D.py")
    Params = CPSParams
    unlabeled_views = ("weak",)

    def __init__(self, params: CPSParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.network_a = init_weights(unet_for(task), params.init_a)
        self.network_b = init_weights(unet_for(task), params.init_b)

    def pseudo_supervision_losses(
        self, logits_a: torch.Tensor, logits_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ce(p_A, argmax p_B), ce(p_B, argmax p_A))``: each network learns from the other's hard
        pseudo-label, which carries no gradient back to the network that produced it."""
        return cross_entropy_to_argmax(logits_a, logits_b), cross_entropy_to_argmax(logits_b, logits_a)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p = self.params
        labeled_count = batch.labeled_images.shape[0]
        images = torch.cat([batch.labeled_images, batch.unlabeled["weak"]])
        logits_a = self.network_a(images)
        logits_b = self.network_b(images)

        supervised_a = ce_dice_loss(logits_a[:labeled_count], batch.labels, p.ce_weight, p.dice_weight)
        supervised_b = ce_dice_loss(logits_b[:labeled_count], batch.labels, p.ce_weight, p.dice_weight)

        pseudo_supervised = slice(0 if p.pseudo_supervise_labeled else labeled_count, None)
        cps_a, cps_b = self.pseudo_supervision_losses(logits_a[pseudo_supervised], logits_b[pseudo_supervised])

        consistency_weight = ssl4mis_consistency_weight(
            progress.step, p.consistency, p.consistency_rampup_epochs, p.iterations_per_epoch, progress.total_steps
        )
        loss = supervised_a + supervised_b + consistency_weight * (cps_a + cps_b)
        return StepOutput(loss, {
            "loss_supervised_a": float(supervised_a.detach()),
            "loss_supervised_b": float(supervised_b.detach()),
            "loss_cps_a": float(cps_a.detach()),
            "loss_cps_b": float(cps_b.detach()),
            "consistency_weight": consistency_weight,
        })

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.network_a(images)

    def optimizers(self) -> list[OptimizerSpec]:
        """One SGD per network with poly decay, as SSL4MIS.  SGD's update is per parameter, so this is
        the same as a single optimizer over both networks; two keep each network's state separate.
        (SSL4MIS also sets ``lr = 0.01 * 0.1 ** (iter // 2500)`` every 2500 iterations, but its poly
        decay overwrites that one iteration later, so it is left out.)"""
        return [
            OptimizerSpec(torch.optim.SGD(network.parameters(), **SSL4MIS_SGD), poly_decay())
            for network in (self.network_a, self.network_b)
        ]

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """The pseudo-supervision weight (0.1 in SSL4MIS, 1.5-6 in the paper), its ramp-up, and whether
        labeled images are pseudo-supervised too."""
        return {
            "consistency": trial.suggest_float("consistency", 0.03, 6.0, log=True),
            "consistency_rampup_epochs": trial.suggest_float("consistency_rampup_epochs", 10.0, 200.0, log=True),
            "pseudo_supervise_labeled": trial.suggest_categorical("pseudo_supervise_labeled", [False, True]),
        }
