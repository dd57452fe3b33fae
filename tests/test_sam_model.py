"""The adapted SAM (bench.sam) at tiny size: shapes and classes, LoRA on exactly q and v, gradients,
class prompts, batch alignment, per-class zero-shot decoding, adapters, checkpointing, schedule."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.method import RANDOM_INIT_SAM, TaskSpec
from bench.sam import AdaptedSAM, ClassPromptEncoder, count_trainable, sam_for, warmup_poly_schedule
from bench.sam.lora import SplitQKV
from bench.sam.tiny import TINY_EMBED_DIM, build_tiny_encoder

NUM_CLASSES = 4


def tiny_task(**options) -> TaskSpec:
    return TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(32, 32), total_steps=10,
                    options={"sam_model": "tiny", "sam_random_init": True, **options})


def tiny_sam(**kwargs) -> AdaptedSAM:
    torch.manual_seed(0)
    return sam_for(tiny_task(), report=False, **kwargs)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def test_automatic_segmentation_has_one_channel_per_class_at_the_requested_size(images):
    sam = tiny_sam()
    embeddings = sam.embed(images)
    assert embeddings.shape == (2, 32, 8, 8)
    assert sam.decode(embeddings).shape == (2, NUM_CLASSES, 32, 32)  # 4 x the 8 x 8 embedding grid
    assert sam(images).shape == (2, NUM_CLASSES, 32, 32)
    assert sam.decode(embeddings, output_size=(48, 40)).shape == (2, NUM_CLASSES, 48, 40)
    assert sam.result_flags == (RANDOM_INIT_SAM,)


def test_progressive_upsampling_decodes_at_sixteen_times_the_grid(images):
    sam = tiny_sam(upsampling_stages=4)
    assert sam.decode(sam.embed(images)).shape == (2, NUM_CLASSES, 128, 128)


def test_grey_images_become_three_identical_normalised_channels():
    sam = tiny_sam(pixel_normalization="sam")
    grey = torch.full((1, 1, 64, 64), 0.5)
    inputs = sam.preprocess(grey)
    expected = (127.5 - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor([58.395, 57.12, 57.375])
    assert torch.allclose(inputs[0, :, 10, 10], expected, atol=1e-5)
    assert torch.equal(tiny_sam(pixel_normalization="unit").preprocess(grey), grey.expand(1, 3, 64, 64))


def test_split_qkv_reproduces_the_fused_projection_in_both_layouts():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 12)

    class SamAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(12, 36)

    class TinyViTAttention(nn.Module):  # per head: [q (key_dim), k (key_dim), v (d)]
        def __init__(self):
            super().__init__()
            self.num_heads, self.key_dim, self.d = 2, 3, 6
            self.qkv = nn.Linear(12, 2 * (2 * 3 + 6))

    from bench.sam.lora import _qkv_rows

    for attention in (SamAttention(), TinyViTAttention()):
        fused = attention.qkv
        split = SplitQKV(fused, *_qkv_rows(attention))
        assert torch.allclose(split(x), fused(x), atol=1e-6)
    heads = TinyViTAttention()
    q_rows, _, v_rows = _qkv_rows(heads)
    assert q_rows.tolist() == [0, 1, 2, 12, 13, 14] and v_rows.tolist() == [6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22, 23]


def test_lora_wraps_exactly_q_and_v_and_nothing_else():
    rank = 4
    sam = tiny_sam(adaptation="lora", lora_rank=rank)
    trainable = {name: p.numel() for name, p in sam.image_encoder.named_parameters() if p.requires_grad}
    blocks = len(sam.image_encoder.blocks)
    # per block: q and v each get A [r, dim] and B [dim, r]
    assert sum(trainable.values()) == blocks * 2 * 2 * rank * TINY_EMBED_DIM
    assert len(trainable) == blocks * 2 * 2
    assert all(".qkv.q.lora_" in name or ".qkv.v.lora_" in name for name in trainable)
    lora_modules = {name.rsplit(".lora_", 1)[0] for name in trainable}
    assert lora_modules == {f"blocks.{i}.attn.qkv.{projection}" for i in range(blocks) for projection in "qv"}
    # the rest of the model trains in full: prompt encoder and decoder
    assert count_trainable(sam.prompt_encoder) == sum(p.numel() for p in sam.prompt_encoder.parameters())
    assert count_trainable(sam.decoders) == sum(p.numel() for p in sam.decoders.parameters())


def test_lora_starts_as_the_pretrained_encoder_and_then_departs_from_it():
    torch.manual_seed(0)
    plain = build_tiny_encoder()
    sam = tiny_sam()
    state = {k.replace(".base_layer", ""): v for k, v in sam.image_encoder.state_dict().items() if "lora_" not in k}
    reference = {}
    for key, value in plain.state_dict().items():
        if ".qkv." in key:
            kind = key.rsplit(".", 1)[1]
            prefix = key.rsplit(".qkv.", 1)[0]
            reference[key] = torch.cat([state[f"{prefix}.qkv.{p}.{kind}"] for p in "qkv"])
        else:
            reference[key] = state[key]
    plain.load_state_dict(reference)
    inputs = torch.rand(1, 3, 64, 64)
    assert torch.allclose(sam.image_encoder(inputs), plain(inputs), atol=1e-5)
    with torch.no_grad():
        sam.image_encoder.blocks[0].attn.qkv.q.lora_B["default"].weight.fill_(0.1)
    assert not torch.allclose(sam.image_encoder(inputs), plain(inputs), atol=1e-3)


def test_gradients_reach_lora_prompt_encoder_and_decoder_but_not_frozen_weights(images):
    sam = tiny_sam()
    sam.decode(sam.embed(images)).square().mean().backward()
    for name, parameter in sam.image_encoder.named_parameters():
        if "lora_A" in name:
            assert parameter.grad is not None
        if not parameter.requires_grad:
            assert parameter.grad is None, name
    assert sam.image_encoder.blocks[0].attn.qkv.q.lora_B["default"].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in sam.decoders[0].transformer.parameters())
    assert sam.prompt_encoder.no_mask_embed.weight.grad is not None  # the default prompt is learned


def test_frozen_encoder_runs_without_graph(images):
    sam = tiny_sam(adaptation="frozen")
    assert count_trainable(sam.image_encoder) == 0
    embeddings = sam.embed(images)
    assert not embeddings.requires_grad
    sam.decode(embeddings).sum().backward()
    assert sam.decoders[0].mask_tokens.weight.grad is not None


def test_adapters_add_exactly_the_bottleneck_parameters_and_start_as_identity():
    torch.manual_seed(0)
    lora_free = tiny_sam(adaptation="frozen")
    adapted = tiny_sam(adaptation="adapter")
    hidden = int(TINY_EMBED_DIM * 0.25)
    per_adapter = TINY_EMBED_DIM * hidden + hidden + hidden * TINY_EMBED_DIM + TINY_EMBED_DIM
    assert count_trainable(adapted.image_encoder) == len(adapted.image_encoder.blocks) * 2 * per_adapter
    inputs = torch.rand(1, 3, 64, 64)
    adapted.image_encoder.load_state_dict(
        {**adapted.image_encoder.state_dict(), **{
            key.replace("attn.", "attn.attention.").replace("mlp.", "mlp.mlp."): value
            for key, value in lora_free.image_encoder.state_dict().items()
        }}
    )
    assert torch.allclose(adapted.image_encoder(inputs), lora_free.image_encoder(inputs), atol=1e-5)


def test_gradient_checkpointing_changes_memory_not_results(images):
    plain, checkpointed = tiny_sam(), tiny_sam(gradient_checkpointing=True)  # same seed, same weights
    assert all(type(block).__name__ == "GradientCheckpointed" for block in checkpointed.image_encoder.blocks)
    outputs = []
    for model in (plain, checkpointed):
        logits = model.decode(model.embed(images))
        logits.square().mean().backward()
        outputs.append(logits.detach())
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    plain_grad = plain.image_encoder.blocks[0].attn.qkv.q.lora_A["default"].weight.grad
    checkpointed_grad = checkpointed.image_encoder.blocks[0].block.attn.qkv.q.lora_A["default"].weight.grad
    assert torch.allclose(plain_grad, checkpointed_grad, atol=1e-6)


def test_class_point_prompts_use_their_class_embedding():
    sam = tiny_sam(class_prompts=True)
    encoder = sam.prompt_encoder
    assert isinstance(encoder, ClassPromptEncoder) and len(encoder.point_embeddings) == NUM_CLASSES + 2
    coordinates = torch.tensor([[[10.0, 20.0], [30.0, 5.0], [0.0, 0.0]]])
    labels = torch.tensor([[2, 0, -1]])
    sparse, _ = sam.encode_prompts(points=(coordinates, labels), frame_size=None)
    position = encoder.pe_layer.forward_with_coords(coordinates + 0.5, encoder.input_image_size)
    assert torch.allclose(sparse[0, 0], position[0, 0] + encoder.point_embeddings[2].weight[0])
    assert torch.allclose(sparse[0, 1], position[0, 1] + encoder.point_embeddings[0].weight[0])
    assert torch.allclose(sparse[0, 2], encoder.not_a_point_embed.weight[0])
    assert torch.allclose(sparse[0, 3], encoder.not_a_point_embed.weight[0])  # SAM's padding point
    boxes = torch.tensor([[[1.0, 2.0, 20.0, 30.0]]])
    sparse, _ = sam.encode_prompts(boxes=boxes, box_labels=torch.tensor([[3]]))
    corners = encoder.pe_layer.forward_with_coords(boxes.view(1, 2, 2) + 0.5, encoder.input_image_size)[0]
    assert torch.allclose(sparse[0, 0], corners[0] + encoder.point_embeddings[-2].weight[0] + encoder.point_embeddings[3].weight[0])
    assert torch.allclose(sparse[0, 1], corners[1] + encoder.point_embeddings[-1].weight[0] + encoder.point_embeddings[3].weight[0])


def test_prompt_coordinates_map_pixel_centres_into_the_input_frame():
    sam = tiny_sam()  # input 64 px
    frame_points = torch.tensor([[0.0, 0.0], [31.0, 15.0]])
    mapped = sam.to_input_frame(frame_points, frame_size=(16, 32))
    # x: 32 -> 64 (scale 2), y: 16 -> 64 (scale 4); the pixel centre (c + 0.5) scales
    assert torch.allclose(mapped, torch.tensor([[0.5, 1.5], [62.5, 61.5]]))


def test_each_image_is_decoded_with_its_own_prompts(images):
    """SAM's decoder repeats each image for every prompt set; the adapted one pairs them."""
    sam = tiny_sam(class_prompts=True).eval()
    embeddings = sam.embed(images)
    coordinates = torch.tensor([[[3.0, 4.0]], [[20.0, 25.0]]])
    labels = torch.tensor([[1], [3]])
    together = sam.decode(embeddings, points=(coordinates, labels), frame_size=(32, 32))
    for index in range(2):
        alone = sam.decode(embeddings[index : index + 1], points=(coordinates[index : index + 1], labels[index : index + 1]),
                           frame_size=(32, 32))
        assert torch.allclose(together[index], alone[0], atol=1e-5)


