"""Zero-shot SAM prompted from the ground truth: the "SAM-point" row of the CPC-SAM (Table 1) and
InteractMatch (Table 1) ACDC/BUSI tables, after Mazurowski et al., "Segment anything model for medical
image analysis: an experimental study", Medical Image Analysis 89, 2023.

No training.  For every test slice and every foreground class present in its label map, the
pretrained SAM gets one prompt derived from the ground truth of that class -- the centre point of
its largest connected component (``sam-point``; "a center-point prompt derived from ground truth
labels", InteractMatch §4.3) or that component's tight box (``sam-box``) -- and returns one binary
mask; the binary masks are combined into a label map (``AdaptedSAM.decode_per_class``: a pixel takes
the class with the highest positive mask logit, background otherwise).  A class absent from a
slice is not prompted and not predicted.

Because the prompts come from the test labels, every result is flagged ``ground-truth-prompts``:
it is an interactive-segmentation reference, not a semi-supervised result.

The papers use SAM ViT-B (``--sam-model vit_b --sam-checkpoint sam_vit_b_01ec64.pth``).  LiteMedSAM,
the default backbone, was trained with box prompts only and ignores points (on ACDC test volumes its
point-prompted masks are nearly empty, Dice < 0.01, while its box-prompted RV and LV reach 0.92 and
0.76), so ``sam-point`` on it is flagged ``point-prompts-untrained``.  The myocardium fails with
LiteMedSAM's boxes too (Dice about 0.01): its box holds the LV cavity, which is what comes out -- the
ring-structure difficulty CPC-SAM §3 invokes for SAM without fine-tuning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from bench import (
    GROUND_TRUTH_PROMPTS,
    Batch,
    Method,
    Progress,
    SAMOptions,
    StepOutput,
    TaskSpec,
    prompts_from_labels,
    register_method,
    sam_for,
)

POINT_PROMPTS_UNTRAINED = "point-prompts-untrained"
"""Result flag: the backbone was never trained with point prompts, so the score says little."""


@dataclass
class SAMPointParams:
    """``pixel_normalization`` -- ``pretraining``: the preprocessing the backbone's weights were trained
    with (SAM's pixel mean/std for SAM ViTs, [0, 1] for LiteMedSAM).
    ``vit_image_size`` -- 1024, SAM's own input size (zero-shot: nothing is adapted).
    ``multimask`` -- for a point, SAM's three candidate masks and the one of highest predicted IoU
    (Kirillov et al. 2023 §3: a single point is ambiguous); a box uses SAM's single-mask output.
    """

    pixel_normalization: str = "pretraining"
    vit_image_size: int = 1024
    multimask: bool = True


@register_method()
class SAMPoint(Method):
    name = "sam-point"
    family = "sam"
    paper = ("Zero-shot SAM with the centre point of each class's largest ground-truth component as prompt "
             "(Mazurowski et al., MedIA 2023; the SAM-point row of CPC-SAM / InteractMatch Table 1)")
    Params = SAMPointParams
    trains = False
    result_flags = (GROUND_TRUTH_PROMPTS,)
    prompt_type: ClassVar[str] = "point"
    POINT_BLIND_BACKBONES: ClassVar[tuple[str, ...]] = ("lite-medsam",)
    """Backbones trained without point prompts (LiteMedSAM: boxes only)."""

    def __init__(self, params: SAMPointParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.sam = sam_for(
            task,
            class_tokens=False,
            adaptation="frozen",
            vit_image_size=params.vit_image_size,
            pixel_normalization=params.pixel_normalization,
            report=False,
        )
        self.sam.requires_grad_(False)
        self.result_flags = type(self).result_flags + self.sam.result_flags
        if self.prompt_type == "point" and SAMOptions.from_task(task).model in self.POINT_BLIND_BACKBONES:
            self.result_flags += (POINT_PROMPTS_UNTRAINED,)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        raise RuntimeError(f"{self.name} is evaluation-only (trains = False)")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            f"{self.name} is prompted from the ground truth: call predict_inputs(images, labels); the harness "
            f"does so for methods flagged {GROUND_TRUTH_PROMPTS!r}"
        )

    @torch.no_grad()
    def predict_inputs(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C, H, W]`` at the images' size from prompts built on ``labels`` ``[B, h, w]``."""
        if labels is None:
            raise ValueError(f"{self.name}: needs the label maps to build its prompts")
        prompts = prompts_from_labels(labels, self.task.num_classes)
        foreground = slice(1, None)
        use_point = self.prompt_type == "point"
        return self.sam.decode_per_class(
            self.sam.embed(images),
            valid=prompts.valid[:, foreground],
            points=prompts.center_points[:, foreground] if use_point else None,
            boxes=None if use_point else prompts.boxes[:, foreground],
            frame_size=prompts.frame_size,
            multimask=self.params.multimask and use_point,
            output_size=tuple(images.shape[-2:]),
        )


@register_method()
class SAMBox(SAMPoint):
    name = "sam-box"
    paper = ("Zero-shot SAM with the tight box of each class's largest ground-truth component as prompt "
             "(Mazurowski et al., MedIA 2023; box-prompted companion of the SAM-point row)")
    prompt_type = "box"
