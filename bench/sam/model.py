"""The adapted SAM every SAM-based method builds on: one image encoder and one prompt encoder shared by
one or more multi-class mask decoders.

What "adapted" means, and where each choice comes from:

* **Multi-class output.**  A decoder has one mask token per class, background included, and returns
  every token's mask: SAMed (``segment_anything/modeling/mask_decoder.py``) builds the decoder with
  ``num_multimask_outputs = num_classes`` foreground classes, i.e. ``num_classes + 1`` tokens, and
  reads all of them as class logits for a softmax.  ``TaskSpec.num_classes`` already counts the
  background, so a decoder here has ``task.num_classes`` tokens and channel 0 is the background.
* **Prompts per class.**  CPC-SAM (``prompt_encoder_prompt_class.py``) extends the prompt encoder to
  ``num_classes + 2`` point embeddings: a point's label is its class id (0 = background) and the last
  two embeddings are the box corners.  :class:`ClassPromptEncoder` does that; a SAM checkpoint
  initialises class 0 from SAM's negative-point embedding, every foreground class from the
  positive-point embedding and the corners from SAM's corners (CPC-SAM loads by key name, which puts
  SAM's box-corner embeddings on classes 2 and 3 and leaves its own corners random).
* **Automatic segmentation.**  Without prompts the decoder sees SAM's learnable "no mask" dense
  embedding and no sparse token; it is trained with the decoder and used at inference (SAMed
  ``sam.py`` ``forward_train``; CPC-SAM §2.1 "the default dense prompt embedding ... fine-tuned").
* **Input.**  Grey images are repeated to 3 channels and resized to the backbone's input size
  (1024 for SAM's ViTs unless ``vit_image_size`` says otherwise -- the papers use 512, with SAMed's
  resized position embeddings -- 256 for LiteMedSAM, 64 for the tiny test SAM), then normalised:
  ``sam`` = SAM's pixel mean/std on the 0-255 scale (``segment_anything`` ``Sam.pixel_mean``),
  ``unit`` = the [0, 1] image as is (SAMed/CPC-SAM ``train.py`` pass ``pixel_mean=[0, 0, 0]``,
  ``pixel_std=[1, 1, 1]``; LiteMedSAM is trained on [0, 1] images), ``pretraining`` = whichever the
  backbone's weights were trained with (``sam`` for ViT-B/L/H checkpoints of SAM -- pass ``unit`` for a
  MedSAM ViT-B checkpoint -- ``unit`` for LiteMedSAM).
* **Output.**  Logits come at the decoder's resolution (4x the embedding grid, or 16x with
  ``upsampling_stages=4``, the progressive up-sampling of MA-SAM that CPC-SAM's
  ``mask_decoder_prompt_large.py`` uses) and are resized bilinearly to whatever size the caller asks
  for (the patch / label size).
* **Several decoders.**  CPC-SAM and InteractMatch use two decoders of the same structure with
  different random initialisations (``decoder_init="random"``); SAMed copies SAM's decoder
  (``decoder_init="samed"``), the mask tokens and heads only when the checkpoint would load strictly:
  SAMed ``build_sam.py`` tries ``load_state_dict`` on the whole model and, when that fails (another
  number of classes than SAM's 3 + 1 tokens, or an input size whose position embeddings must be
  resized, as at its default 512 px), falls back to ``load_from``, which never loads them.  With 4
  classes at the checkpoint's own size (LiteMedSAM at 256) they load; a ViT at 512 starts them random.
* **Zero-shot use** (SAM-point, SAM-box, SemiSAM): ``class_tokens=False`` keeps SAM's own 4-token
  decoder and :meth:`AdaptedSAM.decode_per_class` prompts each class separately with a positive point
  or a box and combines the binary masks (see there).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from bench.method import RANDOM_INIT_SAM, TaskSpec
from bench.sam.checkpoints import (
    CheckpointError,
    lite_medsam_checkpoint,
    load_strict,
    read_state_dict,
    resize_position_embeddings,
    section,
)
from bench.sam.lite_medsam import LITE_MEDSAM_IMAGE_SIZE, build_tiny_vit
from bench.sam.lora import apply_adapters, apply_lora, checkpoint_blocks, freeze
from bench.sam.tiny import TINY_IMAGE_SIZE, TINY_PATCH_SIZE, TINY_PROMPT_DIM, build_tiny_encoder

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
"""``segment_anything`` ``Sam`` defaults, on the 0-255 scale."""
PIXEL_NORMALIZATIONS = ("pretraining", "sam", "unit")
ADAPTATIONS = ("lora", "adapter", "frozen", "full")
SAM_MASK_TOKENS = 4
"""SAM's own decoder: one single-mask token and three multimask tokens."""
DEFAULT_SAM_MODEL = "lite-medsam"
"""The only backbone whose weights ship with the project's dependencies, so the default that runs
anywhere; the papers use ViT-B (``--sam-model vit_b --sam-checkpoint sam_vit_b_01ec64.pth``)."""


