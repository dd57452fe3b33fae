"""The dual-decoder SAM of CPC-SAM and InteractMatch: one image encoder and one prompt encoder shared
by two mask decoders that prompt each other.

Both papers build the same machine (CPC-SAM §2.1-2.2; InteractMatch §3.1 "following the design in
[1]"), so its mechanics live here once:

* **The model** (:func:`dual_decoder_sam`): SAM with LoRA on the image encoder, CPC-SAM's class-aware
  prompt encoder (one point embedding per class, the class id as point label) and two randomly
  initialised multi-class decoders with progressive up-sampling (CPC-SAM §3 "Implementation
  details"; official ``sam_dualmask_same_prompt_class_random_large.py``).
* **Cross prompting** (:func:`cross_prompt`): each decoder's unprompted output is turned into a label
  map (argmax), prompts are taken from the largest connected component of every class in it
  (``bench.prompts``), and the *other* decoder is decoded with them.  The label map is detached by
  construction: a prompt is a location, not a differentiable quantity (the official
  ``prompt_generate_random_fast`` runs on ``argmax(...).cpu().numpy()``).
* **Ensembles**: the mean of softmax probabilities, for the pseudo-labels both papers build from
  two prompted outputs and for inference with both decoders unprompted.
* **Pseudo-label losses** ``1/2 [Dice + CE]`` against a hard label (CPC-SAM Eq. 1-2, InteractMatch
  Eq. 1 and 7), and the pixel-wise KL divergence of InteractMatch's distillation (Eq. 2-3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from bench.losses import ce_dice_loss
from bench.method import TaskSpec
from bench.prompts import ClassPrompts, jitter_boxes, prompts_from_labels
from bench.sam.model import BACKBONES, AdaptedSAM, SAMOptions, sam_for

DECODERS = (0, 1)
POINT_KINDS = ("center", "random")
BOX_KINDS = ("tight", "jittered")
PROBABILITY_FLOOR = 1e-12
"""Keeps ``log`` of an ensemble probability finite where both decoders put (float) zero on a class."""


@dataclass(frozen=True)
class PromptRecipe:
    """Which prompts to build from a label map: a point per class (``center`` = the interior pixel
    farthest from the boundary of the class's largest component, ``random`` = a uniformly drawn pixel
    of it) and/or a box per foreground class (``tight`` = the component's bounding box, ``jittered``
    = enlarged by ``box_offset`` of its extent per side and shifted within that margin, so it still
    encloses the component; ``bench.prompts.jitter_boxes``)."""

    point: str | None = None
    box: str | None = None
    box_offset: float = 0.0

    def __post_init__(self) -> None:
        if self.point is None and self.box is None:
            raise ValueError("PromptRecipe: give a point kind, a box kind or both")
        if self.point is not None and self.point not in POINT_KINDS:
            raise ValueError(f"PromptRecipe.point {self.point!r}: expected one of {POINT_KINDS}")
        if self.box is not None and self.box not in BOX_KINDS:
            raise ValueError(f"PromptRecipe.box {self.box!r}: expected one of {BOX_KINDS}")
        if self.box_offset < 0:
            raise ValueError(f"PromptRecipe.box_offset must be >= 0, got {self.box_offset}")


def full_resolution_upsampling_stages(task: TaskSpec, vit_image_size: int) -> int:
    """Up-sampling stages that bring the decoder's output to the encoder's input size.

    CPC-SAM's ``mask_decoder_prompt_large.py`` (the progressive up-sampling of MA-SAM) takes ViT-B's
    32 x 32 grid at 512 px to 512 x 512 logits, four x2 stages; the same rule gives two stages for
    LiteMedSAM (64 -> 256, SAM's own decoder) and three for the tiny test SAM (8 -> 64)."""
    backbone = BACKBONES[SAMOptions.from_task(task).model]
    image_size = backbone.image_size if backbone.fixed_image_size else vit_image_size
    embedding_size = image_size // backbone.embedding_stride
    return max(2, round(math.log2(image_size / embedding_size)))


def dual_decoder_sam(
    task: TaskSpec, *, lora_rank: int, vit_image_size: int, pixel_normalization: str
) -> AdaptedSAM:
    """LoRA on the image encoder's q and v (rank ``lora_rank``), prompt encoder and both decoders
    trained in full; the decoders start from independent random draws (CPC-SAM §2.1 "same structure
    but different weight initializations", §3 "two decoders are initialized randomly")."""
    return sam_for(
        task,
        num_decoders=len(DECODERS),
        class_tokens=True,
        class_prompts=True,
        decoder_init="random",
        adaptation="lora",
        lora_rank=lora_rank,
        vit_image_size=vit_image_size,
        pixel_normalization=pixel_normalization,
        upsampling_stages=full_resolution_upsampling_stages(task, vit_image_size),
    )


def other_decoder(decoder_index: int) -> int:
    """The decoder whose output prompts ``decoder_index`` (and which ``decoder_index`` supervises)."""
    return 1 - decoder_index


def prompts_from_logits(
    logits: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> ClassPrompts:
    """Prompts for every class from the argmax of ``logits`` ``[B, C, H, W]``; coordinates are pixels
    of that ``H x W`` frame."""
    return prompts_from_labels(logits.detach().argmax(dim=1), num_classes, generator)


def decode_prompted(
    sam: AdaptedSAM,
    image_embeddings: torch.Tensor,
    decoder_index: int,
    prompts: ClassPrompts,
    recipe: PromptRecipe,
    output_size: tuple[int, int],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Class logits ``[B, C, *output_size]`` of one decoder given one prompt set for all classes at
    once: point ``c`` carries class ``c``'s embedding (CPC-SAM's class-aware prompt encoder), box
    ``c`` has class ``c``'s embedding added to its corners.  An absent class gets SAM's "not a point"
    token instead (the official code repeats the background point with label 0 there).  Boxes cover
    the foreground classes only: the background's "component" spans the image, so its box would say
    nothing."""
    points = None
    if recipe.point is not None:
        coordinates = prompts.center_points if recipe.point == "center" else prompts.random_points
        points = (coordinates, prompts.point_labels())
    boxes = box_labels = None
    if recipe.box is not None:
        foreground = slice(1, None)
        boxes = prompts.boxes[:, foreground]
        if recipe.box == "jittered":
            boxes = jitter_boxes(boxes, recipe.box_offset, prompts.frame_size, generator)
        box_labels = prompts.point_labels()[:, foreground]
    return sam.decode(image_embeddings, decoder_index, points=points, boxes=boxes, box_labels=box_labels,
                      frame_size=prompts.frame_size, output_size=output_size)


def cross_prompt(
    sam: AdaptedSAM,
    image_embeddings: torch.Tensor,
    unprompted_logits: Sequence[torch.Tensor],
    recipes: dict[str, PromptRecipe],
    generator: torch.Generator | None = None,
) -> list[dict[str, torch.Tensor]]:
    """``outputs[k][name]``: decoder ``k`` prompted by ``recipes[name]`` built from the unprompted
    output of the other decoder (CPC-SAM §2.2: ``p_hat_2 = D_2(E(x), P(Pt_2))`` with ``Pt_2`` from
    ``p_1``).  Outputs are at the unprompted logits' size, which is also the prompts' frame."""
    if len(unprompted_logits) != len(DECODERS):
        raise ValueError(f"cross_prompt: expected {len(DECODERS)} unprompted outputs, got {len(unprompted_logits)}")
    output_size = tuple(unprompted_logits[0].shape[-2:])
    prompts = [prompts_from_logits(logits, sam.num_classes, generator) for logits in unprompted_logits]
    return [
        {name: decode_prompted(sam, image_embeddings, decoder, prompts[other_decoder(decoder)], recipe,
                               output_size, generator)
         for name, recipe in recipes.items()}
        for decoder in DECODERS
    ]


def ensemble_probs(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of the softmax probabilities of several outputs (CPC-SAM §2.3 ``p_hat = 1/2 (p_r + p_c)``)."""
    return torch.stack([torch.softmax(output.float(), dim=1) for output in logits]).mean(dim=0)


def ensemble_pseudo_labels(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Hard pseudo-labels ``[B, H, W]``: argmax of the detached ensemble (official CPC-SAM
    ``trainer_dualmask.py``: ``argmax((softmax(p_c) + softmax(p_r)) / 2).detach()``).  A target, so
    no gradient reaches the outputs it was built from."""
    return ensemble_probs([output.detach() for output in logits]).argmax(dim=1)


def ensemble_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``log`` of :func:`ensemble_probs`: logits whose softmax and argmax are the ensemble's."""
    return torch.log(ensemble_probs(logits).clamp_min(PROBABILITY_FLOOR))


def dual_decoder_prediction(sam: AdaptedSAM, images: torch.Tensor) -> torch.Tensor:
    """Test-time output of both papers: each decoder unprompted (the learned default dense
    embedding), softmax probabilities averaged (CPC-SAM §3 "the ensemble results of two branches";
    ``utils.py test_single_volume_mean``; InteractMatch §3.4 "Inference"), at the images' size."""
    image_embeddings = sam.embed(images)
    output_size = tuple(images.shape[-2:])
    return ensemble_logits([sam.decode(image_embeddings, decoder, output_size=output_size) for decoder in DECODERS])


def pseudo_label_loss(logits: torch.Tensor, pseudo_labels: torch.Tensor) -> torch.Tensor:
    """``1/2 [L_dice + L_ce]`` of ``logits`` against hard pseudo-labels, the bracket of CPC-SAM Eq. 1-2
    and InteractMatch Eq. 1 and 7 (official code: ``0.5 * (ce_loss(...) + dice_loss(...))``)."""
    return ce_dice_loss(logits, pseudo_labels, ce_weight=0.5, dice_weight=0.5)


def pixelwise_kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``1/(W H) sum_i KL(q_i^T || q_i^S)`` averaged over the batch: the pixel-wise distillation of
    Liu et al. (CVPR 2019) that InteractMatch Eq. 3 follows.  The teacher's class distribution is the
    target and is detached, so only the student moves (distillation is one-way, InteractMatch §3.3).
    Eq. 3 writes ``KL(q^2 || q^1)`` in [23]'s notation, whose code takes the teacher's softmax as the
    target (cross-entropy ``-sum q^T log q^S``, which has this KL's gradient).  That code
    (``CriterionPixelWise``) sums over the batch and divides by ``W H`` only; Eq. 3 is written per
    image, and the mean over the batch here keeps the loss's scale independent of the batch size (the
    code's would be ``N`` times larger at ``N`` images per batch)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"pixelwise_kl_divergence: student {tuple(student_logits.shape)} and teacher "
                         f"{tuple(teacher_logits.shape)} logits differ in shape")
    student_log_probs = F.log_softmax(student_logits.float(), dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach().float(), dim=1)
    per_pixel = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=1)
    return per_pixel.mean()
