"""Consistency regularisation shared by the mean-teacher family (Mean Teacher, UA-MT) and co-training.

Everything here is written once so that MT, UA-MT and their descendants perturb the teacher, measure
disagreement and ramp their unlabeled losses in the same way.  The SSL4MIS scripts these follow are
``train_mean_teacher_2D.py``, ``train_uncertainty_aware_mean_teacher_2D.py`` and
``train_cross_pseudo_supervision_2D.py`` (HiLab-git/SSL4MIS, ``code/``) with ``utils/losses.py`` and
``utils/ramps.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.schedules import sigmoid_rampup

ENTROPY_EPS = 1e-6
"""SSL4MIS UA-MT computes ``-sum p log(p + 1e-6)`` so that ``p = 0`` contributes zero, not NaN."""

MASKED_MEAN_EPS = 1e-16
"""SSL4MIS UA-MT's guard against an empty mask: ``sum(mask * d) / (2 * sum(mask) + 1e-16)``."""


SSL4MIS_ITERATIONS = 30_000
"""Length of the SSL4MIS ACDC schedule, the reference at which its iteration counts are stated."""


def schedule_scaled(iterations: float, total_steps: int | None) -> float:
    """An iteration count stated for the 30k SSL4MIS schedule, at the same *fraction* of a run of
    ``total_steps`` (``None``: unscaled).  At the paper budget this is the identity; under a reduced
    budget it keeps ramp-ups covering the same share of training instead of never starting."""
    if total_steps is None:
        return iterations
    return iterations * total_steps / SSL4MIS_ITERATIONS


def ssl4mis_consistency_weight(
    step: int, weight: float, rampup_epochs: float, iterations_per_epoch: int, total_steps: int | None = None
) -> float:
    """``weight * sigmoid_rampup(step // iterations_per_epoch, rampup_epochs)``.

    SSL4MIS counts its consistency ramp-up in "epochs" of 150 iterations (``iter_num // 150``) over
    200 such epochs, i.e. the ramp covers the whole 30k-iteration ACDC schedule, and the weight is a
    staircase that changes every 150 iterations rather than at every step.  With ``total_steps`` the
    epoch length is scaled by ``total_steps / 30000`` (see ``schedule_scaled``), so a 1,000-iteration
    budget ramps over its whole run as the paper budget does.
    """
    if iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
    epoch_length = max(1.0, schedule_scaled(iterations_per_epoch, total_steps))
    return weight * sigmoid_rampup(int(step // epoch_length), rampup_epochs)


def add_clipped_gaussian_noise(images: torch.Tensor, std: float, clip: float) -> torch.Tensor:
    """``images + clamp(N(0, std^2), -clip, clip)``: the teacher's input perturbation ``eta'`` of
    Mean Teacher (Tarvainen & Valpola 2017, Sec. 2), with SSL4MIS' values std 0.1, clip 0.2."""
    return images + torch.clamp(torch.randn_like(images) * std, -clip, clip)


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-element squared difference of the two softmax maps, ``[B, C, H, W]``, unreduced.

    SSL4MIS ``softmax_mse_loss``; the caller chooses the reduction (MT: mean over every element,
    UA-MT: masked sum).  The teacher side is detached so that only the student is pulled towards the
    target, which is what makes it a *target* (Mean Teacher Sec. 2).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"softmax_mse: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    student_probs = torch.softmax(student_logits.float(), dim=1)
    teacher_probs = torch.softmax(teacher_logits.detach().float(), dim=1)
    return (student_probs - teacher_probs) ** 2


@torch.no_grad()
def monte_carlo_probs(
    network: nn.Module,
    images: torch.Tensor,
    passes: int,
    noise_std: float,
    noise_clip: float,
    copies_per_forward: int = 2,
) -> torch.Tensor:
    """``passes`` stochastic softmax predictions ``[passes, B, C, H, W]`` of ``network`` on ``images``.

    Each pass sees freshly noised input and, with the network in training mode, fresh dropout masks
    (Monte-Carlo dropout; Yu et al. 2019, Sec. 2).  As in SSL4MIS UA-MT, ``copies_per_forward`` noisy
    copies of the batch go through one forward (T=8 as 4 forwards of the batch duplicated), which is
    faster and lets BatchNorm see the same batch size as in SSL4MIS.
    """
    if passes < 1 or copies_per_forward < 1 or passes % copies_per_forward:
        raise ValueError(
            f"monte_carlo_probs: passes ({passes}) must be a positive multiple of copies_per_forward "
            f"({copies_per_forward})"
        )
    batch_size = images.shape[0]
    repeated = images.repeat(copies_per_forward, *([1] * (images.dim() - 1)))
    probs = []
    for _ in range(passes // copies_per_forward):
        logits = network(add_clipped_gaussian_noise(repeated, noise_std, noise_clip))
        probs.append(torch.softmax(logits.float(), dim=1).reshape(copies_per_forward, batch_size, *logits.shape[1:]))
    return torch.cat(probs)


def predictive_entropy(mean_probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the averaged prediction, ``u = -sum_c mu_c log mu_c`` (UA-MT's uncertainty), as a
    ``[B, 1, H, W]`` map so that it broadcasts over the class channel of a ``[B, C, H, W]`` loss."""
    return -(mean_probs * torch.log(mean_probs + ENTROPY_EPS)).sum(dim=1, keepdim=True)


def masked_consistency(distance: torch.Tensor, mask: torch.Tensor, normaliser: float) -> torch.Tensor:
    """``sum(mask * distance) / (normaliser * sum(mask) + eps)`` (SSL4MIS UA-MT).

    ``distance`` is ``[B, C, H, W]`` and ``mask`` ``[B, 1, H, W]``: the sum runs over the classes of
    the kept pixels while the denominator counts pixels, so ``normaliser`` sets the per-pixel scale
    (SSL4MIS uses 2 regardless of the number of classes).  An empty mask gives exactly 0.
    """
    mask = mask.to(distance.dtype)
    return (mask * distance).sum() / (normaliser * mask.sum() + MASKED_MEAN_EPS)


def cross_entropy_to_argmax(logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` against the hard pseudo-label ``argmax(other_logits)``
    (cross pseudo supervision, Chen et al. 2021, Sec. 3.1).

    The pseudo-label is built from detached logits: it is a target, so no gradient reaches the
    network that produced it through this term.
    """
    pseudo_label = other_logits.detach().argmax(dim=1)
    return F.cross_entropy(logits.float(), pseudo_label)
