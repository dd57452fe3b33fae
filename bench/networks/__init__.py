"""Segmentation backbones for the benchmark (SSL4MIS 2D U-Net and its SSL variants)."""

from __future__ import annotations

from bench.networks.unet import (
    MCNET_UPSAMPLE_MODES,
    SSL4MIS_DROPOUT,
    UPSAMPLE_MODES,
    URPC_AUX_PERTURBATIONS,
    ConvBlock,
    DeepSupervisionUNet,
    DownBlock,
    FeatureNoise,
    MultiDecoderUNet,
    UNet,
    UNetConfig,
    UNetDecoder,
    UNetEncoder,
    UpBlock,
    count_parameters,
    dropout_disabled,
    feature_dropout,
    init_weights,
)

__all__ = [
    "MCNET_UPSAMPLE_MODES",
    "SSL4MIS_DROPOUT",
    "UPSAMPLE_MODES",
    "URPC_AUX_PERTURBATIONS",
    "ConvBlock",
    "DeepSupervisionUNet",
    "DownBlock",
    "FeatureNoise",
    "MultiDecoderUNet",
    "UNet",
    "UNetConfig",
    "UNetDecoder",
    "UNetEncoder",
    "UpBlock",
    "count_parameters",
    "dropout_disabled",
    "feature_dropout",
    "init_weights",
]

# KnowSAM's second sub-network: a 2D V-Net (MC-Net's layout), structurally different from the U-Net.
from bench.networks.vnet2d import VNET_NORMALIZATIONS, VNet2D, VNet2DConfig  # noqa: E402

__all__ += ["VNET_NORMALIZATIONS", "VNet2D", "VNet2DConfig"]
