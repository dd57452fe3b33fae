"""2D U-Net backbone shared by the semi-supervised segmentation baselines.

The default configuration reproduces the 2D U-Net of SSL4MIS
(HiLab-git/SSL4MIS, ``code/networks/unet.py``, itself derived from PyMIC),
which is the backbone behind most published ACDC / PROMISE12 numbers for
MT, UA-MT, CPS, CCT, URPC, MC-Net+ and UniMatch. Matching it layer for layer
(widths 16-32-64-128-256, encoder dropout 0.05-0.5, 1x1 conv + bilinear x2
up-sampling, 3x3 output conv) is what makes results comparable with those
papers; the parameter count for ``in_channels=1, num_classes=4`` is
1,813,764 (the "1.81M" reported in SSL4MIS).

Initialisation: SSL4MIS' ``UNet`` keeps PyTorch's default initialisation;
only some training scripts (e.g. cross pseudo supervision) re-initialise the
two networks with Kaiming / Xavier normal. The modules here therefore keep the
defaults, and :func:`init_weights` offers the script-level re-initialisation
for methods that need it.

Variants:

* :class:`MultiDecoderUNet` -- one encoder, several decoders that differ only
  in their up-sampling operator (MC-Net+, Wu et al. 2022, ``MCNet2d_v2``:
  bilinear, transposed convolution, nearest).
* :class:`DeepSupervisionUNet` -- URPC (Luo et al. 2022) multi-scale heads
  with perturbed auxiliary inputs (SSL4MIS ``UNet_URDS``).
* ``UNet.forward(x, feature_perturbation=True)`` -- UniMatch (Yang et al.
  2023) feature perturbation (``more-scenarios/medical/model/unet.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

SSL4MIS_DROPOUT: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
UPSAMPLE_MODES: tuple[str, ...] = ("bilinear", "nearest", "transpose")
MCNET_UPSAMPLE_MODES: tuple[str, ...] = ("bilinear", "transpose", "nearest")
UNIMATCH_FP_DROPOUT = 0.5
URPC_AUX_PERTURBATIONS: tuple[str, ...] = ("dropout", "feature_dropout", "feature_noise")


def _check_upsample(mode: str) -> str:
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of the SSL4MIS-style 2D U-Net.

    ``widths`` sets the depth: ``len(widths)`` encoder levels and
    ``len(widths) - 1`` up-sampling steps, so inputs must have H and W
    divisible by ``2 ** (len(widths) - 1)``.

    ``dropout`` is the per-level encoder dropout. ``None`` means the SSL4MIS
    schedule ``(0.05, 0.1, 0.2, 0.3, 0.5)``: truncated to the first
    ``len(widths)`` values for shallower nets, padded with 0.5 for deeper ones
    (see :meth:`encoder_dropout`). Decoder blocks use no dropout, as in SSL4MIS.

    ``upsample`` selects the decoder up-sampling operator:

    * ``"bilinear"`` -- 1x1 conv to the skip width, then bilinear x2 with
      ``align_corners=True`` (SSL4MIS ``UNet``, ``bilinear=True``).
    * ``"nearest"`` -- 1x1 conv, then nearest x2 (MC-Net+ ``up_type=2``).
    * ``"transpose"`` -- 2x2 stride-2 transposed conv (SSL4MIS
      ``bilinear=False``, MC-Net+ ``up_type=0``).
    """

    in_channels: int = 1
    num_classes: int = 4
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropout: tuple[float, ...] | None = None
    upsample: str = "bilinear"

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.num_classes < 1:
            raise ValueError(
                f"in_channels and num_classes must be >= 1, got "
                f"{self.in_channels} and {self.num_classes}"
            )
        if len(self.widths) < 2:
            raise ValueError(f"widths needs at least 2 levels, got {self.widths}")
        if any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive, got {self.widths}")
        if self.dropout is not None:
            if len(self.dropout) != len(self.widths):
                raise ValueError(
                    f"dropout has {len(self.dropout)} entries but widths has "
                    f"{len(self.widths)} levels"
                )
            if any(not 0.0 <= p <= 1.0 for p in self.dropout):
                raise ValueError(f"dropout values must lie in [0, 1], got {self.dropout}")
        _check_upsample(self.upsample)

    @property
    def depth(self) -> int:
        """Number of encoder levels."""
        return len(self.widths)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return 2 ** (self.depth - 1)

    def encoder_dropout(self) -> tuple[float, ...]:
        """Per-level encoder dropout, resolving ``None`` to the SSL4MIS schedule."""
        if self.dropout is not None:
            return tuple(self.dropout)
        extra = max(0, self.depth - len(SSL4MIS_DROPOUT))
        return (SSL4MIS_DROPOUT + (SSL4MIS_DROPOUT[-1],) * extra)[: self.depth]


