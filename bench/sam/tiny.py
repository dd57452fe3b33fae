"""A tiny SAM for tests and CPU smoke runs: the same three modules and the same class handling as
ViT-B, with a 2-block, 32-wide ViT at 64 x 64 px.  It has no pretrained weights (random
initialisation only, so its results are flagged ``random-init-sam``)."""
from __future__ import annotations

from functools import partial

from segment_anything.modeling import ImageEncoderViT
from torch import nn

TINY_IMAGE_SIZE = 64
TINY_PATCH_SIZE = 8
TINY_EMBED_DIM = 32
TINY_PROMPT_DIM = 32


def build_tiny_encoder() -> nn.Module:
    """Two blocks (one windowed, one global, as SAM alternates them), relative positions on."""
    return ImageEncoderViT(
        img_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH_SIZE,
        embed_dim=TINY_EMBED_DIM,
        depth=2,
        num_heads=2,
        mlp_ratio=4.0,
        out_chans=TINY_PROMPT_DIM,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=4,
        global_attn_indexes=(1,),
    )