@dataclass(frozen=True)
class Backbone:
    """One SAM flavour: how to build its encoder and the widths of its prompt encoder and decoder."""

    name: str
    build_encoder: Callable[[int], nn.Module]
    image_size: int
    fixed_image_size: bool
    embedding_stride: int
    normalization: str
    weights: str
    """``required`` (a ``sam_checkpoint`` must be given), ``bundled`` (shipped) or ``none``."""
    prompt_dim: int = 256
    mask_in_chans: int = 16
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_hidden_dim: int = 256


def _vit_builder(embed_dim: int, depth: int, num_heads: int, global_attention: tuple[int, ...]) -> Callable[[int], nn.Module]:
    """``segment_anything/build_sam.py`` ``_build_sam``'s encoder, at any input size (SAMed's change)."""

    def build(image_size: int) -> nn.Module:
        return ImageEncoderViT(
            depth=depth, embed_dim=embed_dim, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=num_heads, patch_size=16, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=global_attention, window_size=14, out_chans=256,
        )

    return build


BACKBONES: dict[str, Backbone] = {
    "vit_b": Backbone("vit_b", _vit_builder(768, 12, 12, (2, 5, 8, 11)), 1024, False, 16, "sam", "required"),
    "vit_l": Backbone("vit_l", _vit_builder(1024, 24, 16, (5, 11, 17, 23)), 1024, False, 16, "sam", "required"),
    "vit_h": Backbone("vit_h", _vit_builder(1280, 32, 16, (7, 15, 23, 31)), 1024, False, 16, "sam", "required"),
    "lite-medsam": Backbone(
        "lite-medsam", lambda size: build_tiny_vit(), LITE_MEDSAM_IMAGE_SIZE, True, 4, "unit", "bundled"
    ),
    "tiny": Backbone(
        "tiny", lambda size: build_tiny_encoder(), TINY_IMAGE_SIZE, True, TINY_PATCH_SIZE, "unit", "none",
        prompt_dim=TINY_PROMPT_DIM, mask_in_chans=8, decoder_mlp_dim=64, decoder_heads=2, iou_hidden_dim=32,
    ),
}


class ClassPromptEncoder(PromptEncoder):
    """SAM's prompt encoder with one point embedding per class (CPC-SAM): a point labelled ``c`` gets
    class ``c``'s embedding, ``-1`` marks "not a point"; the last two embeddings are the box corners."""

    def __init__(self, num_classes: int, embed_dim: int, image_embedding_size: tuple[int, int],
                 input_image_size: tuple[int, int], mask_in_chans: int) -> None:
        super().__init__(embed_dim=embed_dim, image_embedding_size=image_embedding_size,
                         input_image_size=input_image_size, mask_in_chans=mask_in_chans)
        self.num_classes = num_classes
        self.num_point_embeddings = num_classes + 2
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # SAM: shift to the pixel centre
        labels = labels.long()
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        position = self.pe_layer.forward_with_coords(points, self.input_image_size)
        class_table = torch.cat([embedding.weight for embedding in self.point_embeddings[: self.num_classes]])
        embedded = position + class_table[labels.clamp(min=0)]
        return torch.where((labels >= 0)[..., None], embedded, self.not_a_point_embed.weight.expand_as(embedded))


