"""SAMed (Zhang & Liu, "Customized Segment Anything Model for Medical Image Segmentation",
arXiv 2304.13785, 2023): SAM fine-tuned on the labeled images only, with LoRA on the image encoder's
q and v projections and the prompt encoder and mask decoder trained in full.

The model segments automatically: no prompt is given, the decoder sees SAM's learnable default dense
embedding, and its mask tokens are the classes (background included); the class logits are
softmaxed (SAMed ``segment_anything/modeling/sam.py`` ``forward_train``).  The loss compares the
decoder's low-resolution logits with the label map resized (nearest) to that resolution
(``trainer.py`` ``calc_loss`` on ``low_res_logits``):

    L = (1 - w) CE(low_res_logits, y_low) + w Dice(softmax(low_res_logits), y_low),  w = 0.8

The CPC-SAM and InteractMatch tables (ACDC, 1 and 3 labeled patients) list SAMed as the
"SAM on labeled data only" row; this module is that row.  At test time the automatic segmentation is
resized to the patch size.

Defaults follow the official code (hitachinsk/SAMed, ``train.py`` and ``trainer.py``, run with
``--warmup --AdamW`` as its README does); the encoder input is 512 px for SAM's ViTs as in
``train.py --img_size 512`` (LiteMedSAM is fixed at 256).  The decoder starts as ``build_sam.py``
leaves it: SAM's transformer and up-scaling always, its mask tokens, hypernetwork MLPs and IoU head only
when the whole checkpoint loads strictly (4 classes at the checkpoint's input size, e.g. LiteMedSAM at
256); at 512 px ``load_from`` drops them and they start random (``sam_for(decoder_init="samed")``).

Batch: SAMed trains on 2 GPUs x ``--batch_size 12`` = 24 labeled images per step; the harness gives
every method the budget's labeled batch (12 at ``paper``, 8 at ``quick``), so at ``paper`` this row
takes half SAMed's batch at SAMed's learning rate.
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
    register_method,
    resize_labels,
    sam_for,
    sam_optimizer,
)


@dataclass
class SAMedParams:
    """Hyper-parameters, all from SAMed's official code.

    ``lora_rank`` -- ``train.py --rank 4`` (paper §3.1: rank 4).
    ``base_lr`` -- ``train.py --base_lr 0.005``.
    ``warmup_iterations`` -- ``train.py --warmup_period 250``; then ``(1 - t / T) ** 0.9`` decay (``trainer.py``).
    ``weight_decay`` -- ``trainer.py``: ``AdamW(betas=(0.9, 0.999), weight_decay=0.1)``.
    ``dice_weight`` -- ``train.py --dice_param 0.8``: loss = 0.2 CE + 0.8 Dice.
    ``vit_image_size`` -- ``train.py --img_size 512`` (SAM ViT-B/L/H only; position embeddings resized).
    ``pixel_normalization`` -- ``unit``: ``train.py`` builds SAM with ``pixel_mean=[0, 0, 0]``,
    ``pixel_std=[1, 1, 1]``, i.e. the [0, 1] image as is.
    ``loss_at_low_resolution`` -- ``trainer.py`` ``calc_loss`` uses ``low_res_logits`` and ``low_res_label``.
    """

    lora_rank: int = 4
    base_lr: float = 0.005
    warmup_iterations: int = 250
    weight_decay: float = 0.1
    dice_weight: float = 0.8
    vit_image_size: int = 512
    pixel_normalization: str = "unit"
    loss_at_low_resolution: bool = True


@register_method()
class SAMed(Method):
    name = "samed"
    family = "sam"
    paper = ("SAMed: LoRA-adapted SAM fine-tuned on labeled data only, automatic multi-class segmentation "
             "(Zhang & Liu, arXiv 2304.13785, 2023)")
    Params = SAMedParams

    def __init__(self, params: SAMedParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.sam = sam_for(
            task,
            class_tokens=True,
            decoder_init="samed",
            adaptation="lora",
            lora_rank=params.lora_rank,
            vit_image_size=params.vit_image_size,
            pixel_normalization=params.pixel_normalization,
        )
        self.result_flags = type(self).result_flags + self.sam.result_flags

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        low_res_logits = self.sam.decode(self.sam.embed(batch.labeled_images))
        if self.params.loss_at_low_resolution:
            logits, labels = low_res_logits, resize_labels(batch.labels, tuple(low_res_logits.shape[-2:]))
        else:
            logits = torch.nn.functional.interpolate(
                low_res_logits, size=tuple(batch.labels.shape[-2:]), mode="bilinear", align_corners=False
            )
            labels = batch.labels
        dice_weight = self.params.dice_weight
        loss = ce_dice_loss(logits, labels, ce_weight=1.0 - dice_weight, dice_weight=dice_weight)
        return StepOutput(loss, {"loss_supervised": float(loss.detach())})

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.sam(images)

    def optimizers(self) -> list[OptimizerSpec]:
        return [sam_optimizer(self, self.params.base_lr, self.params.weight_decay,
                              self.params.warmup_iterations, self.task.total_steps)]

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "base_lr": trial.suggest_float("base_lr", 1e-4, 1e-2, log=True),
            "lora_rank": trial.suggest_categorical("lora_rank", [4, 8, 16]),
            "dice_weight": trial.suggest_float("dice_weight", 0.5, 0.9),
        }
