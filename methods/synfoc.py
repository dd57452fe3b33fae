"""SynFoC (Ma et al., "Steady Progress Beats Stagnation: Mutual Aid of Foundation and Conventional Models
in Mixed Domain Semi-Supervised Medical Image Segmentation", CVPR 2025): a U-Net and a LoRA-adapted
(Med)SAM trained together, each as a Mean-Teacher pair, on one ensembled pseudo-label.

The paper's method (§3.1-3.4) in the order :meth:`SynFoC.training_step` computes it:

1. Teachers on the weak view ``U_w``: U-Net teacher ``P^UT_w``, SAM teacher ``P^MS_w`` (§3.3).
2. Self-confidence (Eq. 4): Dice agreement between the U-Net *student*'s and *teacher*'s pseudo-labels
   on ``U_w``; mutual confidence (Eq. 5): Dice agreement between the U-Net teacher's and the SAM
   teacher's; both averaged over the foreground classes, per image.
3. Ensemble ratio ``alpha = Phi_self x Phi_mut`` (Eq. 6), per image, and the ensembled prediction
   ``P^EN_w = alpha P^UT_w + (1 - alpha) P^MS_w`` (Eq. 3): SAM leads while the U-Net is unstable or
   disagrees with it, the U-Net takes over as it becomes stable and agrees.
4. Intermediate samples (Eq. 1): a box of the weak *labeled* image pasted onto the *strong*
   unlabeled image, ``U_c = X_w M + U_s (1 - M)``, and the same box of the label over the ensembled
   pseudo-label, ``Q_c = Y_w M + Q^EN_w (1 - M)``.
5. Unlabeled loss (Eq. 7): CE + Dice of both students on ``U_c`` against ``Q_c``, over the pixels
   where ``max P^EN_w >= tau`` (``tau = 0.95``) and over the whole pasted box (labels are trusted).
6. Consensus-divergence regularisation (Eq. 8-10): where the two students' argmaxes on ``U_c`` agree
   (``M_c``), minimise both students' entropy; where they differ (``M_d = 1 - M_c``), the squared
   difference of their softmax maps.  Gradients reach both students in both terms.
7. Total (Eq. 2): ``L = L_x + lambda(t) (L_u + L_c + L_d)``, ``L_x`` = CE + Dice of each student on the
   labeled weak images; after each step both teachers become EMAs of their students (§3.1; SAM's EMA
   covers what trains, see the prompt-encoder point below).

Where this module departs from the paper's text, it follows the official code (MQinghe/SynFoC,
``code/train.py``, the run of its README: ``--AdamW --warmup --model MedSAM``):

* ``lambda(t)``: Eq. 2 prints ``e^{-5(1 - t/t_max)}`` and calls it a Gaussian warm-up; the code uses
  the SSL4MIS Gaussian ``consistency * sigmoid_rampup(t // (t_max / 200), 200)``, i.e.
  ``exp(-5 (1 - t/t_max)^2)`` as a 200-step staircase over the whole run.  The code's (and SSL4MIS')
  Gaussian is used.
* Eq. 8 compares the students' predictions on ``U_s``; the code compares them on ``U_c``, the images
  whose entropy and squared difference Eq. 9-10 regularise.  ``U_c`` is used.
* Eq. 9 sums the two students' entropies; the code averages them (``/ 2``).  The average is used.
  Eq. 10's leading minus sign is a typo (it would maximise the disagreement); the squared difference
  is minimised, as in the code.
* §3.3 trains (and averages) only the LoRA of the image encoder and the mask decoder; the code also
  trains and averages the prompt encoder (``update_SAM_ema_variables``), as this module does.  With no
  prompts only its ``no_mask_embed`` vector (256 numbers) receives gradients.
* Eq. 7 reads ``W_c = 1(max P^EN_w >= tau)`` everywhere; the code sets the mask to 1 inside the pasted
  box (``unet_size_mask[box == 1] = 1``: the pasted pixels carry ground truth), as this module does.
* Eq. 9-10 normalise by ``S = W H C`` with ``C`` the foreground classes (§3.1); the code's ``.mean()``
  runs over all ``C + 1`` channels, background included, as this module's does (for a binary task
  ``L_c`` and ``L_d`` are half the literal value).
* The copy-paste box ``M`` is UniMatch's CutMix box with probability 1 (``obtain_cutmix_box(p=1.0)``,
  area 2-40 % of the image), one per image; labeled image ``i`` is pasted onto unlabeled image ``i``.
* Self/mutual confidence use the code's smoothed per-class Dice (``metrics.dice_coefficient_numpy``:
  ``(2 |A and B| + 1) / (|A| + |B| + 1.001)``) with ``+1`` on both sides, so that perfect agreement --
  including a class absent from both maps -- scores exactly 1.
* Learning rates are constant: the official loop never changes them (with ``--warmup`` the SAM rate
  stays at ``base_lr / warmup_period``).
* Resolutions (§3.5 "interpolation is used to align the resolutions"): SAM's supervised and unlabeled
  losses are computed at its decoder's low resolution against nearest-resized targets.  For ``L_x``
  that is the code's choice; for the unlabeled targets ``Q_c`` the code instead resizes the ensembled
  probabilities bilinearly and then takes argmax and threshold, which differs at class boundaries;
  ensembling, confidences and Eq. 8-10 are computed at the U-Net's resolution (the patch), with SAM's
  probabilities resized bilinearly (the code resizes the student's with nearest neighbours there).
* The U-Net is the harness's SSL4MIS U-Net (the ACDC setting), not the official Milesial U-Net.  The
  Milesial U-Net has no dropout; the SSL4MIS one has (0.05-0.5 in the encoder), which the students keep
  in training, but the no-gradient passes that score the U-Net's stability and make its pseudo-label
  (Eq. 3-4) run without it, so that ``Phi_self`` measures what the code's measures.

Training length and batch are the benchmark's (SSL4MIS ACDC at ``paper``: 30k iterations, 12 + 12)
rather than §4.2's 4 + 4 (2 + 2 on M&Ms) for 30k-60k iterations, and the U-Net's resolution is the
budget's patch; the paper's per-dataset settings belong to its mixed-domain tasks.

At test time the paper keeps the SAM student (§3.5) and reports both students (``SynFoC^U-Net`` and
``SynFoC^MedSAM`` rows of Tables 3-6).  ``synfoc`` evaluates the SAM student, ``synfoc-unet`` the U-Net
student of the same training.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from bench import (
    AdaptedSAM,
    Batch,
    Method,
    OptimizerSpec,
    Progress,
    PseudoLabels,
    StepOutput,
    TaskSpec,
    ce_dice_loss,
    constant_rate,
    cutmix_boxes,
    dice_loss,
    dropout_disabled,
    ema_update,
    make_teacher,
    masked_cross_entropy,
    mix_by_mask,
    predictive_entropy,
    register_method,
    resize_image,
    resize_labels,
    sam_for,
    sigmoid_rampup,
    unet_for,
)

COPY_PASTE_PROBABILITY = 1.0
"""Official ``obtain_cutmix_box(img_size=patch_size, p=1.0)``: every intermediate sample gets a box."""
AGREEMENT_SMOOTH = 1.0
"""Smoothing of the Dice agreement of Eq. 4-5 (official ``dice_coefficient_numpy``: +1 and +1.001)."""
SAM_ADAMW_BETAS = (0.9, 0.999)
"""§4.2: AdamW with beta_1 = 0.9, beta_2 = 0.999 for MedSAM."""


@dataclass
class SynFoCParams:
    """Defaults and where each comes from (paper §4.2 unless said otherwise; "code" = official
    ``code/train.py``).

    * ``unet_lr`` 0.03, ``unet_momentum`` 0.9, ``unet_weight_decay`` 1e-4: SGD for the U-Net (§4.2;
      code ``--base_lr 0.03``).  SGD for the U-Net and AdamW for SAM is the best pair of Table 10.
    * ``sam_lr`` 1e-4, ``sam_weight_decay`` 0.1: AdamW for SAM (§4.2).  The code's effective rate is
      ``0.03 / 250 = 1.2e-4`` (``--warmup`` divides the base rate by the warm-up period and nothing
      raises it again); the paper's stated value is used.
    * ``lora_rank`` 4, ``vit_image_size`` 512: §4.2 and §3.5 (SAMed-style LoRA on the image encoder,
      input up-sampled to 512 for ViT-B; LiteMedSAM and the tiny SAM have fixed input sizes).  The code
      builds SAM with SAMed's ``build_sam`` (``sam_model_registry[...](image_size=..., num_classes=...)``),
      so at 512 px its mask tokens and heads start random, as in ``samed``.
    * ``pixel_normalization`` ``unit``: the code builds SAM with ``pixel_mean=[0, 0, 0]``,
      ``pixel_std=[1, 1, 1]`` (the [0, 1] image as is).
    * ``ema_decay`` 0.99: code ``--ema_decay`` (the paper gives no value).
    * ``confidence_threshold`` 0.95: tau of Eq. 7 (§3.3; best of Table 11; code ``--threshold``).
    * ``consistency`` 1.0, ``consistency_rampup_stages`` 200: ``lambda(t)`` of Eq. 2 as the code computes
      it, ``consistency * sigmoid_rampup(t // (t_max / 200), 200)`` (see the module docstring).
    * ``sam_loss_at_low_resolution`` True: the code's SAM losses use ``low_res_logits`` against
      down-sampled labels and pseudo-labels (as SAMed).
    * ``pseudo_label_dropout`` False: the U-Net teacher's and student's no-gradient passes on ``U_w``
      (Eq. 3's ``P^UT_w``, Eq. 4's two argmaxes) run with the harness U-Net's dropout switched off, since
      the code's Milesial U-Net has no dropout (BatchNorm stays in training mode, as in the code).
      ``True`` keeps dropout on in those passes (the SSL4MIS teacher convention; this module's behaviour
      until 2026-11-30, under which Eq. 4 scored two passes of equal weights below 1).
    """

    unet_lr: float = 0.03
    unet_momentum: float = 0.9
    unet_weight_decay: float = 1e-4
    sam_lr: float = 1e-4
    sam_weight_decay: float = 0.1
    lora_rank: int = 4
    vit_image_size: int = 512
    pixel_normalization: str = "unit"
    ema_decay: float = 0.99
    confidence_threshold: float = 0.95
    consistency: float = 1.0
    consistency_rampup_stages: int = 200
    sam_loss_at_low_resolution: bool = True
    pseudo_label_dropout: bool = False


def class_agreement(first_labels: torch.Tensor, second_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Eq. 4 / Eq. 5: per image, the Dice between two label maps ``[B, H, W]`` for each foreground class
    ``1..num_classes-1``, averaged over those classes; returns ``[B]`` in (0, 1], 1 for identical maps."""
    if first_labels.shape != second_labels.shape:
        raise ValueError(f"class_agreement: label maps {tuple(first_labels.shape)} and "
                         f"{tuple(second_labels.shape)} must have the same shape")
    foreground = torch.arange(1, num_classes, device=first_labels.device)[None, :, None, None]
    first_masks = first_labels[:, None] == foreground
    second_masks = second_labels[:, None] == foreground
    intersection = (first_masks & second_masks).flatten(2).sum(-1).float()
    sizes = (first_masks.flatten(2).sum(-1) + second_masks.flatten(2).sum(-1)).float()
    return ((2 * intersection + AGREEMENT_SMOOTH) / (sizes + AGREEMENT_SMOOTH)).mean(dim=1)


def ensemble_ratio(
    unet_student_labels: torch.Tensor,
    unet_teacher_labels: torch.Tensor,
    sam_teacher_labels: torch.Tensor,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha, self_confidence, mutual_confidence)``, each ``[B]``: ``alpha = Phi_self x Phi_mut``
    (Eq. 6) with Phi_self the U-Net student/teacher agreement (Eq. 4) and Phi_mut the U-Net/SAM teacher
    agreement (Eq. 5).  The U-Net's pseudo-label weighs more only when it is both stable and plausible."""
    self_confidence = class_agreement(unet_student_labels, unet_teacher_labels, num_classes)
    mutual_confidence = class_agreement(sam_teacher_labels, unet_teacher_labels, num_classes)
    return self_confidence * mutual_confidence, self_confidence, mutual_confidence


def ensemble_probs(alpha: torch.Tensor, unet_probs: torch.Tensor, sam_probs: torch.Tensor) -> torch.Tensor:
    """Eq. 3: ``alpha P^UT + (1 - alpha) P^MS`` with one ``alpha`` per image (``[B]``)."""
    weight = alpha.view(-1, 1, 1, 1)
    return weight * unet_probs + (1.0 - weight) * sam_probs


def intermediate_samples(
    box: torch.Tensor,
    labeled_images: torch.Tensor,
    labels: torch.Tensor,
    strong_images: torch.Tensor,
    pseudo_labels: PseudoLabels,
) -> tuple[torch.Tensor, PseudoLabels]:
    """Eq. 1: ``U_c = X_w M + U_s (1 - M)`` and ``Q_c = Y_w M + Q_w (1 - M)`` with one box ``M``
    (``[B, H, W]``, 1 inside) for the images and their targets alike.  Pasted label pixels carry
    confidence 1, so the confidence mask keeps the whole box (official code sets its mask to 1 there)."""
    labeled_targets = PseudoLabels(labels, torch.ones_like(pseudo_labels.confidence))
    return mix_by_mask(box, labeled_images, strong_images), labeled_targets.mixed(box, pseudo_labels)


def confident_ce_dice(logits: torch.Tensor, targets: PseudoLabels, threshold: float) -> torch.Tensor:
    """One student's half of Eq. 7: ``L_ce(Q, P, W) + L_dice(Q, P, W)`` with ``W = 1(conf >= tau)``
    (supplementary Eq. 11-12: CE averaged over all pixels, SSL4MIS Dice weighted per pixel)."""
    weight = targets.confident(threshold)
    probs = torch.softmax(logits.float(), dim=1)
    return masked_cross_entropy(logits, targets.labels, weight) + dice_loss(probs, targets.labels, weight)


def consensus_divergence_masks(unet_probs: torch.Tensor, sam_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8: ``M_c = 1(argmax P^UT = argmax P^MS)``, ``M_d = 1 - M_c``, as float ``[B, 1, H, W]``."""
    consensus = (unet_probs.argmax(dim=1, keepdim=True) == sam_probs.argmax(dim=1, keepdim=True)).float()
    return consensus, 1.0 - consensus


def consensus_loss(unet_probs: torch.Tensor, sam_probs: torch.Tensor, consensus: torch.Tensor) -> torch.Tensor:
    """Eq. 9: the Shannon entropy of both students over the consensus region, normalised by
    ``S = W H C`` (and the batch), averaged over the two students as the official code does."""
    num_classes = unet_probs.shape[1]
    unet_entropy = (predictive_entropy(unet_probs) * consensus).mean() / num_classes
    sam_entropy = (predictive_entropy(sam_probs) * consensus).mean() / num_classes
    return (unet_entropy + sam_entropy) / 2


def divergence_loss(unet_probs: torch.Tensor, sam_probs: torch.Tensor, divergence: torch.Tensor) -> torch.Tensor:
    """Eq. 10: squared difference of the two students' softmax maps over the divergence region,
    normalised by ``S = W H C`` (and the batch); neither side is detached, so each pulls the other."""
    return ((unet_probs - sam_probs) ** 2 * divergence).mean()


@register_method()
class SynFoC(Method):
    name = "synfoc"
    family = "sam"
    paper = ("SynFoC: synergistic Mean-Teacher training of a U-Net and a LoRA-adapted (Med)SAM with a "
             "self/mutual-confidence pseudo-label ensemble (Ma et al., CVPR 2025); evaluates the SAM student")
    Params = SynFoCParams
    unlabeled_views = ("weak", "strong")

    def __init__(self, params: SynFoCParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.unet = unet_for(task)
        self.unet_teacher = make_teacher(self.unet)
        self.sam = sam_for(
            task,
            class_tokens=True,
            decoder_init="samed",
            adaptation="lora",
            lora_rank=params.lora_rank,
            vit_image_size=params.vit_image_size,
            pixel_normalization=params.pixel_normalization,
        )
        self.sam_teacher = make_teacher(self.sam)
        self.result_flags = type(self).result_flags + self.sam.result_flags

    def consistency_weight(self, progress: Progress) -> float:
        """``lambda(t)`` of Eq. 2 as the official code computes it: the Gaussian ramp-up in
        ``consistency_rampup_stages`` equal stages spanning the whole run."""
        stages = self.params.consistency_rampup_stages
        stage = math.floor(progress.step * stages / max(1, progress.total_steps))
        return self.params.consistency * sigmoid_rampup(stage, stages)

    @contextmanager
    def unet_pseudo_label_mode(self) -> Iterator[None]:
        """Both U-Nets without dropout for the no-gradient passes of Eq. 3-4 (``pseudo_label_dropout``
        False): the official Milesial U-Net has none, so its ``Phi_self`` compares student and teacher
        weights only; with dropout, two passes of equal weights already disagree and alpha drops."""
        if self.params.pseudo_label_dropout:
            yield
            return
        with dropout_disabled(self.unet), dropout_disabled(self.unet_teacher):
            yield

    @staticmethod
    def sam_logits(sam: AdaptedSAM, images: torch.Tensor) -> torch.Tensor:
        """Automatic-segmentation class logits at SAM's decoder resolution."""
        return sam.decode(sam.embed(images))

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p = self.params
        num_classes = self.task.num_classes
        weak_images, strong_images = batch.unlabeled["weak"], batch.unlabeled["strong"]
        unlabeled_count = weak_images.shape[0]
        patch_size = tuple(batch.labels.shape[-2:])

        # §3.3: the teachers' predictions on U_w, and the U-Net student's argmax there for Eq. 4, without
        # the harness U-Net's dropout unless asked (see ``pseudo_label_dropout``).
        with torch.no_grad():
            with self.unet_pseudo_label_mode():
                unet_teacher_probs = torch.softmax(self.unet_teacher(weak_images).float(), dim=1)
                unet_student_labels = self.unet(weak_images).argmax(dim=1)
            sam_teacher_probs = resize_image(
                torch.softmax(self.sam_logits(self.sam_teacher, weak_images).float(), dim=1), patch_size
            )
        alpha, self_confidence, mutual_confidence = ensemble_ratio(
            unet_student_labels, unet_teacher_probs.argmax(dim=1), sam_teacher_probs.argmax(dim=1), num_classes
        )
        ensembled = ensemble_probs(alpha, unet_teacher_probs, sam_teacher_probs)
        confidence, ensembled_labels = ensembled.max(dim=1)
        ensembled_targets = PseudoLabels(ensembled_labels, confidence)

        # Eq. 1: labeled image i (cycled when the labeled batch is smaller) pasted onto unlabeled image i.
        partner = torch.arange(unlabeled_count, device=weak_images.device) % batch.labeled_images.shape[0]
        box = cutmix_boxes(unlabeled_count, *patch_size, probability=COPY_PASTE_PROBABILITY, device=weak_images.device)
        mixed_images, mixed_targets = intermediate_samples(
            box, batch.labeled_images[partner], batch.labels[partner], strong_images, ensembled_targets
        )

        # Students: separate U-Net passes as in the official code; one SAM pass over both batches.
        unet_labeled_logits = self.unet(batch.labeled_images)
        unet_mixed_logits = self.unet(mixed_images)
        sam_labeled_logits, sam_mixed_logits = self.sam_logits(
            self.sam, torch.cat([batch.labeled_images, mixed_images])
        ).split([batch.labeled_images.shape[0], unlabeled_count])
        if not p.sam_loss_at_low_resolution:
            sam_labeled_logits = resize_image(sam_labeled_logits, patch_size)
            sam_mixed_logits = resize_image(sam_mixed_logits, patch_size)
        sam_size = tuple(sam_labeled_logits.shape[-2:])

        # L_x (§3.2): CE + Dice of each student against the labels (supplementary Eq. 11-12).
        unet_supervised = ce_dice_loss(unet_labeled_logits, batch.labels, ce_weight=1.0, dice_weight=1.0)
        sam_supervised = ce_dice_loss(sam_labeled_logits, resize_labels(batch.labels, sam_size), ce_weight=1.0,
                                      dice_weight=1.0)
        supervised_loss = unet_supervised + sam_supervised

        # L_u (Eq. 7): both students on U_c against Q_c, confident pixels and the pasted box only.
        sam_targets = PseudoLabels(resize_labels(mixed_targets.labels, sam_size),
                                   resize_labels(mixed_targets.confidence, sam_size))
        unet_unlabeled = confident_ce_dice(unet_mixed_logits, mixed_targets, p.confidence_threshold)
        sam_unlabeled = confident_ce_dice(sam_mixed_logits, sam_targets, p.confidence_threshold)
        unlabeled_loss = unet_unlabeled + sam_unlabeled

        # L_c, L_d (Eq. 8-10) between the two students on U_c, at the U-Net's resolution.
        unet_mixed_probs = torch.softmax(unet_mixed_logits.float(), dim=1)
        sam_mixed_probs = resize_image(torch.softmax(sam_mixed_logits.float(), dim=1), patch_size)
        consensus, divergence = consensus_divergence_masks(unet_mixed_probs, sam_mixed_probs)
        consensus_term = consensus_loss(unet_mixed_probs, sam_mixed_probs, consensus)
        divergence_term = divergence_loss(unet_mixed_probs, sam_mixed_probs, divergence)

        consistency_weight = self.consistency_weight(progress)
        loss = supervised_loss + consistency_weight * (unlabeled_loss + consensus_term + divergence_term)  # Eq. 2
        return StepOutput(loss, {
            "loss_supervised_unet": float(unet_supervised.detach()),
            "loss_supervised_sam": float(sam_supervised.detach()),
            "loss_unlabeled_unet": float(unet_unlabeled.detach()),
            "loss_unlabeled_sam": float(sam_unlabeled.detach()),
            "loss_consensus": float(consensus_term.detach()),
            "loss_divergence": float(divergence_term.detach()),
            "consistency_weight": consistency_weight,
            "self_confidence": float(self_confidence.mean()),
            "mutual_confidence": float(mutual_confidence.mean()),
            "ensemble_ratio": float(alpha.mean()),
            "confident_fraction": float(mixed_targets.confident(p.confidence_threshold).mean()),
            "consensus_fraction": float(consensus.mean()),
        })

    def on_step_end(self, progress: Progress) -> None:
        """Both teachers follow their students (§3.1).  Frozen SAM weights are equal in both copies, so
        averaging every parameter equals the official EMA of LoRA, prompt encoder and mask decoder."""
        ema_update(self.unet_teacher, self.unet, self.params.ema_decay, progress.step)
        ema_update(self.sam_teacher, self.sam, self.params.ema_decay, progress.step)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The SAM student, the model the paper keeps for testing (§3.5)."""
        return self.sam(images)

    def optimizers(self) -> list[OptimizerSpec]:
        """SGD for the U-Net student, AdamW for SAM's trainable parts (§4.2, Table 10), both constant."""
        p = self.params
        unet_optimizer = torch.optim.SGD(self.unet.parameters(), lr=p.unet_lr, momentum=p.unet_momentum,
                                         weight_decay=p.unet_weight_decay)
        sam_trainable = [parameter for parameter in self.sam.parameters() if parameter.requires_grad]
        sam_optimizer = torch.optim.AdamW(sam_trainable, lr=p.sam_lr, betas=SAM_ADAMW_BETAS,
                                          weight_decay=p.sam_weight_decay)
        return [OptimizerSpec(unet_optimizer, constant_rate), OptimizerSpec(sam_optimizer, constant_rate)]

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """The pseudo-label threshold (Table 11's range), the unlabeled weight, and the two rates."""
        return {
            "confidence_threshold": trial.suggest_float("confidence_threshold", 0.85, 0.99),
            "consistency": trial.suggest_float("consistency", 0.1, 2.0, log=True),
            "unet_lr": trial.suggest_float("unet_lr", 0.005, 0.05, log=True),
            "sam_lr": trial.suggest_float("sam_lr", 3e-5, 5e-4, log=True),
        }


@register_method()
class SynFoCUNet(SynFoC):
    name = "synfoc-unet"
    paper = ("SynFoC: synergistic Mean-Teacher training of a U-Net and a LoRA-adapted (Med)SAM "
             "(Ma et al., CVPR 2025); evaluates the U-Net student (the SynFoC^U-Net rows)")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The U-Net student of the same training."""
        return self.unet(images)
