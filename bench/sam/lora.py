"""Parameter-efficient adaptation of SAM's image encoder: LoRA on q and v (through ``peft``), or
bottleneck adapters; everything else in the encoder frozen.

**How q and v are targeted.**  SAM's ViT (and LiteMedSAM's TinyViT) computes queries, keys and
values with one fused ``qkv`` ``nn.Linear``.  SAMed (``sam_lora_image_encoder.py``, ``_LoRA_qkv``)
adds low-rank updates to the q and v thirds of that fused output.  ``peft`` wraps whole ``Linear``
modules, so :func:`split_qkv` first replaces every fused ``attn.qkv`` with :class:`SplitQKV`, which
holds three ``Linear`` layers ``q``, ``k``, ``v`` initialised from the fused rows and re-assembles
the fused output in the order the attention expects.  ``peft`` then wraps exactly the modules whose
name ends in ``.qkv.q`` or ``.qkv.v``; the function is unchanged until LoRA's ``B`` moves from zero.

LoRA settings follow SAMed: rank 4 (``train.py --rank 4``), no dropout, and ``lora_alpha = rank`` so
that the update ``B A x`` enters unscaled, as in ``_LoRA_qkv``; ``peft``'s default initialisation
(``A`` Kaiming-uniform, ``B`` zero) is SAMed's ``reset_parameters``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

LORA_TARGETS = r".*\.qkv\.(q|v)"
"""peft ``target_modules`` (a full-match regular expression): the q and v projections only."""


class SplitQKV(nn.Module):
    """A fused ``qkv`` projection held as separate ``q``, ``k``, ``v`` ``Linear`` layers.

    ``q_rows``/``k_rows``/``v_rows`` are the rows of the fused weight that belong to each; the forward
    concatenates the three outputs and puts every channel back at its fused position, so the module
    is a drop-in replacement for the fused layer.
    """

    def __init__(self, fused: nn.Linear, q_rows: torch.Tensor, k_rows: torch.Tensor, v_rows: torch.Tensor) -> None:
        super().__init__()
        has_bias = fused.bias is not None
        self.q, self.k, self.v = (
            self._slice(fused, rows, has_bias) for rows in (q_rows, k_rows, v_rows)
        )
        concatenated_rows = torch.cat([q_rows, k_rows, v_rows])
        if sorted(concatenated_rows.tolist()) != list(range(fused.out_features)):
            raise ValueError("SplitQKV: q, k and v rows must partition the fused output")
        fused_position = torch.empty_like(concatenated_rows)
        fused_position[concatenated_rows] = torch.arange(len(concatenated_rows))
        self.identity_order = bool(torch.equal(concatenated_rows, torch.arange(len(concatenated_rows))))
        self.register_buffer("fused_position", fused_position, persistent=False)

    @staticmethod
    def _slice(fused: nn.Linear, rows: torch.Tensor, has_bias: bool) -> nn.Linear:
        layer = nn.Linear(fused.in_features, len(rows), bias=has_bias)
        with torch.no_grad():
            layer.weight.copy_(fused.weight[rows])
            if has_bias:
                layer.bias.copy_(fused.bias[rows])
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        concatenated = torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)
        return concatenated if self.identity_order else concatenated.index_select(-1, self.fused_position)


def _qkv_rows(attention: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which fused rows are q, k, v.  SAM's ViT (``segment_anything`` ``Attention``) reshapes the fused
    output as ``(3, heads, head_dim)``: contiguous thirds.  TinyViT (``tiny_vit_sam.Attention``) views it
    as ``(heads, 2 key_dim + d)`` and splits each head into ``[q, k, v]``: interleaved per head."""
    out_features = attention.qkv.out_features
    if hasattr(attention, "key_dim") and hasattr(attention, "d"):
        per_head = 2 * attention.key_dim + attention.d
        heads = torch.arange(attention.num_heads)[:, None] * per_head
        q_rows = (heads + torch.arange(attention.key_dim)).flatten()
        k_rows = (heads + attention.key_dim + torch.arange(attention.key_dim)).flatten()
        v_rows = (heads + 2 * attention.key_dim + torch.arange(attention.d)).flatten()
        return q_rows, k_rows, v_rows
    third = out_features // 3
    return torch.arange(third), torch.arange(third, 2 * third), torch.arange(2 * third, out_features)