class ConvBlock(nn.Module):
    """(Conv3x3-BN-LeakyReLU) -> Dropout -> (Conv3x3-BN-LeakyReLU), as in SSL4MIS/PyMIC.

    The dropout sits between the two convolutions and is element-wise
    ``nn.Dropout`` (not ``Dropout2d``), which is what SSL4MIS uses.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout_p: float) -> None:
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout_p),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_conv(x)


class DownBlock(nn.Module):
    """MaxPool2d(2) followed by a :class:`ConvBlock` (one encoder level)."""

    def __init__(self, in_channels: int, out_channels: int, dropout_p: float) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(
            nn.MaxPool2d(2), ConvBlock(in_channels, out_channels, dropout_p)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool_conv(x)


class UpBlock(nn.Module):
    """Up-sample the deeper map x2, concatenate ``[skip, up]`` and fuse with a ConvBlock.

    For the interpolating modes a 1x1 conv first reduces the deeper map to the
    skip width (SSL4MIS ``bilinear=True`` path, MC-Net+ ``up_type`` 1/2); the
    transposed conv does the reduction itself (SSL4MIS ``bilinear=False``,
    MC-Net+ ``up_type=0``). Concatenation order (skip first) follows SSL4MIS.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        dropout_p: float = 0.0,
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        self.mode = _check_upsample(upsample)
        self.conv1x1: nn.Module | None
        self.up: nn.Module
        if upsample == "transpose":
            self.conv1x1 = None
            self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        else:
            self.conv1x1 = nn.Conv2d(in_channels, skip_channels, kernel_size=1)
            if upsample == "bilinear":
                self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            else:
                self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = ConvBlock(skip_channels * 2, out_channels, dropout_p)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if self.conv1x1 is not None:
            x = self.conv1x1(x)
        x = self.up(x)
        return self.conv(torch.cat([skip, x], dim=1))


@contextmanager
def dropout_disabled(module: nn.Module) -> Iterator[None]:
    """Run ``module`` with its ``nn.Dropout`` layers in eval mode and everything else (BatchNorm's batch
    statistics included) as it is, then restore each layer's mode.

    For a method ported from code whose network has no dropout (SynFoC's Milesial U-Net), so that a
    no-gradient prediction made for a pseudo-label or a stability score carries no dropout noise that
    the official network never had.
    """
    layers = [layer for layer in module.modules() if isinstance(layer, nn.modules.dropout._DropoutNd)]
    modes = [layer.training for layer in layers]
    for layer in layers:
        layer.eval()
    try:
        yield
    finally:
        for layer, mode in zip(layers, modes):
            layer.train(mode)


def feature_dropout(x: Tensor) -> Tensor:
    """URPC / CCT attention-based feature dropout.

    Zeroes the spatial positions whose channel-mean activation is at least a
    random fraction in [0.7, 0.9) of the per-sample maximum, i.e. hides the
    most salient region. SSL4MIS draws the fraction with ``np.random``; here it
    comes from ``torch.rand`` so that ``torch.manual_seed`` alone controls it.
    """
    attention = x.mean(dim=1, keepdim=True)
    max_val = attention.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
    fraction = 0.7 + 0.2 * torch.rand((), device=x.device, dtype=x.dtype)
    mask = (attention < max_val * fraction).to(x.dtype)
    return x * mask


class FeatureNoise(nn.Module):
    """URPC / CCT multiplicative uniform feature noise: ``x + x * U(-r, r)``.

    As in SSL4MIS, one noise tensor of shape ``x.shape[1:]`` is shared by the
    whole batch. The noise is applied whenever the module is called; callers
    decide whether to call it (URPC only does so in training mode).
    """

    def __init__(self, uniform_range: float = 0.3) -> None:
        super().__init__()
        self.uniform_range = uniform_range

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.rand(x.shape[1:], device=x.device, dtype=x.dtype)
        noise = (noise * 2.0 - 1.0) * self.uniform_range
        return x + x * noise.unsqueeze(0)


def _urpc_perturb(kind: str, x: Tensor, noise: FeatureNoise) -> Tensor:
    if kind == "dropout":
        return F.dropout2d(x, p=0.5, training=True)
    if kind == "feature_dropout":
        return feature_dropout(x)
    return noise(x)