def class_prompt_state(sam_state: dict[str, torch.Tensor], num_classes: int) -> dict[str, torch.Tensor]:
    """A SAM prompt-encoder state for :class:`ClassPromptEncoder`: background <- negative point,
    foreground classes <- positive point, corners <- corners (module docstring)."""
    state = {key: value for key, value in sam_state.items() if not key.startswith("point_embeddings.")}
    negative, positive = sam_state["point_embeddings.0.weight"], sam_state["point_embeddings.1.weight"]
    state["point_embeddings.0.weight"] = negative.clone()
    for class_id in range(1, num_classes):
        state[f"point_embeddings.{class_id}.weight"] = positive.clone()
    state[f"point_embeddings.{num_classes}.weight"] = sam_state["point_embeddings.2.weight"].clone()
    state[f"point_embeddings.{num_classes + 1}.weight"] = sam_state["point_embeddings.3.weight"].clone()
    return state


def progressive_upscaling(transformer_dim: int, stages: int) -> tuple[nn.Sequential, int]:
    """``stages`` transposed-convolution x2 steps; widths D/4, D/8, then D/16 (SAM's two steps are the
    first two; CPC-SAM's ``mask_decoder_prompt_large.py`` uses four).  LayerNorm after every step but
    the last, GELU after each, as in both.  Returns the module and its output width."""
    layers: list[nn.Module] = []
    width = transformer_dim
    for stage in range(stages):
        out_width = max(transformer_dim // (4 * 2**stage), transformer_dim // 16)
        layers.append(nn.ConvTranspose2d(width, out_width, kernel_size=2, stride=2))
        if stage < stages - 1:
            layers.append(LayerNorm2d(out_width))
        layers.append(nn.GELU())
        width = out_width
    return nn.Sequential(*layers), width


def build_mask_decoder(backbone: Backbone, num_mask_tokens: int, upsampling_stages: int = 2) -> MaskDecoder:
    """SAM's ``MaskDecoder`` with ``num_mask_tokens`` tokens (``num_multimask_outputs + 1``)."""
    if num_mask_tokens < 1:
        raise ValueError(f"a mask decoder needs at least one mask token, got {num_mask_tokens}")
    if upsampling_stages < 1:
        raise ValueError(f"upsampling_stages must be >= 1, got {upsampling_stages}")
    dim = backbone.prompt_dim
    decoder = MaskDecoder(
        transformer_dim=dim,
        transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=backbone.decoder_mlp_dim,
                                      num_heads=backbone.decoder_heads),
        num_multimask_outputs=num_mask_tokens - 1,
        iou_head_depth=3,
        iou_head_hidden_dim=backbone.iou_hidden_dim,
    )
    if upsampling_stages != 2:
        decoder.output_upscaling, out_width = progressive_upscaling(dim, upsampling_stages)
        decoder.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, out_width, 3) for _ in range(num_mask_tokens))
    return decoder