def attention_modules(encoder: nn.Module) -> list[nn.Module]:
    """Every attention module with a fused ``qkv`` Linear (SAM ViT blocks, TinyViT blocks)."""
    return [module for module in encoder.modules() if isinstance(getattr(module, "qkv", None), nn.Linear)]


def split_qkv(encoder: nn.Module) -> int:
    """Replace every fused ``attn.qkv`` by :class:`SplitQKV`; returns how many were split."""
    attentions = attention_modules(encoder)
    for attention in attentions:
        attention.qkv = SplitQKV(attention.qkv, *_qkv_rows(attention))
    return len(attentions)


def freeze(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def apply_lora(encoder: nn.Module, rank: int) -> nn.Module:
    """LoRA of rank ``rank`` on the q and v projections of every attention block; the rest of the
    encoder is frozen (``peft`` marks only adapter weights trainable in the module it is given)."""
    from peft import LoraConfig, inject_adapter_in_model  # imported here: peft is slow to import

    if rank <= 0:
        raise ValueError(f"lora_rank must be positive, got {rank}")
    if split_qkv(encoder) == 0:
        raise ValueError(f"{type(encoder).__name__}: no attention block with a fused qkv projection to adapt")
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", target_modules=LORA_TARGETS)
    return inject_adapter_in_model(config, encoder)


class BottleneckAdapter(nn.Module):
    """Medical SAM Adapter (Wu et al. 2023, the adapter KnowSAM §III-B cites): ``x -> fc2(GELU(fc1(x)))``
    with hidden width ``ratio * dim``, optionally plus ``x``.  ``fc2`` starts at zero so the adapted
    encoder starts as the pretrained one (MSA keeps PyTorch's default initialisation)."""

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.activation = nn.GELU()
        self.skip = skip
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.fc2(self.activation(self.fc1(x)))
        return x + update if self.skip else update


class AdaptedAttention(nn.Module):
    """MSA's "space" adapter: a skip-connected adapter on the attention output."""

    def __init__(self, attention: nn.Module, dim: int, ratio: float) -> None:
        super().__init__()
        self.attention = attention
        self.adapter = BottleneckAdapter(dim, ratio, skip=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.attention(x))


class AdaptedMLP(nn.Module):
    """MSA's "MLP" adapter: a parallel adapter added to the block's MLP, scaled by ``scale`` (0.5 in MSA)."""

    def __init__(self, mlp: nn.Module, dim: int, ratio: float, scale: float) -> None:
        super().__init__()
        self.mlp = mlp
        self.adapter = BottleneckAdapter(dim, ratio, skip=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + self.scale * self.adapter(x)


def _transformer_blocks(encoder: nn.Module) -> list[nn.Module]:
    return [module for module in encoder.modules() if hasattr(module, "attn") and hasattr(module, "mlp")]


def _block_width(block: nn.Module) -> int:
    attention = block.attn
    return attention.qkv.in_features if hasattr(attention, "qkv") else block.dim


def apply_adapters(encoder: nn.Module, ratio: float = 0.25, mlp_scale: float = 0.5) -> nn.Module:
    """Freeze the encoder and add a space adapter and a parallel MLP adapter to every transformer block
    (Medical SAM Adapter layout: ``mlp_ratio=0.25``, MLP adapter scale 0.5)."""
    blocks = _transformer_blocks(encoder)
    if not blocks:
        raise ValueError(f"{type(encoder).__name__}: no transformer block to add adapters to")
    freeze(encoder)
    for block in blocks:
        width = _block_width(block)
        block.attn = AdaptedAttention(block.attn, width, ratio)
        block.mlp = AdaptedMLP(block.mlp, width, ratio, mlp_scale)
    return encoder


class GradientCheckpointed(nn.Module):
    """Recomputes a block's activations in the backward pass instead of storing them (ViT-B at 1024 px
    stores several GB of attention maps per batch); a no-op in evaluation and under ``no_grad``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return checkpoint(self.block, x, use_reentrant=False)
        return self.block(x)


def checkpoint_blocks(encoder: nn.Module) -> int:
    """Wrap every transformer block of the encoder in :class:`GradientCheckpointed`."""
    wrapped = 0
    for module in list(encoder.modules()):
        blocks = getattr(module, "blocks", None)
        if isinstance(blocks, nn.ModuleList):
            for index, block in enumerate(blocks):
                if not isinstance(block, GradientCheckpointed):
                    blocks[index] = GradientCheckpointed(block)
                    wrapped += 1
    return wrapped
