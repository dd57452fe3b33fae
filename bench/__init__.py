"""Benchmark harness for semi-supervised medical image segmentation.

This module is the public API that methods in ``baselines/``, ``methods/`` and third-party plug-ins
import; nothing else in ``bench`` is promised to stay put.  Shared mechanics live here once, grouped
by the family of methods that first needed them.
"""
from __future__ import annotations

# The plug-in contract, registries and data types.
from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.case import Case
from bench.method import (
    GROUND_TRUTH_PROMPTS,
    RANDOM_INIT_SAM,
    VIEWS,
    Batch,
    Method,
    NoParams,
    OptimizerSpec,
    Progress,
    StepOutput,
    TaskSpec,
    constant_rate,
    poly_decay,
)
from bench.registry import (
    DATASET_ENTRY_POINT_GROUP,
    METHOD_ENTRY_POINT_GROUP,
    METHODS,
    register_dataset,
    register_method,
)

# Networks, losses, schedules, resizing.
from bench.data.resize import resize_image, resize_labels
from bench.losses import ce_dice_loss, dice_loss, masked_cross_entropy
from bench.networks import (
    ConvBlock,
    DeepSupervisionUNet,
    DownBlock,
    MultiDecoderUNet,
    UNet,
    UNetConfig,
    VNet2D,
    VNet2DConfig,
    count_parameters,
    dropout_disabled,
    init_weights,
)
from bench.schedules import exponential_rampdown, sigmoid_rampup

# Mean-teacher family and co-training (Mean Teacher, UA-MT, CPS, URPC, MC-Net+): EMA teachers, teacher
# perturbation, consistency distances, Monte-Carlo uncertainty, SSL4MIS ramp-ups.
from bench.consistency import (
    add_clipped_gaussian_noise,
    cross_entropy_to_argmax,
    masked_consistency,
    monte_carlo_probs,
    predictive_entropy,
    schedule_scaled,
    softmax_mse,
    ssl4mis_consistency_weight,
)
from bench.ema import ema_update, make_teacher

# Weak-to-strong and copy-paste methods (FixMatch, UniMatch, BCP, SynFoC, KnowSAM): CutMix boxes, BCP's
# copy-paste mask, mixing images and pseudo-labels with one mask, confidence masks, largest components.
from bench.mixing import (
    PseudoLabels,
    batch_partner,
    confidence_mask,
    confident_dice_loss,
    copy_paste_mask,
    cutmix_boxes,
    cutmix_from_partner,
    largest_component_per_class,
    mix_by_mask,
)

# SAM: the adapted multi-class SAM with LoRA/adapters, SAMed's optimiser, prompts from masks.
from bench.prompts import (
    ClassPrompts,
    center_point,
    jitter_boxes,
    largest_component,
    mask_prompt_logits,
    prompts_from_labels,
    random_point,
    tight_box,
)
from bench.sam import (
    AdaptedSAM,
    EmbeddingStore,
    SAMOptions,
    count_trainable,
    sam_for,
    sam_optimizer,
    warmup_poly_schedule,
)

# Dual-decoder SAM (CPC-SAM, InteractMatch): decoders prompting each other, ensembles, distillation.
from bench.dual_sam import (
    PromptRecipe,
    cross_prompt,
    decode_prompted,
    dual_decoder_prediction,
    dual_decoder_sam,
    ensemble_logits,
    ensemble_probs,
    ensemble_pseudo_labels,
    other_decoder,
    pixelwise_kl_divergence,
    prompts_from_logits,
    pseudo_label_loss,
)

# SemiSAM: maps between the un-augmented (``plain``) frame and the augmented one.
from bench.geometry import Geometry, apply_geometry, invert_geometry


def unet_for(task: TaskSpec, **overrides) -> UNet:
    """The default backbone for a task (SSL4MIS U-Net; widths from the budget)."""
    return UNet(UNetConfig(in_channels=task.in_channels, num_classes=task.num_classes,
                           widths=task.network_widths, **overrides))


def method_class(name: str) -> type[Method]:
    """The method registered as ``name``, loading only its own entry point: for a method built on
    another one (SemiSAM composes a baseline) at import time."""
    return METHODS.load(name)


__all__ = [
    "AdaptedSAM", "Batch", "Case", "ClassPrompts", "ConvBlock", "DATASET_ENTRY_POINT_GROUP", "DatasetAdapter",
    "DeepSupervisionUNet", "DownBlock", "EmbeddingStore", "GROUND_TRUTH_PROMPTS", "Geometry",
    "METHOD_ENTRY_POINT_GROUP", "Method",
    "MultiDecoderUNet", "NoParams", "OptimizerSpec", "Progress", "PromptRecipe", "PseudoLabels", "RANDOM_INIT_SAM",
    "SAMOptions", "StepOutput", "TaskSpec", "TrainingSlice", "UNet", "UNetConfig", "VIEWS", "VNet2D", "VNet2DConfig",
    "add_clipped_gaussian_noise", "apply_geometry", "batch_partner", "ce_dice_loss", "center_point",
    "confidence_mask", "confident_dice_loss", "constant_rate", "copy_paste_mask", "count_parameters",
    "count_trainable", "cross_entropy_to_argmax", "cross_prompt", "cutmix_boxes", "cutmix_from_partner",
    "decode_prompted", "dice_loss", "dropout_disabled", "dual_decoder_prediction", "dual_decoder_sam", "ema_update",
    "ensemble_logits", "ensemble_probs", "ensemble_pseudo_labels", "exponential_rampdown", "init_weights",
    "invert_geometry", "jitter_boxes", "largest_component", "largest_component_per_class", "make_teacher",
    "mask_prompt_logits", "masked_consistency", "masked_cross_entropy", "method_class", "mix_by_mask",
    "monte_carlo_probs", "other_decoder", "pixelwise_kl_divergence", "poly_decay", "predictive_entropy",
    "prompts_from_labels", "prompts_from_logits", "pseudo_label_loss", "random_point", "register_dataset",
    "register_method", "resize_image", "resize_labels", "sam_for", "sam_optimizer", "schedule_scaled",
    "sigmoid_rampup", "softmax_mse", "ssl4mis_consistency_weight", "tight_box", "unet_for", "warmup_poly_schedule",
]