class AdaptedSAM(nn.Module):
    """Image encoder + prompt encoder + ``len(decoders)`` mask decoders (see the module docstring).

    ``embed(images) -> image_embeddings`` once, then ``decode(image_embeddings, decoder_index, ...)``
    as often as a method needs (CPC-SAM decodes the same embeddings with several prompts and both
    decoders).  Prompt coordinates are pixels of a frame of size ``frame_size`` (the label map they
    came from, see ``bench.prompts``); ``None`` means they are already in the model's input frame.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        decoders: Sequence[MaskDecoder],
        num_classes: int,
        image_size: int,
        pixel_mean: Sequence[float] = (0.0, 0.0, 0.0),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
        result_flags: tuple[str, ...] = (),
    ) -> None:
        """``pixel_mean``/``pixel_std`` are on the [0, 1] scale the harness's images are on."""
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.decoders = nn.ModuleList(decoders)
        self.num_classes = num_classes
        self.image_size = image_size
        self.result_flags = result_flags
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def encoder_frozen(self) -> bool:
        return not any(parameter.requires_grad for parameter in self.image_encoder.parameters())

    def train(self, mode: bool = True) -> "AdaptedSAM":
        """The harness calls ``train()`` on the whole method every step; BatchNorm layers of a frozen
        encoder (LiteMedSAM's TinyViT) must keep their pretrained statistics, so they stay in eval."""
        super().train(mode)
        if mode:
            for module in self.image_encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    parameter.requires_grad for parameter in module.parameters()
                ):
                    module.eval()
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 1 or 3, H, W]`` in [0, 1] -> ``[B, 3, S, S]`` normalised SAM input."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"AdaptedSAM: expected images [B, 1 or 3, H, W], got {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return (images - self.pixel_mean) / self.pixel_std

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``[B, D, h, w]``; without gradients when the encoder has nothing to train."""
        inputs = self.preprocess(images)
        if self.encoder_frozen:
            with torch.no_grad():
                return self.image_encoder(inputs)
        return self.image_encoder(inputs)

    def to_input_frame(self, coordinates: torch.Tensor, frame_size: tuple[int, int] | None) -> torch.Tensor:
        """``(x, y)`` pixels of a ``frame_size`` image -> pixels of the model's input, pixel centres onto
        pixel centres (SAM adds the half pixel back and divides by the input size)."""
        if frame_size is None:
            return coordinates.float()
        height, width = frame_size
        input_height, input_width = self.prompt_encoder.input_image_size
        scale = coordinates.new_tensor([input_width / width, input_height / height], dtype=torch.float32)
        return (coordinates.float() + 0.5) * scale - 0.5

    def _embed_boxes(self, boxes: torch.Tensor, box_labels: torch.Tensor | None) -> torch.Tensor:
        """``[B, K, 4]`` boxes -> ``[B, 2K, D]`` corner tokens.  With a class-aware prompt encoder each
        box may carry a class label, whose point embedding is added to both corners; label ``-1``
        turns the box into "not a point" tokens (a class without a box)."""
        batch, count = boxes.shape[:2]
        corners = boxes.reshape(batch, count * 2, 2) + 0.5
        encoder = self.prompt_encoder
        embedded = encoder.pe_layer.forward_with_coords(corners, encoder.input_image_size).view(batch, count, 2, -1)
        corner_table = torch.stack([encoder.point_embeddings[-2].weight[0], encoder.point_embeddings[-1].weight[0]])
        embedded = embedded + corner_table
        if box_labels is not None:
            if not isinstance(encoder, ClassPromptEncoder):
                raise ValueError("box_labels need a class-aware prompt encoder (class_prompts=True)")
            labels = box_labels.long()
            class_table = torch.cat([e.weight for e in encoder.point_embeddings[: encoder.num_classes]])
            embedded = embedded + class_table[labels.clamp(min=0)][:, :, None]
            absent = (labels < 0)[:, :, None, None]
            embedded = torch.where(absent, encoder.not_a_point_embed.weight[0].expand_as(embedded), embedded)
        return embedded.reshape(batch, count * 2, -1)

    def encode_prompts(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        box_labels: torch.Tensor | None = None,
        mask_prompt: torch.Tensor | None = None,
        dense_prompt: torch.Tensor | None = None,
        sparse_prompt: torch.Tensor | None = None,
        frame_size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse tokens ``[B or 1, N, D]`` and dense embedding ``[B or 1, D, h, w]``.

        ``points`` = (``[B, N, 2]`` coordinates, ``[B, N]`` labels); ``boxes`` ``[B, K, 4]`` (or ``[B, 4]``);
        ``mask_prompt`` ``[B, 1, h', w']`` low-resolution logits (resized to SAM's mask input);
        ``dense_prompt`` replaces the dense embedding (KnowSAM's learnable feature prompt);
        ``sparse_prompt`` ``[B, N', D]`` extra tokens appended to the sparse ones.
        """
        encoder = self.prompt_encoder
        tokens: list[torch.Tensor] = []
        if points is not None:
            coordinates, labels = points
            tokens.append(encoder._embed_points(self.to_input_frame(coordinates, frame_size), labels, pad=boxes is None))
        if boxes is not None:
            if boxes.dim() == 2:
                boxes = boxes[:, None]
            corners = self.to_input_frame(boxes.reshape(*boxes.shape[:-1], 2, 2), frame_size).reshape(boxes.shape)
            tokens.append(self._embed_boxes(corners, box_labels))
        if sparse_prompt is not None:
            tokens.append(sparse_prompt)
        if tokens:
            sparse = torch.cat([token.to(tokens[0].dtype) for token in tokens], dim=1)
        else:
            sparse = encoder.no_mask_embed.weight.new_zeros(1, 0, encoder.embed_dim)
        if mask_prompt is not None and dense_prompt is not None:
            raise ValueError("give either mask_prompt or dense_prompt, not both")
        if mask_prompt is not None:
            if tuple(mask_prompt.shape[-2:]) != tuple(encoder.mask_input_size):
                mask_prompt = F.interpolate(mask_prompt, size=encoder.mask_input_size, mode="bilinear", align_corners=False)
            dense = encoder._embed_masks(mask_prompt)
        elif dense_prompt is not None:
            dense = dense_prompt
        else:
            dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *encoder.image_embedding_size)
        return sparse, dense

    def run_decoder(
        self, decoder_index: int, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's ``MaskDecoder.predict_masks`` with image ``i`` paired with prompt set ``i``.  SAM's own
        version repeats every image embedding once per prompt set (one image, many prompts), which for a
        batch of images would decode every image with every prompt set.  Returns all tokens' masks
        ``[B, T, h, w]`` and their predicted IoU ``[B, T]``."""
        decoder = self.decoders[decoder_index]
        batch, channels, height, width = image_embeddings.shape
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        output_tokens = output_tokens[None].expand(batch, -1, -1)
        tokens = torch.cat([output_tokens, sparse.expand(batch, -1, -1).to(output_tokens.dtype)], dim=1)
        source = image_embeddings + dense
        position = self.prompt_encoder.get_dense_pe().expand(batch, -1, -1, -1)
        hidden, source = decoder.transformer(source, position, tokens)
        iou_token_out = hidden[:, 0]
        mask_tokens_out = hidden[:, 1 : 1 + decoder.num_mask_tokens]
        upscaled = decoder.output_upscaling(source.transpose(1, 2).reshape(batch, channels, height, width))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, index]) for index, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
        )
        _, up_channels, up_height, up_width = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(batch, up_channels, up_height * up_width)).view(batch, -1, up_height, up_width)
        return masks, decoder.iou_prediction_head(iou_token_out)

    def decode_with_quality(
        self,
        image_embeddings: torch.Tensor,
        decoder_index: int = 0,
        output_size: tuple[int, int] | None = None,
        **prompts,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode` plus the decoder's IoU prediction per token."""
        sparse, dense = self.encode_prompts(**prompts)
        masks, quality = self.run_decoder(decoder_index, image_embeddings, sparse, dense)
        if output_size is not None and tuple(masks.shape[-2:]) != tuple(output_size):
            masks = F.interpolate(masks, size=tuple(output_size), mode="bilinear", align_corners=False)
        return masks, quality

    def decode(
        self,
        image_embeddings: torch.Tensor,
        decoder_index: int = 0,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        box_labels: torch.Tensor | None = None,
        mask_prompt: torch.Tensor | None = None,
        dense_prompt: torch.Tensor | None = None,
        sparse_prompt: torch.Tensor | None = None,
        frame_size: tuple[int, int] | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Class logits ``[B, num_classes, h, w]`` (one per mask token, channel 0 = background) from
        decoder ``decoder_index``; no prompt at all = automatic segmentation.  ``h, w`` is the decoder's
        resolution unless ``output_size`` asks for another (bilinear)."""
        masks, _ = self.decode_with_quality(
            image_embeddings, decoder_index, output_size, points=points, boxes=boxes, box_labels=box_labels,
            mask_prompt=mask_prompt, dense_prompt=dense_prompt, sparse_prompt=sparse_prompt, frame_size=frame_size,
        )
        return masks

    def decode_binary(
        self,
        image_embeddings: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        frame_size: tuple[int, int] | None = None,
        multimask: bool = False,
        output_size: tuple[int, int] | None = None,
        decoder_index: int = 0,
    ) -> torch.Tensor:
        """One object mask ``[B, 1, h, w]`` per image from SAM's own 4-token decoder: the single-mask
        token, or with ``multimask`` the best of the three multimask tokens by predicted IoU (what SAM
        recommends for one ambiguous point, Kirillov et al. 2023 §3)."""
        if self.decoders[decoder_index].num_mask_tokens != SAM_MASK_TOKENS:
            raise ValueError("decode_binary needs SAM's own 4-token decoder (build with class_tokens=False)")
        masks, quality = self.decode_with_quality(
            image_embeddings, decoder_index, output_size, points=points, boxes=boxes, frame_size=frame_size
        )
        if not multimask:
            return masks[:, :1]
        best = quality[:, 1:].argmax(dim=1)
        return masks[torch.arange(masks.shape[0], device=masks.device), 1 + best][:, None]

    def decode_per_class(
        self,
        image_embeddings: torch.Tensor,
        valid: torch.Tensor,
        points: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        frame_size: tuple[int, int] | None = None,
        multimask: bool = False,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Zero-shot multi-class segmentation: foreground class ``k`` of image ``b`` is prompted alone with
        the positive point ``points[b, k]`` and/or the box ``boxes[b, k]`` (``[B, K, 2]``, ``[B, K, 4]``)
        and gives a binary mask; a class with ``valid[b, k]`` False is not prompted and gets the lowest
        logit.  Returns ``[B, K + 1, h, w]``: channel 0 is a constant 0 logit -- SAM's mask threshold --
        so ``argmax`` labels a pixel with the class of highest mask logit when that logit is positive,
        background otherwise (overlaps go to the most confident class)."""
        batch, classes = valid.shape
        embeddings = image_embeddings.repeat_interleave(classes, dim=0)
        class_points = None
        if points is not None:
            coordinates = points.reshape(batch * classes, 1, 2)
            class_points = (coordinates, torch.ones(batch * classes, 1, dtype=torch.long, device=coordinates.device))
        class_boxes = None if boxes is None else boxes.reshape(batch * classes, 1, 4)
        masks = self.decode_binary(embeddings, class_points, class_boxes, frame_size, multimask, output_size)
        masks = masks.view(batch, classes, *masks.shape[-2:])
        masks = masks.masked_fill(~valid.bool()[:, :, None, None], torch.finfo(masks.dtype).min)
        return torch.cat([torch.zeros_like(masks[:, :1]), masks], dim=1)

    def forward(self, images: torch.Tensor, decoder_index: int = 0) -> torch.Tensor:
        """Automatic segmentation: class logits at the images' own size."""
        return self.decode(self.embed(images), decoder_index, output_size=tuple(images.shape[-2:]))


@dataclass(frozen=True)
class SAMOptions:
    """The harness options that choose a SAM backbone (``TaskSpec.options``; CLI ``--sam-model``,
    ``--sam-checkpoint``, ``--sam-random-init``), and where a frozen encoder's embeddings may be kept
    (``--sam-embedding-store``, ``bench.sam.embedding_store``)."""

    model: str = DEFAULT_SAM_MODEL
    checkpoint: str | None = None
    random_init: bool = False
    embedding_store: str | None = None

    @classmethod
    def from_task(cls, task: TaskSpec) -> "SAMOptions":
        options = task.options or {}
        options = cls(
            model=options.get("sam_model") or DEFAULT_SAM_MODEL,
            checkpoint=options.get("sam_checkpoint") or None,
            random_init=bool(options.get("sam_random_init", False)),
            embedding_store=options.get("sam_embedding_store") or None,
        )
        options.validate()
        return options

    def validate(self) -> None:
        """A SAM method refuses to start without weights unless random initialisation is explicit."""
        if self.model not in BACKBONES:
            raise ValueError(f"sam_model {self.model!r}: expected one of {sorted(BACKBONES)}")
        if self.random_init and self.checkpoint:
            raise ValueError(f"sam_random_init and sam_checkpoint={self.checkpoint} contradict each other; give one")
        weights = BACKBONES[self.model].weights
        if not self.random_init and not self.checkpoint and weights != "bundled":
            hint = ("it has no pretrained weights" if weights == "none"
                    else "e.g. sam_vit_b_01ec64.pth from SAM or medsam_vit_b.pth from MedSAM")
            raise ValueError(
                f"sam_model {self.model!r} needs sam_checkpoint (--sam-checkpoint PATH; {hint}); to run from "
                f"random weights pass sam_random_init (--sam-random-init), results are then flagged {RANDOM_INIT_SAM!r}"
            )


def _pixel_statistics(normalization: str, backbone: Backbone) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if normalization not in PIXEL_NORMALIZATIONS:
        raise ValueError(f"pixel_normalization {normalization!r}: expected one of {PIXEL_NORMALIZATIONS}")
    if normalization == "pretraining":
        normalization = backbone.normalization
    if normalization == "sam":
        return tuple(m / 255.0 for m in SAM_PIXEL_MEAN), tuple(s / 255.0 for s in SAM_PIXEL_STD)
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


DECODER_GROUPS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("transformer", ("transformer.", "iou_token."), True),
    ("mask tokens and heads", ("mask_tokens.", "output_hypernetworks_mlps.", "iou_prediction_head."), False),
    ("output up-scaling", ("output_upscaling.",), False),
)
"""The transformer always loads; the token-dependent parts only when the number of tokens matches the
checkpoint (and, under ``decoder_init="samed"``, the input size too); the up-scaling only when it is
SAM's (not the progressive one)."""
TOKEN_GROUP = DECODER_GROUPS[1][0]
DECODER_INITS = ("checkpoint", "samed", "random")


def load_decoder(decoder: MaskDecoder, state: dict[str, torch.Tensor], source: str, *,
                 token_parts: bool = True) -> list[str]:
    """Load the groups of ``DECODER_GROUPS`` that fit (``token_parts=False`` leaves the token-dependent
    group random even when it fits); returns the names of those left random."""
    expected = decoder.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    left_random = []
    for name, prefixes, required in DECODER_GROUPS:
        model_keys = {key for key in expected if key.startswith(prefixes)}
        file_keys = {key for key in state if key.startswith(prefixes)}
        fits = model_keys == file_keys and all(expected[key].shape == state[key].shape for key in model_keys)
        if name == TOKEN_GROUP and not token_parts:
            fits = False
        if fits:
            loaded.update({key: state[key] for key in model_keys})
        elif required:
            raise CheckpointError(f"{source}: the mask decoder's {name} does not match this backbone's")
        else:
            left_random.append(name)
    decoder.load_state_dict(loaded, strict=False)
    return left_random


def count_trainable(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)


def sam_for(
    task: TaskSpec,
    *,
    num_decoders: int = 1,
    class_tokens: bool = True,
    class_prompts: bool = False,
    decoder_init: str = "checkpoint",
    adaptation: str = "lora",
    lora_rank: int = 4,
    adapter_ratio: float = 0.25,
    vit_image_size: int = 1024,
    pixel_normalization: str = "pretraining",
    upsampling_stages: int = 2,
    gradient_checkpointing: bool = False,
    report: bool = True,
) -> AdaptedSAM:
    """The adapted SAM a method asks for, on the backbone the harness options choose.

    ``class_tokens`` -- one mask token per class (fine-tuned methods) or SAM's own 4 (zero-shot);
    ``class_prompts`` -- CPC-SAM's class-aware point embeddings; ``decoder_init`` -- ``checkpoint``
    (every part that fits: KnowSAM, SemiSAM), ``samed`` (SAMed's ``build_sam``, also SynFoC's: the
    mask tokens and heads only when the whole file would load strictly, i.e. same token count and input
    size; at another size ``load_from`` leaves them random) or ``random`` (CPC-SAM, each decoder its own
    draw); ``adaptation`` -- ``lora`` (q and v,
    rank ``lora_rank``), ``adapter`` (bottleneck adapters, KnowSAM), ``frozen`` or ``full``;
    ``vit_image_size`` -- input size of ViT-B/L/H (LiteMedSAM and the tiny SAM have fixed sizes);
    ``gradient_checkpointing`` -- recompute encoder blocks in the backward pass (ViT-B at 512-1024 px).
    Prints the trainable-parameter count (``report``).
    """
    options = SAMOptions.from_task(task)
    backbone = BACKBONES[options.model]
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"adaptation {adaptation!r}: expected one of {ADAPTATIONS}")
    if decoder_init not in DECODER_INITS:
        raise ValueError(f"decoder_init {decoder_init!r}: expected one of {DECODER_INITS}")
    if num_decoders < 1:
        raise ValueError(f"num_decoders must be >= 1, got {num_decoders}")
    image_size = backbone.image_size
    if not backbone.fixed_image_size:
        if vit_image_size <= 0 or vit_image_size % backbone.embedding_stride:
            raise ValueError(f"vit_image_size {vit_image_size}: must be a positive multiple of {backbone.embedding_stride}")
        image_size = vit_image_size
    embedding_size = image_size // backbone.embedding_stride
    num_mask_tokens = task.num_classes if class_tokens else SAM_MASK_TOKENS

    encoder = backbone.build_encoder(image_size)
    prompt_args = dict(embed_dim=backbone.prompt_dim, image_embedding_size=(embedding_size, embedding_size),
                       input_image_size=(image_size, image_size), mask_in_chans=backbone.mask_in_chans)
    prompt_encoder = ClassPromptEncoder(task.num_classes, **prompt_args) if class_prompts else PromptEncoder(**prompt_args)
    decoders = [build_mask_decoder(backbone, num_mask_tokens, upsampling_stages) for _ in range(num_decoders)]

    weights_note = "random initialisation"
    if not options.random_init:
        path = Path(options.checkpoint).expanduser() if options.checkpoint else lite_medsam_checkpoint()
        state = read_state_dict(path)
        source = f"sam_checkpoint={path}"
        load_strict(encoder, resize_position_embeddings(section(state, "image_encoder"), encoder), source, "image_encoder")
        prompt_state = section(state, "prompt_encoder")
        if class_prompts and "point_embeddings.1.weight" in prompt_state:
            prompt_state = class_prompt_state(prompt_state, task.num_classes)
        load_strict(prompt_encoder, prompt_state, source, "prompt_encoder")
        weights_note = f"weights from {path.name}"
        if decoder_init != "random":
            # ``samed``: build_sam's strict load of the whole file, else load_from, which drops the token parts.
            resized = image_size != backbone.image_size
            token_parts = decoder_init == "checkpoint" or not resized
            random_parts = set()
            for decoder in decoders:
                random_parts.update(load_decoder(decoder, section(state, "mask_decoder"), source,
                                                 token_parts=token_parts))
            if random_parts:
                reason = "shapes differ" if token_parts else f"SAMed's load_from at {image_size} px"
                weights_note += f" (decoder {', '.join(sorted(random_parts))} random: {reason})"
        else:
            weights_note += " (mask decoders random, as CPC-SAM)"

    if adaptation == "lora":
        apply_lora(encoder, lora_rank)
    elif adaptation == "adapter":
        apply_adapters(encoder, adapter_ratio)
    elif adaptation == "frozen":
        freeze(encoder)
    if gradient_checkpointing:
        checkpoint_blocks(encoder)

    pixel_mean, pixel_std = _pixel_statistics(pixel_normalization, backbone)
    flags = (RANDOM_INIT_SAM,) if options.random_init else ()
    model = AdaptedSAM(encoder, prompt_encoder, decoders, task.num_classes, image_size, pixel_mean, pixel_std, flags)
    if report:
        trainable, total = count_trainable(model), sum(p.numel() for p in model.parameters())
        adaptation_note = f"lora r={lora_rank}" if adaptation == "lora" else adaptation
        print(
            f"[bench.sam] {options.model} at {image_size}px, {weights_note}; {trainable:,} of {total:,} parameters "
            f"trainable (image encoder {count_trainable(encoder):,} [{adaptation_note}], prompt encoder "
            f"{count_trainable(prompt_encoder):,}, {num_decoders} mask decoder(s) "
            f"{sum(count_trainable(d) for d in decoders):,})",
            file=sys.stderr,
        )
    return model
