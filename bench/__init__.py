"""Benchmark harness for semi-supervised medical image segmentation.

This module is the public API that methods in ``baselines/``, ``methods/`` and third-party plug-ins
import; nothing else in ``bench`` is promised to stay put.  Shared mechanics live here once, grouped
by the family of methods that first needed them.

Names are imported on first use (PEP 562), so ``bench --help`` does not pay for torch, medpy and
segment_anything: ``from bench import Method`` imports ``bench.method`` and nothing else.
"""
from __future__ import annotations

import importlib
from typing import Any

_PUBLIC: dict[str, tuple[str, ...]] = {
    # The plug-in contract, registries and data types.
    "bench.data.adapter": ("DatasetAdapter", "TrainingSlice"),
    "bench.data.case": ("Case",),
    "bench.method": ("GROUND_TRUTH_PROMPTS", "RANDOM_INIT_SAM", "VIEWS", "Batch", "Method", "NoParams",
                     "OptimizerSpec", "Progress", "StepOutput", "TaskSpec", "constant_rate", "poly_decay"),
    "bench.registry": ("DATASET_ENTRY_POINT_GROUP", "METHOD_ENTRY_POINT_GROUP", "METHODS", "register_dataset",
                       "register_method"),
    "bench.factories": ("unet_for", "method_class"),
    # Networks, losses, schedules, resizing.
    "bench.data.resize": ("resize_image", "resize_labels"),
    "bench.losses": ("ce_dice_loss", "dice_loss", "masked_cross_entropy"),
    "bench.networks": ("ConvBlock", "DeepSupervisionUNet", "DownBlock", "MultiDecoderUNet", "UNet", "UNetConfig",
                       "VNet2D", "VNet2DConfig", "count_parameters", "dropout_disabled", "init_weights"),
    "bench.schedules": ("exponential_rampdown", "sigmoid_rampup"),
    # Mean-teacher family and co-training (Mean Teacher, UA-MT, CPS, URPC, MC-Net+): EMA teachers, teacher
    # perturbation, consistency distances, Monte-Carlo uncertainty, SSL4MIS ramp-ups.
    "bench.consistency": ("add_clipped_gaussian_noise", "cross_entropy_to_argmax", "masked_consistency",
                          "monte_carlo_probs", "predictive_entropy", "schedule_scaled", "softmax_mse",
                          "ssl4mis_consistency_weight"),
    "bench.ema": ("ema_update", "make_teacher"),
    # Weak-to-strong and copy-paste methods (FixMatch, UniMatch, BCP, SynFoC, KnowSAM): CutMix boxes, BCP's
    # copy-paste mask, mixing images and pseudo-labels with one mask, confidence masks, largest components.
    "bench.mixing": ("PseudoLabels", "batch_partner", "confidence_mask", "confident_dice_loss", "copy_paste_mask",
                     "cutmix_boxes", "cutmix_from_partner", "largest_component_per_class", "mix_by_mask"),
    # SAM: the adapted multi-class SAM with LoRA/adapters, SAMed's optimiser, prompts from masks.
    "bench.prompts": ("ClassPrompts", "center_point", "jitter_boxes", "largest_component", "mask_prompt_logits",
                      "prompts_from_labels", "random_point", "tight_box"),
    "bench.sam": ("AdaptedSAM", "EmbeddingStore", "SAMOptions", "count_trainable", "sam_for", "sam_optimizer",
                  "warmup_poly_schedule"),
    # Dual-decoder SAM (CPC-SAM, InteractMatch): decoders prompting each other, ensembles, distillation.
    "bench.dual_sam": ("PromptRecipe", "cross_prompt", "decode_prompted", "dual_decoder_prediction",
                       "dual_decoder_sam", "ensemble_logits", "ensemble_probs", "ensemble_pseudo_labels",
                       "other_decoder", "pixelwise_kl_divergence", "prompts_from_logits", "pseudo_label_loss"),
    # SemiSAM: maps between the un-augmented (``plain``) frame and the augmented one.
    "bench.geometry": ("Geometry", "apply_geometry", "invert_geometry"),
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
