"""SAM inside the harness: the adapted multi-class SAM (``model``), LoRA and adapters (``lora``),
checkpoints (``checkpoints``), a frozen encoder's embeddings on disk (``embedding_store``), LiteMedSAM's
encoder (``lite_medsam``), the tiny test SAM (``tiny``) and SAMed's optimiser (``optim``).  Methods reach
these through ``bench``'s public API."""
from __future__ import annotations

from bench.sam.checkpoints import CheckpointError, lite_medsam_checkpoint, read_state_dict
from bench.sam.embedding_store import EmbeddingStore
from bench.sam.lora import BottleneckAdapter, SplitQKV, apply_adapters, apply_lora
from bench.sam.model import (
    ADAPTATIONS,
    BACKBONES,
    DEFAULT_SAM_MODEL,
    PIXEL_NORMALIZATIONS,
    SAM_MASK_TOKENS,
    AdaptedSAM,
    ClassPromptEncoder,
    SAMOptions,
    build_mask_decoder,
    count_trainable,
    sam_for,
)
from bench.sam.optim import sam_optimizer, warmup_poly_schedule

__all__ = [
    "ADAPTATIONS", "BACKBONES", "DEFAULT_SAM_MODEL", "PIXEL_NORMALIZATIONS", "SAM_MASK_TOKENS", "AdaptedSAM",
    "BottleneckAdapter", "CheckpointError", "ClassPromptEncoder", "EmbeddingStore", "SAMOptions", "SplitQKV",
    "apply_adapters", "apply_lora", "build_mask_decoder", "count_trainable", "lite_medsam_checkpoint", "read_state_dict",
    "sam_for", "sam_optimizer", "warmup_poly_schedule",
]