class UNetEncoder(nn.Module):
    """SSL4MIS encoder: input ConvBlock, then ``depth - 1`` MaxPool + ConvBlock levels.

    Returns the feature maps of every level, shallow (full resolution) to deep.
    It also validates the input shape, because a size that is not a multiple of
    ``2 ** (depth - 1)`` would otherwise fail later with an opaque
    concatenation error in the decoder.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        dropout = config.encoder_dropout()
        self.in_conv = ConvBlock(config.in_channels, widths[0], dropout[0])
        self.downs = nn.ModuleList(
            DownBlock(widths[i - 1], widths[i], dropout[i]) for i in range(1, len(widths))
        )

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[B, in_channels, H, W]`` with valid H, W."""
        cfg = self.config
        if x.dim() != 4:
            raise ValueError(f"expected a 4D input [B, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"expected {cfg.in_channels} input channels, got shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        m = cfg.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"input shape {tuple(x.shape)}: H and W must be divisible by "
                f"2**(depth-1) = {m} for a U-Net with {cfg.depth} levels"
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        self.check_input(x)
        features = [self.in_conv(x)]
        for down in self.downs:
            features.append(down(features[-1]))
        return features


class UNetDecoder(nn.Module):
    """SSL4MIS decoder: ``depth - 1`` UpBlocks (dropout 0) and a 3x3 output conv.

    ``upsample`` overrides ``config.upsample`` so that several decoders with
    different operators can share one config (MC-Net+).

    With ``deep_supervision=True`` the decoder follows URPC (SSL4MIS
    ``Decoder_URDS``): every UpBlock except the last also feeds a 3x3 conv
    auxiliary head, and ``forward`` returns ``len(widths) - 1`` logits tensors,
    **main (finest) output first, then auxiliary heads from finest to
    coarsest** -- the order URPC returns ``(dp0, dp1, dp2, dp3)``. Auxiliary
    logits are resized to the input resolution with nearest interpolation
    (``F.interpolate`` default, as in URPC). In training mode the auxiliary
    head inputs are perturbed as URPC does, cycling from the coarsest head
    through ``URPC_AUX_PERTURBATIONS``: channel dropout (``dropout2d``,
    p=0.5), attention feature dropout, uniform feature noise. With the
    default 5 levels this is exactly URPC's assignment. The main path is never
    perturbed, and nothing is perturbed in eval mode. SSL4MIS also builds an
    ``out_conv_dp4`` head that is never used; it is omitted here so that every
    parameter receives a gradient.
    """

    def __init__(
        self,
        config: UNetConfig,
        upsample: str | None = None,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.upsample = _check_upsample(upsample if upsample is not None else config.upsample)
        self.deep_supervision = deep_supervision
        widths = config.widths
        self.ups = nn.ModuleList(
            UpBlock(widths[i], widths[i - 1], widths[i - 1], 0.0, self.upsample)
            for i in range(len(widths) - 1, 0, -1)
        )
        self.out_conv = nn.Conv2d(widths[0], config.num_classes, kernel_size=3, padding=1)
        self.aux_heads: nn.ModuleList | None = None
        self.feature_noise: FeatureNoise | None = None
        if deep_supervision:
            self.aux_heads = nn.ModuleList(
                nn.Conv2d(widths[i - 1], config.num_classes, kernel_size=3, padding=1)
                for i in range(len(widths) - 1, 1, -1)
            )
            self.feature_noise = FeatureNoise()

    def forward(self, features: Sequence[Tensor]) -> Tensor | list[Tensor]:
        if len(features) != self.config.depth:
            raise ValueError(
                f"expected {self.config.depth} feature maps, got {len(features)}"
            )
        size = features[0].shape[-2:]
        x = features[-1]
        aux: list[Tensor] = []
        for i, up in enumerate(self.ups):
            x = up(x, features[-2 - i])
            if self.aux_heads is not None and i < len(self.aux_heads):
                head_in = x
                if self.training:
                    assert self.feature_noise is not None
                    kind = URPC_AUX_PERTURBATIONS[i % len(URPC_AUX_PERTURBATIONS)]
                    head_in = _urpc_perturb(kind, x, self.feature_noise)
                aux.append(F.interpolate(self.aux_heads[i](head_in), size=size))
        out = self.out_conv(x)
        if self.aux_heads is None:
            return out
        return [out, *reversed(aux)]


class UNet(nn.Module):
    """SSL4MIS 2D U-Net (encoder + one decoder).

    ``forward(x, feature_perturbation=True)`` implements UniMatch's feature
    perturbation: the decoder runs once on the batch-concatenation of the clean
    features and ``dropout2d(p=0.5)`` of every encoder feature, and the result
    is split into ``(logits_clean, logits_perturbed)``. Concatenating means
    BatchNorm (in training mode) sees both halves, exactly as in UniMatch.
    UniMatch builds a fresh ``nn.Dropout2d(0.5)`` inside ``forward``; a fresh
    module is in training mode, so its dropout is active even when the U-Net is
    in eval mode. This implementation keeps that behaviour (the perturbation is
    always applied when requested); UniMatch only requests it during training.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else UNetConfig()
        self.encoder = UNetEncoder(self.config)
        self.decoder = UNetDecoder(self.config)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Encoder feature maps, shallow to deep."""
        return self.encoder(x)

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        """Logits ``[B, num_classes, H, W]`` from encoder features."""
        out = self.decoder(features)
        assert isinstance(out, Tensor)
        return out

    def forward(
        self, x: Tensor, feature_perturbation: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        features = self.encoder(x)
        if not feature_perturbation:
            return self.decode(features)
        mixed = [
            torch.cat([f, F.dropout2d(f, p=UNIMATCH_FP_DROPOUT, training=True)])
            for f in features
        ]
        clean, perturbed = self.decode(mixed).chunk(2)
        return clean, perturbed


class MultiDecoderUNet(nn.Module):
    """Shared encoder with one decoder per up-sampling mode (MC-Net+).

    MC-Net+ (``MCNet2d_v2``) uses three decoders -- bilinear, transposed conv,
    nearest -- whose architectural differences make their predictions
    disagree on ambiguous regions, which the method then penalises.
    ``forward`` returns one logits tensor per decoder, in ``upsample_modes``
    order.
    """

    def __init__(
        self,
        config: UNetConfig | None = None,
        upsample_modes: Sequence[str] = MCNET_UPSAMPLE_MODES,
    ) -> None:
        super().__init__()
        if len(upsample_modes) < 1:
            raise ValueError("upsample_modes must name at least one decoder")
        self.config = config if config is not None else UNetConfig()
        self.upsample_modes = tuple(_check_upsample(m) for m in upsample_modes)
        self.encoder = UNetEncoder(self.config)
        self.decoders = nn.ModuleList(
            UNetDecoder(self.config, upsample=m) for m in self.upsample_modes
        )

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Shared encoder feature maps, shallow to deep."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.encoder(x)
        return [decoder(features) for decoder in self.decoders]


class DeepSupervisionUNet(nn.Module):
    """URPC U-Net with multi-scale heads (SSL4MIS ``UNet_URDS``).

    ``forward`` returns ``len(widths) - 1`` logits tensors at input resolution:
    the main output first, then the auxiliary heads from finest to coarsest
    (4 tensors for the default 5-level net). See :class:`UNetDecoder` for the
    training-mode perturbations of the auxiliary inputs.

    ``upsample`` defaults to ``config.upsample`` (bilinear), so the backbone is
    the same as every other method in the benchmark. SSL4MIS' ``UNet_URDS``
    in fact ends up with transposed convolutions (its ``UpBlock`` default);
    pass ``upsample="transpose"`` to reproduce that exactly.
    """

    def __init__(self, config: UNetConfig | None = None, upsample: str | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else UNetConfig()
        self.encoder = UNetEncoder(self.config)
        self.decoder = UNetDecoder(self.config, upsample=upsample, deep_supervision=True)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Encoder feature maps, shallow to deep."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = self.decoder(self.encoder(x))
        assert isinstance(out, list)
        return out


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (optionally only trainable) parameters; shared tensors count once."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def init_weights(module: nn.Module, scheme: str = "kaiming") -> nn.Module:
    """Re-initialise conv weights as SSL4MIS' CPS script does, in place.

    ``"kaiming"`` / ``"xavier"`` apply ``kaiming_normal_`` / ``xavier_normal_``
    to every ``nn.Conv2d`` weight (not ``ConvTranspose2d``, which is not a
    ``Conv2d`` subclass) and reset BatchNorm to weight 1, bias 0
    (``kaiming_normal_init_weight`` / ``xavier_normal_init_weight`` in
    ``train_cross_pseudo_supervision_2D.py``), which CPS uses to make its two
    networks start differently. Conv biases keep their default values.
    """
    if scheme not in ("kaiming", "xavier"):
        raise ValueError(f"scheme must be 'kaiming' or 'xavier', got {scheme!r}")
    init = nn.init.kaiming_normal_ if scheme == "kaiming" else nn.init.xavier_normal_
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            init(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
