"""2D V-Net: the second, structurally different sub-network of two-network co-training methods.

KnowSAM (Huang et al. 2024, §IV-B) trains a U-Net and a V-Net (Milletari et al. 2016) side by side;
its official code (taozh2017/KnowSAM ``Model/model.py``) uses the 2D V-Net of MC-Net
(ycwu1997/MC-Net ``networks/VNet.py``) with ``Conv2d`` layers.  What makes it differ from the
SSL4MIS U-Net, and therefore worth co-training with:

* **Stages of plain convolutions.**  Every resolution level is a stack of ``n`` (3x3 conv ->
  optional norm -> ReLU) stages, ``n = 1, 2, 3, 3, 3`` from the finest level down (V-Net's 1-2-3-3-3
  stages), mirrored in the decoder; the U-Net has two conv-BN-LeakyReLU layers with dropout per level.
* **Learned resampling.**  Down-sampling is a 2x2 stride-2 convolution and up-sampling a 2x2 stride-2
  transposed convolution (U-Net: max-pooling, then bilinear or transposed up-sampling).
* **Additive skips.**  The up-sampled decoder map is *added* to the encoder map of the same
  resolution (U-Net: concatenated), then refined by that level's stages; a 1x1 convolution gives the
  logits (U-Net: 3x3).

``normalization`` defaults to ``"none"``: KnowSAM builds ``VNet(n_channels, n_classes)`` without a
normalisation argument, and the V-Net's default is none; MC-Net's 3D runs pass ``"batchnorm"``.  Weights
are Kaiming-normal initialised, BatchNorm to (1, 0), as both codes' ``__init_weight``.

Skip wiring follows V-Net and MC-Net (the skip of a level is the output of its stages, before the
down-sampling convolution).  KnowSAM's own ``forward`` takes the down-sampling output of the level
above instead (same resolution and width, one level's stages earlier); the difference is a detail of
that script, not of the architecture the paper names.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

VNET_NORMALIZATIONS: tuple[str, ...] = ("none", "batchnorm", "instancenorm")
MAX_STAGES_PER_LEVEL = 3
"""V-Net: 1, 2, then 3 convolution stages per level from the finest level down."""


def _norm(kind: str, channels: int) -> list[nn.Module]:
    if kind == "batchnorm":
        return [nn.BatchNorm2d(channels)]
    if kind == "instancenorm":
        return [nn.InstanceNorm2d(channels)]
    return []


@dataclass(frozen=True)
class VNet2DConfig:
    """``widths`` are the channels per level (the U-Net's widths, 16-32-64-128-256 by default), so the
    input's H and W must be multiples of ``2 ** (len(widths) - 1)``."""

    in_channels: int = 1
    num_classes: int = 4
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    normalization: str = "none"

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.num_classes < 1:
            raise ValueError(f"VNet2DConfig: in_channels and num_classes must be >= 1, "
                             f"got {self.in_channels}, {self.num_classes}")
        if len(self.widths) < 2 or any(width < 1 for width in self.widths):
            raise ValueError(f"VNet2DConfig.widths: need at least 2 positive widths, got {self.widths}")
        if self.normalization not in VNET_NORMALIZATIONS:
            raise ValueError(f"VNet2DConfig.normalization {self.normalization!r}: "
                             f"expected one of {VNET_NORMALIZATIONS}")

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def stages(self, level: int) -> int:
        return min(level + 1, MAX_STAGES_PER_LEVEL)


class VNetStages(nn.Module):
    """``stages`` x (3x3 conv -> norm -> ReLU); the first stage maps ``in_channels`` to ``out_channels``."""

    def __init__(self, stages: int, in_channels: int, out_channels: int, normalization: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for stage in range(stages):
            stage_in = in_channels if stage == 0 else out_channels
            layers.append(nn.Conv2d(stage_in, out_channels, kernel_size=3, padding=1))
            layers.extend(_norm(normalization, out_channels))
            layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _resample(transposed: bool, in_channels: int, out_channels: int, normalization: str) -> nn.Sequential:
    """2x2 stride-2 (transposed) convolution -> norm -> ReLU (``DownsamplingConvBlock``/``UpsamplingDeconvBlock``)."""
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    return nn.Sequential(conv(in_channels, out_channels, kernel_size=2, stride=2), *_norm(normalization, out_channels),
                         nn.ReLU(inplace=True))


class VNet2D(nn.Module):
    """Logits ``[B, num_classes, H, W]`` of a 2D V-Net (module docstring)."""

    def __init__(self, config: VNet2DConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else VNet2DConfig()
        widths, norm = self.config.widths, self.config.normalization
        depth = len(widths)
        stage_inputs = (self.config.in_channels, *widths[1:])
        self.encoder_stages = nn.ModuleList(
            VNetStages(self.config.stages(level), stage_inputs[level], widths[level], norm) for level in range(depth)
        )
        self.downs = nn.ModuleList(
            _resample(False, widths[level], widths[level + 1], norm) for level in range(depth - 1)
        )
        # Decoder, deepest to finest: up-sample level l+1 to level l, add the skip, refine with level l's stages.
        decoder_levels = list(reversed(range(depth - 1)))
        self.ups = nn.ModuleList(_resample(True, widths[level + 1], widths[level], norm) for level in decoder_levels)
        self.decoder_stages = nn.ModuleList(
            VNetStages(self.config.stages(level), widths[level], widths[level], norm) for level in decoder_levels
        )
        self.out_conv = nn.Conv2d(widths[0], self.config.num_classes, kernel_size=1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"VNet2D: expected [B, {self.config.in_channels}, H, W], got {tuple(x.shape)}")
        multiple = self.config.size_multiple
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"VNet2D: H and W of {tuple(x.shape)} must be multiples of {multiple}")

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Encoder maps, finest to deepest (the skips, then the bottleneck)."""
        self.check_input(x)
        features = [self.encoder_stages[0](x)]
        for down, stages in zip(self.downs, self.encoder_stages[1:]):
            features.append(stages(down(features[-1])))
        return features

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        x = features[-1]
        for index, (up, stages) in enumerate(zip(self.ups, self.decoder_stages)):
            x = stages(up(x) + features[-2 - index])
        return self.out_conv(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.forward_features(x))
