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