def test_two_decoders_share_the_encoder_and_differ():
    sam = tiny_sam(num_decoders=2, decoder_init="random")
    assert len(sam.decoders) == 2
    first, second = (dict(decoder.named_parameters()) for decoder in sam.decoders)
    assert not torch.equal(first["mask_tokens.weight"], second["mask_tokens.weight"])
    embeddings = sam.embed(torch.rand(1, 1, 32, 32))
    assert not torch.allclose(sam.decode(embeddings, 0), sam.decode(embeddings, 1))


def test_zero_shot_per_class_decoding_never_predicts_unprompted_classes(images):
    sam = tiny_sam(class_tokens=False, adaptation="frozen").eval()
    assert sam.decoders[0].num_mask_tokens == 4
    valid = torch.tensor([[True, False, True], [False, False, False]])
    points = torch.full((2, 3, 2), 10.0)
    boxes = torch.tensor([2.0, 2.0, 20.0, 20.0]).expand(2, 3, 4)
    for prompt in ({"points": points}, {"boxes": boxes}):
        logits = sam.decode_per_class(sam.embed(images), valid, frame_size=(32, 32), multimask=True,
                                      output_size=(32, 32), **prompt)
        assert logits.shape == (2, 4, 32, 32)
        assert torch.equal(logits[:, 0], torch.zeros(2, 32, 32))
        predicted = logits.argmax(dim=1)
        assert not (predicted[0] == 2).any()
        assert (predicted[1] == 0).all()


