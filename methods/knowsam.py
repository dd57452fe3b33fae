"""KnowSAM (Huang et al., "Learnable Prompting SAM-induced Knowledge Distillation for Semi-supervised
Medical Image Segmentation", arXiv 2412.13742, 2024): two different sub-networks co-train, an
adapter-tuned SAM prompted by them teaches both, and uncertain patches are copy-pasted between labeled
and unlabeled images.  The sections of §III, in the order ``training_step`` computes them:

* **Multi-view co-training (§III-A).**  A U-Net ``F_A`` and a V-Net ``F_B`` segment every image
  (``Y_a``, ``Y_b``).  The Hybrid Aggregation Module fuses them (Eq. 3) with their entropy maps
  ``H = -sum_c Y_c log Y_c`` (Eq. 1) and the dissimilarity map ``M = B(Y_a) xor B(Y_b)`` (Eq. 2) into
  ``Y_f``, supervised by the labels only (Eq. 4).  ``L_mut = CE(Y_a, Y_b) + CE(Y_b, Y_a)`` (Eq. 5)
  makes each sub-network the other's soft pseudo-label.
* **Learnable prompt (§III-B).**  A light decoder ``psi`` turns SAM's image embedding into prompt
  embeddings ``P_b = psi(Z)`` (Eq. 6); ``Y_f`` is SAM's mask prompt; SAM's decoder gives ``Y_s``
  (Eq. 7), supervised by the labels only (Eq. 8).  SAM's image encoder is tuned with adapters.
* **SAM-induced distillation (§III-C).**  ``L_kd = KL(Y_T^a, Y_T^s) + KL(Y_T^b, Y_T^s)`` between
  temperature-softened maps (Eq. 9-10); SAM's map is a target, so ``L_kd`` trains the sub-networks only.
* **Uncertainty-guided data augmentation (§III-D).**  Labeled images come weakly, unlabeled images
  strongly augmented (Eq. 11).  The entropy of ``Y_f`` is averaged over a 4 x 4 grid of N = 16 patches;
  the top 5 patches of each image are replaced by the same patches of an image from the other stream,
  with its label (ground truth for labeled images, SAM's argmax for unlabeled ones), and the mixed
  images are trained on like labeled ones.
* **Objective (§III-E).**  ``L_sup = SEG(Y_a) + SEG(Y_b) + L_fuse`` (Eq. 12, ``SEG = Dice + CE``),
  ``L_ent`` the mean entropy of both sub-networks (Eq. 13), ``L_total = L_sup + L_kd + lambda_e L_ent +
  lambda_m L_mut`` (Eq. 14) with ``lambda_e = 0.9`` and ``lambda_m(t) = beta exp(-5 (1 - t / t_max)^2)``,
  ``beta = 1`` (§IV-B); SAM's ``L_sam`` is added, its gradient reaching SAM and ``psi`` only.  At test
  time ``Y_f`` is the segmentation (§IV-B; the comparison with SemiSAM and CPC-SAM in §IV-E2 says
  instead that "the outputs from the UNet model are regarded as the segmentation maps", §IV-B's
  ``Y_f`` is used).

Details the paper leaves open, taken from the official code (taozh2017/KnowSAM ``trainer.py``,
``Model/model.py``, ``Model/prompt.py``, ``Model/discriminator.py``, ``train_semi_SAM_ACDC.py``):

* ``psi`` is one small decoder per class (two U-Net conv blocks with max-pooling, a 1x1 conv, global
  average pooling, an MLP) whose output is two prompt *tokens* per class, given to SAM's prompt encoder
  as box embeddings.  The paper calls them "dense prompts (embedding features)" but gives them the
  token shape ``B x N_b x L``; here they are sparse tokens (``AdaptedSAM.decode(sparse_prompt=...)``)
  and the mask prompt fills SAM's dense slot, as in the code.
* SAM decodes every class separately with SAM's own 4-token decoder (``multimask_output=False``: the
  single-mask token), prompted by that class's tokens and that class's channel of ``Y_f`` (detached);
  the per-class masks, stacked, are the class logits.  SAM and ``psi`` see labeled and unlabeled
  images; ``L_kd`` covers both, at the patch size (SAM's logits are resized bilinearly).
* HAM: each view passes two Conv-BN-LeakyReLU(0.2) layers (3x3 then 1x1; 16, 16 and 32 channels for
  the dissimilarity, entropy and prediction views, the latter from the sub-networks' logits), the
  64-channel concatenation two 3x3 CBLs, the last giving ``Y_f`` (Eq. 3's outer ``F_CBL``); these
  widths scale with the sub-networks' first width (16 in every budget but ``smoke``).  ``B`` is
  a 0.5 threshold on each class's probability.  The code feeds ``1 - M`` and ``1 - H``; a
  bias-free conv followed by BatchNorm cannot tell these from ``M`` and ``H`` but for the sign of its
  weights, so Eq. 3's ``M`` and ``H`` are used.
* ``L_mut`` is a soft cross-entropy against the other network's detached probabilities (the code's
  ``loss_diff1/2``: BCE against the detached other map; for two classes the same thing).
* ``L_kd``: the code's ``KDLoss(T=10)``, Hinton's ``T^2 KL(softmax(q_s / T) || softmax(q / T))`` per
  pixel, averaged over pixels.  §III-C gives no value of T, and Eq. 10 has no ``T^2`` factor: with
  T = 10 the code's term, used here, is 100 times the literal Eq. 10 next to ``L_sup`` (weight 1 in
  Eq. 14 for both).
* UGDA starts after 12,000 of the code's 50,000 iterations (24 % of training), pairs labeled image
  ``i`` with unlabeled image ``i``, and trains the mixed batch with ``SEG`` on both sub-networks and
  ``Y_f`` against the mixed labels, ``lambda_e`` times their entropy, and ``lambda_m`` times ``L_mut``
  plus a ``SEG`` of both sub-networks against ``argmax Y_f`` on the mixed unlabeled images.  No
  distillation on mixed images.  That last ``SEG`` departs from the text, which uses SAM's output as
  the only pseudo-label (§III-D) and says "there is no supervised loss for unlabeled data" (§III-E);
  the code's ``mix_up`` adds it, and so does this module.
* Optimisers: SGD (lr 0.01, momentum 0.9, weight decay 1e-4) for the sub-networks and HAM, Adam (lr
  1e-4) for SAM's trainable parameters and ``psi`` (§IV-B), both decayed as ``lr (1 - t / T)``.
* SAM's input: the [0, 1] image at 256 px (``--image_size 256``; the code feeds its image encoder the
  image as it comes, i.e. ``unit`` normalisation).

Where this module departs from the official code, and why:

* Patches pasted are the *most* uncertain, as §III-D and Fig. 3 say; the code's ``mix_up`` takes
  ``topk(..., largest=False)``, i.e. the five most certain ones.
* Eq. 12-14 are summed as written; the code averages the two sub-networks' losses (``(UNet_loss +
  VNet_loss) / 2 + fusion_loss``), halving every term but ``L_fuse``.  Eq. 13 is not normalised; the
  code divides the entropy by ``log 2`` whatever the number of classes.
* The code hard-codes two classes in its KD (``reshape(-1, 2)``, which on ACDC's four classes pairs
  unrelated channels); here the temperature softmax runs over all classes of a pixel.
* ``lambda_m`` follows §IV-B's smooth formula; the code evaluates it on a 200-step staircase.
* The adapters are added to SAM's image encoder (Medical SAM Adapter layout, ``sam_for(adaptation=
  "adapter")``); SAM's prompt encoder and mask decoder are fine-tuned in full, whereas the paper adds
  adapters to the decoder as well and freezes the rest.  The harness has no decoder adapters yet, and a
  frozen decoder could not learn from a random initialisation (tests, ``--sam-random-init``).
* Training length and batch are the benchmark's (SSL4MIS ACDC: 30k iterations, 12 + 12) rather than
  §IV-B's 50k; UGDA's start is a fraction of training, so it keeps its place in the schedule.
* SAM's ViT keeps its relative position embeddings (``use_rel_pos=True``, as SAM was trained); the
  code's ``build_sam.py`` builds the ViT with ``use_rel_pos=False`` and so drops the checkpoint's
  ``rel_pos`` tables.  (LiteMedSAM, the default backbone here, has no such tables.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench import (
    Batch,
    ConvBlock,
    DownBlock,
    Method,
    OptimizerSpec,
    Progress,
    StepOutput,
    TaskSpec,
    VNet2D,
    VNet2DConfig,
    ce_dice_loss,
    mix_by_mask,
    pixelwise_kl_divergence,
    poly_decay,
    predictive_entropy,
    register_method,
    sam_for,
    sigmoid_rampup,
    unet_for,
)

SINGLE_MASK_TOKEN = 0
"""SAM's decoder with ``multimask_output=False`` returns its first token's mask (official ``trainer.py``)."""
HAM_LEAKY_SLOPE = 0.2
"""``nn.LeakyReLU(0.2)`` in every CBL of the official ``Discriminator`` (the HAM)."""
HAM_VIEW_WIDTHS = {"dissimilarity": (16, 16), "entropy": (16, 16), "prediction": (16, 32)}
"""Official ``Discriminator``: ``ambiguous_conv`` C -> 16 -> 16, ``entmap_conv`` 2 -> 16 -> 16,
``logits_conv`` 2C -> 16 -> 32; the 64-channel concatenation feeds ``final_conv``."""
HAM_REFERENCE_WIDTH = 16
"""The sub-networks' first width the official HAM widths go with (SSL4MIS U-Net 16-32-64-128-256).
The HAM's widths scale with ``TaskSpec.network_widths[0]`` so that a budget that shrinks the
sub-networks (``smoke``) shrinks the HAM with them; every other budget gets the official widths."""
PROMPT_DECODER_DROPOUT = 0.1
"""Official ``box_decoder_embedding``: dropout 0.1 in its conv blocks and its MLP."""
PROMPT_MLP_EXPANSION = 2
"""Official MLP: ``D -> 4 D box_nums -> 2 D box_nums``, i.e. hidden width 2 D per output token."""


@dataclass
class KnowSAMParams:
    """Defaults: paper §IV-B where it gives a value, otherwise the official code (module docstring).

    ``subnet_lr``/``subnet_momentum``/``subnet_weight_decay`` -- §IV-B: SGD, lr 0.01, momentum 0.9,
    weight decay 1e-4 for the two sub-networks (and the HAM, which the code optimises with them).
    ``sam_lr`` -- §IV-B: Adam with lr 1e-4 for SAM (and ``psi``, ``Sam.super_prompt`` in the code).
    ``lr_decay_power`` -- ``trainer.py``: ``lr * (1 - iter / max_iterations)``, i.e. power 1.
    ``entropy_weight`` -- ``lambda_e = 0.9`` (§IV-B; ``0.9 *`` in ``trainer.py``).
    ``mutual_weight`` -- ``beta = 1`` of ``lambda_m(t)`` (§IV-B; ``consistency 0.1 * 10`` in ``trainer.py``).
    ``kd_temperature`` -- ``KDLoss(T=10)`` (``trainer.py``; §III-C names T without a value).
    ``patch_grid`` -- N = 16 patches (§III-D): a 4 x 4 grid (``mix_up(patch_size=4)``).
    ``patches_pasted`` -- the top five patches (§III-D; ``top_k=5``).
    ``copy_paste_start`` -- ``--mixed_iterations 12000`` of ``--max_iterations 50000``.
    ``binarization_threshold`` -- ``B`` of Eq. 2: ``Discriminator(..., thr=0.5)``.
    ``prompt_tokens`` -- ``N_b`` of Eq. 6 per class: ``--box_nums 1``, one box = two tokens.
    ``vit_image_size`` -- ``--image_size 256`` (§IV-B: all inputs 256 x 256); SAM ViT-B/L/H only.
    ``pixel_normalization`` -- ``unit``: the code feeds the [0, 1] image to SAM's encoder as is.
    ``unet_upsample`` -- ``transpose``: the code's U-Net is built with ``bilinear=False``.
    ``vnet_normalization`` -- ``none``: the code's ``VNet(n_channels, n_classes)`` default.
    """

    subnet_lr: float = 0.01
    subnet_momentum: float = 0.9
    subnet_weight_decay: float = 1e-4
    sam_lr: float = 1e-4
    lr_decay_power: float = 1.0
    entropy_weight: float = 0.9
    mutual_weight: float = 1.0
    kd_temperature: float = 10.0
    patch_grid: int = 4
    patches_pasted: int = 5
    copy_paste_start: float = 12_000 / 50_000
    binarization_threshold: float = 0.5
    prompt_tokens: int = 2
    vit_image_size: int = 256
    pixel_normalization: str = "unit"
    unet_upsample: str = "transpose"
    vnet_normalization: str = "none"

    def __post_init__(self) -> None:
        if self.patch_grid < 1 or not 1 <= self.patches_pasted <= self.patch_grid**2:
            raise ValueError(f"KnowSAMParams: patches_pasted must lie in [1, patch_grid^2 = {self.patch_grid**2}], "
                             f"got patch_grid={self.patch_grid}, patches_pasted={self.patches_pasted}")
        if self.kd_temperature <= 0:
            raise ValueError(f"KnowSAMParams.kd_temperature must be positive, got {self.kd_temperature}")
        if self.prompt_tokens < 1:
            raise ValueError(f"KnowSAMParams.prompt_tokens must be >= 1, got {self.prompt_tokens}")


# --- §III-A: multi-view co-training ---------------------------------------------------------------------


def dissimilarity_map(probs_a: torch.Tensor, probs_b: torch.Tensor, threshold: float) -> torch.Tensor:
    """Eq. 2, ``M = B(Y_a) xor B(Y_b)``: 1 where the sub-networks' binarised class maps disagree,
    ``[B, C, H, W]`` float, one channel per class (the official HAM binarises each class's probability
    at ``threshold``).  It carries no gradient: binarisation is a step."""
    return torch.logical_xor(probs_a > threshold, probs_b > threshold).to(probs_a.dtype)


def conv_bn_leaky(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """``F_CBL`` of Eq. 3: Conv (no bias, BatchNorm follows) -> BatchNorm -> LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(HAM_LEAKY_SLOPE, inplace=True),
    )


