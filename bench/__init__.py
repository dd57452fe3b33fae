"""Benchmark harness for semi-supervised medical image segmentation.

This module is the public API that methods in ``baselines/``, ``methods/`` and third-party plug-ins
import; nothing else in ``bench`` is promised to stay put.
"""
from __future__ import annotations

from bench.data.adapter import DatasetAdapter, TrainingSlice
from bench.data.case import Case
from bench.losses import ce_dice_loss, dice_loss, masked_cross_entropy
from bench.method import (
    VIEWS,
    Batch,
    Method,
    NoParams,
    OptimizerSpec,
    Progress,
    StepOutput,
    TaskSpec,
    poly_decay,
)
from bench.networks import DeepSupervisionUNet, MultiDecoderUNet, UNet, UNetConfig, count_parameters
from bench.registry import (
    DATASET_ENTRY_POINT_GROUP,
    METHOD_ENTRY_POINT_GROUP,
    register_dataset,
    register_method,
)


def unet_for(task: TaskSpec, **overrides) -> UNet:
    """The default backbone for a task (SSL4MIS U-Net; widths from the budget)."""
    return UNet(UNetConfig(in_channels=task.in_channels, num_classes=task.num_classes,
                           widths=task.network_widths, **overrides))


__all__ = [
    "VIEWS", "Batch", "Case", "DATASET_ENTRY_POINT_GROUP", "DatasetAdapter", "DeepSupervisionUNet",
    "METHOD_ENTRY_POINT_GROUP", "Method", "MultiDecoderUNet", "NoParams", "OptimizerSpec", "Progress",
    "StepOutput", "TaskSpec", "TrainingSlice", "UNet", "UNetConfig", "ce_dice_loss", "count_parameters",
    "dice_loss", "masked_cross_entropy", "poly_decay", "register_dataset", "register_method", "unet_for",
]

# The Laine & Aila sigmoid ramp-up, for schedules other than SSL4MIS' consistency staircase (UA-MT's threshold).
from bench.schedules import sigmoid_rampup  # noqa: E402

__all__ += ["sigmoid_rampup"]

# Mean-teacher family and co-training (Mean Teacher, UA-MT, CPS): EMA teachers, teacher perturbation,
# consistency distances, Monte-Carlo uncertainty and the re-initialisation that makes two networks differ.
from bench.consistency import (  # noqa: E402
    add_clipped_gaussian_noise,
    cross_entropy_to_argmax,
    masked_consistency,
    monte_carlo_probs,
    predictive_entropy,
    softmax_mse,
    ssl4mis_consistency_weight,
)
from bench.ema import ema_update, make_teacher  # noqa: E402
from bench.networks import init_weights  # noqa: E402

__all__ += [
    "add_clipped_gaussian_noise", "cross_entropy_to_argmax", "ema_update", "init_weights", "make_teacher",
    "masked_consistency", "monte_carlo_probs", "predictive_entropy", "softmax_mse", "ssl4mis_consistency_weight",
]

# Weak-to-strong and copy-paste methods (FixMatch, UniMatch, BCP): CutMix boxes, BCP's copy-paste mask,
# mixing images and pseudo-labels with one mask, confidence masks, largest-component filtering.
from bench.mixing import (  # noqa: E402
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

__all__ += [
    "PseudoLabels", "batch_partner", "confidence_mask", "confident_dice_loss", "copy_paste_mask", "cutmix_boxes",
    "cutmix_from_partner", "largest_component_per_class", "mix_by_mask",
]
