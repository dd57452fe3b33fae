"""Small constructors of the public API that sit on top of two other modules."""
from __future__ import annotations

from bench.method import Method, TaskSpec
from bench.networks import UNet, UNetConfig
from bench.registry import METHODS


def unet_for(task: TaskSpec, **overrides) -> UNet:
    """The default backbone for a task (SSL4MIS U-Net; widths from the budget)."""
    return UNet(UNetConfig(in_channels=task.in_channels, num_classes=task.num_classes,
                           widths=task.network_widths, **overrides))


def method_class(name: str) -> type[Method]:
    """The method registered as ``name``, loading only its own entry point: for a method built on
    another one (SemiSAM composes a baseline) at import time."""
    return METHODS.load(name)
