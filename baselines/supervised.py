"""Supervised-only baselines: the lower bound (labeled subset only) and the upper bound (all labels).

Both train the SSL4MIS U-Net with ``0.5 CE + 0.5 Dice`` (SSL4MIS ``train_fully_supervised_2D.py``),
SGD lr 0.01 with poly decay, on a batch of labeled images as large as the semi-supervised methods' whole
batch (that script's ``batch_size`` 24 = the SSL scripts' 12 labeled + 12 unlabeled), so that the lower
bound sees as many images per iteration as the methods it is compared with.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench import Batch, Method, Progress, StepOutput, TaskSpec, ce_dice_loss, register_method, unet_for


@dataclass
class SupervisedParams:
    """SSL4MIS ``train_fully_supervised_2D.py``: loss = 0.5 CE + 0.5 Dice."""

    ce_weight: float = 0.5
    dice_weight: float = 0.5


@register_method()
class Supervised(Method):
    name = "supervised"
    paper = "U-Net trained on the labeled subset only (SSL4MIS lower bound; Ronneberger et al., MICCAI 2015)"
    Params = SupervisedParams
    fills_batch_with_labeled = True

    def __init__(self, params: SupervisedParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.network = unet_for(task)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        logits = self.network(batch.labeled_images)
        loss = ce_dice_loss(logits, batch.labels, self.params.ce_weight, self.params.dice_weight)
        return StepOutput(loss, {"loss_supervised": float(loss.detach())})


@register_method()
class FullySupervised(Supervised):
    name = "fully-supervised"
    paper = "U-Net trained on every training label (upper bound of every SSL table)"
    trains_on_all_labels = True