def _view_encoder(in_channels: int, widths: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(conv_bn_leaky(in_channels, widths[0], 3), conv_bn_leaky(widths[0], widths[1], 1))


class HybridAggregation(nn.Module):
    """The Hybrid Aggregation Module, Eq. 3:
    ``Y_f = F_CBL(F_CAT{F_CBL(H_a, H_b), F_CBL(M), F_CBL(Y_a, Y_b)})``."""

    def __init__(self, num_classes: int, binarization_threshold: float, width_scale: float = 1.0) -> None:
        super().__init__()
        self.binarization_threshold = binarization_threshold
        view_widths = {view: tuple(max(1, round(width * width_scale)) for width in widths)
                       for view, widths in HAM_VIEW_WIDTHS.items()}
        self.dissimilarity_view = _view_encoder(num_classes, view_widths["dissimilarity"])
        self.entropy_view = _view_encoder(2, view_widths["entropy"])
        self.prediction_view = _view_encoder(2 * num_classes, view_widths["prediction"])
        fused_width = sum(widths[-1] for widths in view_widths.values())
        self.fusion = nn.Sequential(conv_bn_leaky(fused_width, fused_width, 3),
                                    conv_bn_leaky(fused_width, num_classes, 3))

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        probs_a, probs_b = torch.softmax(logits_a.float(), dim=1), torch.softmax(logits_b.float(), dim=1)
        entropy_maps = torch.cat([predictive_entropy(probs_a), predictive_entropy(probs_b)], dim=1)  # Eq. 1
        dissimilarity = dissimilarity_map(probs_a, probs_b, self.binarization_threshold)  # Eq. 2
        views = [
            self.entropy_view(entropy_maps.to(logits_a.dtype)),
            self.dissimilarity_view(dissimilarity.to(logits_a.dtype)),
            self.prediction_view(torch.cat([logits_a, logits_b], dim=1)),
        ]
        return self.fusion(torch.cat(views, dim=1))


@dataclass
class CoTrainingOutput:
    """Logits ``[B, C, H, W]`` of the U-Net (``Y_a``), the V-Net (``Y_b``) and the HAM (``Y_f``)."""

    logits_a: torch.Tensor
    logits_b: torch.Tensor
    fused_logits: torch.Tensor


class MultiViewCoTraining(nn.Module):
    """``F_A`` (U-Net), ``F_B`` (V-Net) and the HAM: the segmentation model KnowSAM deploys."""

    def __init__(self, task: TaskSpec, params: KnowSAMParams) -> None:
        super().__init__()
        self.unet = unet_for(task, upsample=params.unet_upsample)
        self.vnet = VNet2D(VNet2DConfig(in_channels=task.in_channels, num_classes=task.num_classes,
                                        widths=task.network_widths, normalization=params.vnet_normalization))
        self.aggregation = HybridAggregation(task.num_classes, params.binarization_threshold,
                                             task.network_widths[0] / HAM_REFERENCE_WIDTH)

    def forward(self, images: torch.Tensor) -> CoTrainingOutput:
        logits_a, logits_b = self.unet(images), self.vnet(images)
        return CoTrainingOutput(logits_a, logits_b, self.aggregation(logits_a, logits_b))


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_SEG = L_Dice + L_CE`` (§III-A, after Eq. 4), each with weight one as in the code."""
    return ce_dice_loss(logits, labels, ce_weight=1.0, dice_weight=1.0)


def mutual_consistency_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Eq. 5, ``CE(Y_a, Y_b) + CE(Y_b, Y_a)``: each network's probabilities are the other's soft,
    detached pseudo-label, averaged over pixels."""
    log_probs_a, log_probs_b = F.log_softmax(logits_a.float(), dim=1), F.log_softmax(logits_b.float(), dim=1)
    a_from_b = -(log_probs_b.detach().exp() * log_probs_a).sum(dim=1).mean()
    b_from_a = -(log_probs_a.detach().exp() * log_probs_b).sum(dim=1).mean()
    return a_from_b + b_from_a


def entropy_loss(outputs: CoTrainingOutput) -> torch.Tensor:
    """Eq. 13: the per-pixel entropy of each sub-network, averaged over pixels, summed over both."""
    return sum(predictive_entropy(torch.softmax(logits.float(), dim=1)).mean()
               for logits in (outputs.logits_a, outputs.logits_b))


# --- §III-B: learnable prompt ---------------------------------------------------------------------------


class ClassPromptDecoder(nn.Module):
    """One class's share of ``psi`` (official ``box_decoder_embedding``): conv block, max-pool + conv
    block twice, a 1x1 conv, global average pooling, and an MLP to ``tokens`` embeddings of width D."""

    def __init__(self, embedding_dim: int, tokens: int) -> None:
        super().__init__()
        self.tokens, self.embedding_dim = tokens, embedding_dim
        self.features = nn.Sequential(
            ConvBlock(embedding_dim, embedding_dim, PROMPT_DECODER_DROPOUT),
            DownBlock(embedding_dim, embedding_dim, PROMPT_DECODER_DROPOUT),
            ConvBlock(embedding_dim, embedding_dim, PROMPT_DECODER_DROPOUT),
            DownBlock(embedding_dim, embedding_dim, PROMPT_DECODER_DROPOUT),
            nn.Conv2d(embedding_dim, embedding_dim, kernel_size=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        hidden = PROMPT_MLP_EXPANSION * embedding_dim * tokens
        self.mlp = nn.Sequential(
            nn.Linear(embedding_dim, hidden), nn.GELU(), nn.Dropout(PROMPT_DECODER_DROPOUT),
            nn.Linear(hidden, tokens * embedding_dim), nn.Dropout(PROMPT_DECODER_DROPOUT),
        )

    def forward(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(image_embeddings)).view(-1, self.tokens, self.embedding_dim)


class LearnablePrompt(nn.Module):
    """``psi`` of Eq. 6: SAM's image embedding ``Z`` ``[B, D, h, w]`` -> prompt tokens ``P_b``
    ``[B, C, N_b, D]``, one set per class."""

    def __init__(self, embedding_dim: int, num_classes: int, tokens: int) -> None:
        super().__init__()
        self.per_class = nn.ModuleList(ClassPromptDecoder(embedding_dim, tokens) for _ in range(num_classes))

    def forward(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        return torch.stack([decoder(image_embeddings) for decoder in self.per_class], dim=1)


# --- §III-C: SAM-induced distillation ------------------------------------------------------------------


def distillation_loss(student_logits: torch.Tensor, sam_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """One term of Eq. 10 with Eq. 9's softening: ``T^2 KL(softmax(q_s / T) || softmax(q / T))`` per
    pixel, averaged over pixels (Hinton's ``T^2`` keeps the gradient's scale, official ``KDLoss``).
    SAM's logits are detached: the distillation teaches the sub-network only."""
    return pixelwise_kl_divergence(student_logits / temperature, sam_logits.detach() / temperature) * temperature**2


# --- §III-D: uncertainty-guided data augmentation ------------------------------------------------------


def uncertain_patch_mask(uncertainty: torch.Tensor, grid: int, top_k: int) -> torch.Tensor:
    """``[B, H, W]`` float, 1 on the ``top_k`` cells of a ``grid x grid`` partition of each image whose
    mean ``uncertainty`` ``[B, H, W]`` is highest (§III-D: average pooling, then the top five of 16)."""
    if uncertainty.dim() != 3:
        raise ValueError(f"uncertain_patch_mask: expected uncertainty [B, H, W], got {tuple(uncertainty.shape)}")
    batch, height, width = uncertainty.shape
    if not 1 <= grid <= min(height, width) or not 1 <= top_k <= grid * grid:
        raise ValueError(f"uncertain_patch_mask: grid {grid} and top_k {top_k} do not fit a {height} x {width} map")
    device = uncertainty.device
    rows = torch.arange(height, device=device) * grid // height
    columns = torch.arange(width, device=device) * grid // width
    patch_of_pixel = (rows[:, None] * grid + columns[None, :]).flatten()
    sums = uncertainty.new_zeros(batch, grid * grid).index_add_(1, patch_of_pixel, uncertainty.flatten(1))
    means = sums / torch.bincount(patch_of_pixel, minlength=grid * grid).to(uncertainty.dtype)
    chosen = torch.zeros(batch, grid * grid, dtype=torch.bool, device=device)
    chosen.scatter_(1, means.topk(top_k, dim=1).indices, True)
    return chosen[:, patch_of_pixel].view(batch, height, width).to(uncertainty.dtype)


def uncertainty_guided_copy_paste(
    labeled_images: torch.Tensor,
    labels: torch.Tensor,
    unlabeled_images: torch.Tensor,
    pseudo_labels: torch.Tensor,
    labeled_uncertainty: torch.Tensor,
    unlabeled_uncertainty: torch.Tensor,
    grid: int,
    top_k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fig. 3(c): the bidirectional paste.  The most uncertain patches of labeled image ``i`` are
    replaced by unlabeled image ``i``'s (with its pseudo-label), and those of unlabeled image ``i`` by
    labeled image ``i``'s (with its ground truth); images and labels are mixed by the same mask.
    Partners are taken cyclically when the two streams differ in size.  Returns the mixed images
    ``[L + U, ...]`` and labels ``[L + U, H, W]``, labeled-based first."""
    labeled_count, unlabeled_count = labeled_images.shape[0], unlabeled_images.shape[0]
    unlabeled_partner = torch.arange(labeled_count, device=labels.device) % unlabeled_count
    labeled_partner = torch.arange(unlabeled_count, device=labels.device) % labeled_count
    labeled_mask = uncertain_patch_mask(labeled_uncertainty, grid, top_k)
    unlabeled_mask = uncertain_patch_mask(unlabeled_uncertainty, grid, top_k)
    images = torch.cat([
        mix_by_mask(labeled_mask, unlabeled_images[unlabeled_partner], labeled_images),
        mix_by_mask(unlabeled_mask, labeled_images[labeled_partner], unlabeled_images),
    ])
    targets = torch.cat([
        mix_by_mask(labeled_mask, pseudo_labels[unlabeled_partner], labels),
        mix_by_mask(unlabeled_mask, labels[labeled_partner], pseudo_labels),
    ])
    return images, targets


# --- the method ------------------------------------------------------------------------------------------


@register_method()
class KnowSAM(Method):
    name = "knowsam"
    family = "sam"
    paper = ("KnowSAM: U-Net + V-Net co-training with a hybrid aggregation module, distilled from an adapter-tuned "
             "SAM prompted by a learnable prompt and their fused map, with uncertainty-guided copy-paste "
             "(Huang et al., arXiv 2412.13742, 2024)")
    Params = KnowSAMParams
    unlabeled_views = ("strong",)

    def __init__(self, params: KnowSAMParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.co_training = MultiViewCoTraining(task, params)
        self.sam = sam_for(
            task,
            class_tokens=False,
            decoder_init="checkpoint",
            adaptation="adapter",
            vit_image_size=params.vit_image_size,
            pixel_normalization=params.pixel_normalization,
        )
        self.learnable_prompt = LearnablePrompt(self.sam.prompt_encoder.embed_dim, task.num_classes,
                                                params.prompt_tokens)
        self.result_flags = type(self).result_flags + self.sam.result_flags

    def sam_prediction(self, images: torch.Tensor, fused_logits: torch.Tensor) -> torch.Tensor:
        """Eq. 6-7: ``Y_s`` ``[B, C, H, W]`` at the images' size.  Class ``c`` is decoded with prompt
        tokens ``psi_c(Z)`` and the mask prompt ``Y_f[:, c]``, detached so that ``L_sam`` trains SAM
        and ``psi`` only."""
        batch, num_classes = fused_logits.shape[:2]
        image_embeddings = self.sam.embed(images)
        prompt_tokens = self.learnable_prompt(image_embeddings)
        masks = self.sam.decode(
            image_embeddings.repeat_interleave(num_classes, dim=0),
            sparse_prompt=prompt_tokens.flatten(0, 1),
            mask_prompt=fused_logits.detach().flatten(0, 1)[:, None],
        )
        class_logits = masks[:, SINGLE_MASK_TOKEN].view(batch, num_classes, *masks.shape[-2:])
        return F.interpolate(class_logits, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)

    def mutual_weight(self, progress: Progress) -> float:
        """``lambda_m(t) = beta exp(-5 (1 - t / t_max)^2)`` (§IV-B)."""
        return self.params.mutual_weight * sigmoid_rampup(progress.step, progress.total_steps)

    def distillation(self, outputs: CoTrainingOutput, sam_logits: torch.Tensor) -> torch.Tensor:
        """Eq. 10: both sub-networks learn SAM's softened map."""
        temperature = self.params.kd_temperature
        return (distillation_loss(outputs.logits_a, sam_logits, temperature)
                + distillation_loss(outputs.logits_b, sam_logits, temperature))

    def mixed_sample_loss(self, mixed_images: torch.Tensor, mixed_targets: torch.Tensor, labeled_count: int,
                          mutual_weight: float) -> torch.Tensor:
        """The loss on UGDA's mixed images (official ``mix_up``, module docstring)."""
        p = self.params
        mixed = self.co_training(mixed_images)
        supervised = sum(segmentation_loss(logits, mixed_targets)
                         for logits in (mixed.logits_a, mixed.logits_b, mixed.fused_logits))
        fused_pseudo_labels = mixed.fused_logits[labeled_count:].detach().argmax(dim=1)
        self_training = (segmentation_loss(mixed.logits_a[labeled_count:], fused_pseudo_labels)
                         + segmentation_loss(mixed.logits_b[labeled_count:], fused_pseudo_labels))
        mutual = mutual_consistency_loss(mixed.logits_a, mixed.logits_b)
        return supervised + p.entropy_weight * entropy_loss(mixed) + mutual_weight * (mutual + self_training)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p = self.params
        labeled_count = batch.labeled_images.shape[0]
        images = torch.cat([batch.labeled_images, batch.unlabeled["strong"]])  # Eq. 11
        outputs = self.co_training(images)
        sam_logits = self.sam_prediction(images, outputs.fused_logits)

        sam_loss = segmentation_loss(sam_logits[:labeled_count], batch.labels)  # Eq. 8
        supervised = (segmentation_loss(outputs.logits_a[:labeled_count], batch.labels)
                      + segmentation_loss(outputs.logits_b[:labeled_count], batch.labels)
                      + segmentation_loss(outputs.fused_logits[:labeled_count], batch.labels))  # Eq. 12 with Eq. 4
        distillation = self.distillation(outputs, sam_logits)  # Eq. 10
        entropy = entropy_loss(outputs)  # Eq. 13
        mutual = mutual_consistency_loss(outputs.logits_a, outputs.logits_b)  # Eq. 5
        mutual_weight = self.mutual_weight(progress)
        total = supervised + distillation + p.entropy_weight * entropy + mutual_weight * mutual  # Eq. 14

        mixed_loss = torch.zeros((), device=images.device)
        if progress.fraction >= p.copy_paste_start:
            fused_uncertainty = predictive_entropy(torch.softmax(outputs.fused_logits.detach().float(), dim=1))[:, 0]
            sam_pseudo_labels = sam_logits[labeled_count:].detach().argmax(dim=1)
            mixed_images, mixed_targets = uncertainty_guided_copy_paste(
                batch.labeled_images, batch.labels, batch.unlabeled["strong"], sam_pseudo_labels,
                fused_uncertainty[:labeled_count], fused_uncertainty[labeled_count:], p.patch_grid, p.patches_pasted,
            )
            mixed_loss = self.mixed_sample_loss(mixed_images, mixed_targets, labeled_count, mutual_weight)

        loss = total + mixed_loss + sam_loss
        return StepOutput(loss, {
            "loss_supervised": float(supervised.detach()),
            "loss_distillation": float(distillation.detach()),
            "loss_entropy": float(entropy.detach()),
            "loss_mutual": float(mutual.detach()),
            "loss_mixed": float(mixed_loss.detach()),
            "loss_sam": float(sam_loss.detach()),
            "mutual_weight": mutual_weight,
        })

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The aggregated map ``Y_f`` (§IV-B: "During inference, the Y_f serves as the final segmentation")."""
        return self.co_training(images).fused_logits

    def optimizers(self) -> list[OptimizerSpec]:
        """SGD for the co-training model, Adam for SAM's trainable parameters and ``psi`` (§IV-B)."""
        p = self.params
        decay = poly_decay(p.lr_decay_power)
        subnets = torch.optim.SGD(self.co_training.parameters(), lr=p.subnet_lr, momentum=p.subnet_momentum,
                                  weight_decay=p.subnet_weight_decay)
        sam_parameters = [parameter for module in (self.sam, self.learnable_prompt)
                          for parameter in module.parameters() if parameter.requires_grad]
        sam = torch.optim.Adam(sam_parameters, lr=p.sam_lr)
        return [OptimizerSpec(subnets, decay), OptimizerSpec(sam, decay)]

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """The weights of the unlabeled terms (Eq. 14), the distillation temperature (Eq. 9) and SAM's
        learning rate, which decides how good a teacher SAM is when the distillation starts."""
        return {
            "kd_temperature": trial.suggest_float("kd_temperature", 1.0, 20.0, log=True),
            "entropy_weight": trial.suggest_float("entropy_weight", 0.1, 1.5),
            "mutual_weight": trial.suggest_float("mutual_weight", 0.1, 3.0, log=True),
            "sam_lr": trial.suggest_float("sam_lr", 1e-5, 1e-3, log=True),
        }