def test_frozen_batchnorm_stays_in_eval_mode_when_the_method_trains():
    encoder = nn.Sequential(nn.Conv2d(3, 32, 1), nn.BatchNorm2d(32), nn.Conv2d(32, 32, 8, stride=8))
    template = tiny_sam()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    sam = AdaptedSAM(encoder, template.prompt_encoder, template.decoders, NUM_CLASSES, 64)
    sam.train()
    assert not encoder[1].training and sam.decoders[0].training
    encoder[1].weight.requires_grad_(True)
    sam.train()
    assert encoder[1].training


def test_samed_schedule_warms_up_linearly_then_decays_polynomially():
    schedule = warmup_poly_schedule(warmup_steps=10, total_steps=100)
    assert schedule(0.0) == pytest.approx(0.1)
    assert schedule(0.05) == pytest.approx(0.6)
    assert schedule(0.10) == pytest.approx(1.0)
    assert schedule(0.60) == pytest.approx((1 - 50 / 100) ** 0.9)
    assert schedule(1.0) == pytest.approx((1 - 90 / 100) ** 0.9)


@pytest.mark.parametrize("options, message", [
    ({"sam_model": "vit_b"}, "needs sam_checkpoint"),
    ({"sam_model": "tiny"}, "no pretrained weights"),
    ({"sam_model": "vit_x"}, "expected one of"),
    ({"sam_model": "tiny", "sam_random_init": True, "sam_checkpoint": "x.pth"}, "contradict"),
])
def test_a_sam_without_weights_refuses_to_start_unless_asked(options, message):
    task = TaskSpec(in_channels=1, num_classes=4, patch_size=(32, 32), total_steps=1, options=options)
    with pytest.raises(ValueError, match=message):
        sam_for(task, report=False)
