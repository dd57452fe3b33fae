"""SAM checkpoints: SAM-format files round-trip into the adapted model, broken files fail clearly,
position embeddings resize as SAMed's do, and the bundled LiteMedSAM weights are verified, load
strictly and are really pretrained (they beat random weights on real ACDC slices)."""
from __future__ import annotations

import hashlib
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from bench.method import TaskSpec
from bench.sam import BACKBONES, CheckpointError, lite_medsam_checkpoint, read_state_dict, sam_for
from bench.sam.checkpoints import LITE_MEDSAM_SHA256, LITE_MEDSAM_SIZE, resize_position_embeddings, section, verify_file
from bench.sam.lite_medsam import build_tiny_vit
from bench.sam.model import Backbone, build_mask_decoder
from bench.sam.tiny import build_tiny_encoder
from conftest import real_data_root

NUM_CLASSES = 4


def task(**options) -> TaskSpec:
    return TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(32, 32), total_steps=10, options=options)


def save_tiny_sam_checkpoint(path: Path, seed: int = 3) -> dict[str, nn.Module]:
    """A checkpoint in SAM's own layout (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``,
    fused ``qkv``), from plain ``segment_anything`` modules with non-default weights."""
    torch.manual_seed(seed)
    tiny = BACKBONES["tiny"]
    modules = {
        "image_encoder": build_tiny_encoder(),
        "prompt_encoder": PromptEncoder(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(64, 64), mask_in_chans=8),
        "mask_decoder": build_mask_decoder(tiny, num_mask_tokens=4),
    }
    state = {}
    for prefix, module in modules.items():
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        state.update({f"{prefix}.{key}": value for key, value in module.state_dict().items()})
    torch.save(state, path)
    return modules


def test_a_sam_format_checkpoint_round_trips_into_the_adapted_model(tmp_path):
    path = tmp_path / "tiny_sam.pth"
    modules = save_tiny_sam_checkpoint(path)
    sam = sam_for(task(sam_model="tiny", sam_checkpoint=str(path)), report=False).eval()
    assert sam.result_flags == ()
    inputs = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        # LoRA's B starts at zero: the split-qkv, LoRA-wrapped encoder computes what the file's encoder does
        assert torch.allclose(sam.image_encoder(inputs), modules["image_encoder"](inputs), atol=1e-5)
    assert all(torch.equal(value, sam.prompt_encoder.state_dict()[key]) for key, value in modules["prompt_encoder"].state_dict().items())
    # 4 classes = SAM's 4 mask tokens: the whole decoder loads (SAMed's strict-load path)
    assert all(torch.equal(value, sam.decoders[0].state_dict()[key]) for key, value in modules["mask_decoder"].state_dict().items())


def test_decoder_token_parts_load_only_when_the_class_count_matches(tmp_path):
    path = tmp_path / "tiny_sam.pth"
    modules = save_tiny_sam_checkpoint(path)
    five_classes = TaskSpec(1, 5, (32, 32), 10, options={"sam_model": "tiny", "sam_checkpoint": str(path)})
    decoder = sam_for(five_classes, report=False).decoders[0]
    file_decoder = modules["mask_decoder"].state_dict()
    assert torch.equal(decoder.state_dict()["transformer.layers.0.self_attn.q_proj.weight"],
                       file_decoder["transformer.layers.0.self_attn.q_proj.weight"])
    assert decoder.mask_tokens.weight.shape == (5, 32)
    assert not torch.equal(decoder.output_hypernetworks_mlps[0].layers[0].weight,
                           file_decoder["output_hypernetworks_mlps.0.layers.0.weight"])
    random_decoders = sam_for(task(sam_model="tiny", sam_checkpoint=str(path)), decoder_init="random", report=False)
    assert not torch.equal(random_decoders.decoders[0].state_dict()["transformer.layers.0.self_attn.q_proj.weight"],
                           file_decoder["transformer.layers.0.self_attn.q_proj.weight"])


def test_samed_drops_the_token_parts_when_the_input_size_differs_from_the_checkpoints(tmp_path, monkeypatch):
    # A small ViT backbone trained at 64 px (SAM's ViTs at 1024), used at 64 and at 32 (SAMed's 512).
    def build_encoder(image_size: int) -> nn.Module:
        return ImageEncoderViT(img_size=image_size, patch_size=8, embed_dim=16, depth=2, num_heads=2, out_chans=32,
                               norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=2,
                               global_attn_indexes=(1,))

    backbone = Backbone("vit-test", build_encoder, 64, False, 8, "sam", "required", prompt_dim=32, mask_in_chans=8,
                        decoder_mlp_dim=64, decoder_heads=2, iou_hidden_dim=32)
    monkeypatch.setitem(BACKBONES, "vit-test", backbone)
    torch.manual_seed(5)
    modules = {
        "image_encoder": build_encoder(64),
        "prompt_encoder": PromptEncoder(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(64, 64), mask_in_chans=8),
        "mask_decoder": build_mask_decoder(backbone, num_mask_tokens=4),
    }
    state = {f"{prefix}.{key}": value + 0.05 for prefix, module in modules.items() for key, value in module.state_dict().items()}
    path = tmp_path / "vit_test.pth"
    torch.save(state, path)
    file_decoder = section(state, "mask_decoder")

    def decoder(decoder_init: str, vit_image_size: int) -> dict[str, torch.Tensor]:
        options = {"sam_model": "vit-test", "sam_checkpoint": str(path)}
        return sam_for(task(**options), decoder_init=decoder_init, vit_image_size=vit_image_size,
                       report=False).decoders[0].state_dict()

    def loaded(weights: dict[str, torch.Tensor], key: str) -> bool:
        return torch.equal(weights[key], file_decoder[key])

    token_keys = ["mask_tokens.weight", "output_hypernetworks_mlps.0.layers.0.weight", "iou_prediction_head.layers.0.weight"]
    shared_keys = ["transformer.layers.0.self_attn.q_proj.weight", "output_upscaling.0.weight"]
    at_checkpoint_size, resized = decoder("samed", 64), decoder("samed", 32)
    assert all(loaded(at_checkpoint_size, key) for key in token_keys + shared_keys)  # SAMed's strict load
    assert all(loaded(resized, key) for key in shared_keys)  # load_from keeps these ...
    assert not any(loaded(resized, key) for key in token_keys)  # ... and drops these
    assert all(loaded(decoder("checkpoint", 32), key) for key in token_keys)  # every part that fits


def test_class_prompt_embeddings_start_from_sams_negative_positive_and_corner_embeddings(tmp_path):
    path = tmp_path / "tiny_sam.pth"
    file_embeddings = save_tiny_sam_checkpoint(path)["prompt_encoder"].point_embeddings
    encoder = sam_for(task(sam_model="tiny", sam_checkpoint=str(path)), class_prompts=True, report=False).prompt_encoder
    expected = [0, 1, 1, 1, 2, 3]  # background <- negative, classes <- positive, corners <- corners
    for index, source in enumerate(expected):
        assert torch.equal(encoder.point_embeddings[index].weight, file_embeddings[source].weight)


def test_the_harness_state_dict_round_trips(tmp_path):
    sam = sam_for(task(sam_model="tiny", sam_random_init=True), class_prompts=True, num_decoders=2, report=False)
    with torch.no_grad():
        sam.image_encoder.blocks[1].attn.qkv.v.lora_B["default"].weight.normal_()
    torch.save(sam.state_dict(), tmp_path / "best.pt")
    torch.manual_seed(123)
    restored = sam_for(task(sam_model="tiny", sam_random_init=True), class_prompts=True, num_decoders=2, report=False)
    restored.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    images = torch.rand(1, 1, 32, 32)
    sam.eval(), restored.eval()
    assert torch.allclose(sam(images, decoder_index=1), restored(images, decoder_index=1))


def test_missing_corrupt_and_mismatched_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"definitely not a zip archive" * 10)
    with pytest.raises(CheckpointError, match="corrupt.pth: not a readable PyTorch checkpoint"):
        sam_for(task(sam_model="tiny", sam_checkpoint=str(corrupt)), report=False)
    truncated = tmp_path / "truncated.pth"
    save_tiny_sam_checkpoint(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        read_state_dict(truncated)
    wider = tmp_path / "wider.pth"
    torch.manual_seed(0)
    encoder = ImageEncoderViT(img_size=64, patch_size=8, embed_dim=48, depth=2, num_heads=2, out_chans=32,
                              use_rel_pos=True, window_size=4, global_attn_indexes=(1,))
    torch.save({f"image_encoder.{k}": v for k, v in encoder.state_dict().items()}, wider)
    with pytest.raises(CheckpointError, match=r"'image_encoder\.pos_embed' has shape \(1, 8, 8, 48\) but this model expects \(1, 8, 8, 32\)"):
        sam_for(task(sam_model="tiny", sam_checkpoint=str(wider)), report=False)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(CheckpointError, match="expected a dict of tensors"):
        read_state_dict(not_a_state_dict)


def test_position_embeddings_are_resized_as_samed_does():
    build = partial(ImageEncoderViT, patch_size=8, embed_dim=16, depth=2, num_heads=2, out_chans=8,
                    norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=2, global_attn_indexes=(1,))
    torch.manual_seed(0)
    trained_at_64, used_at_32 = build(img_size=64), build(img_size=32)
    state = {key: torch.randn_like(value) for key, value in trained_at_64.state_dict().items()}
    resized = resize_position_embeddings(state, used_at_32)
    expected_pos = F.interpolate(state["pos_embed"].permute(0, 3, 1, 2), (4, 4), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    assert torch.allclose(resized["pos_embed"], expected_pos)
    expected_rel = F.interpolate(state["blocks.1.attn.rel_pos_h"][None, None], (7, 8), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(resized["blocks.1.attn.rel_pos_h"], expected_rel)  # global block: 2*8-1 -> 2*4-1
    assert torch.equal(resized["blocks.0.attn.rel_pos_w"], state["blocks.0.attn.rel_pos_w"])  # windowed: unchanged
    used_at_32.load_state_dict(resized)


def test_lite_medsam_weights_are_verified_and_load_strictly():
    path = lite_medsam_checkpoint()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == LITE_MEDSAM_SHA256 and path.stat().st_size == LITE_MEDSAM_SIZE
    state = read_state_dict(path)
    prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16)
    prompt_encoder.load_state_dict(section(state, "prompt_encoder"), strict=True)
    mask_decoder = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                               transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    mask_decoder.load_state_dict(section(state, "mask_decoder"), strict=True)
    build_tiny_vit().load_state_dict(section(state, "image_encoder"), strict=True)
    sam = sam_for(task(), class_tokens=False, adaptation="frozen", report=False)
    assert sam.image_size == 256 and sam.result_flags == ()
    assert torch.equal(sam.decoders[0].state_dict()["iou_token.weight"], state["mask_decoder.iou_token.weight"])


def test_a_modified_lite_medsam_file_is_refused(tmp_path):
    copy = tmp_path / "lite_medsam.pth"
    shutil.copyfile(lite_medsam_checkpoint(), copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        verify_file(copy, LITE_MEDSAM_SIZE, LITE_MEDSAM_SHA256)
    copy.write_bytes(bytes(data[:-10]))
    with pytest.raises(CheckpointError, match="truncated"):
        verify_file(copy, LITE_MEDSAM_SIZE, LITE_MEDSAM_SHA256)


def acdc_slices_with_every_class(root: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    import h5py

    images, labels = [], []
    for path in sorted((root / "data" / "slices").glob("*.h5")):
        with h5py.File(path, "r") as handle:
            label = handle["label"][()]
            if len(np.unique(label)) == NUM_CLASSES and min((label == c).sum() for c in range(1, NUM_CLASSES)) > 50:
                images.append(torch.from_numpy(handle["image"][()].astype(np.float32)))
                labels.append(torch.from_numpy(label.astype(np.int64)))
        if len(images) == count:
            break
    size = (256, 256)
    image_batch = torch.stack([F.interpolate(i[None, None], size, mode="bilinear", align_corners=False)[0] for i in images])
    label_batch = torch.stack([F.interpolate(l[None, None].float(), size, mode="nearest")[0, 0].long() for l in labels])
    return image_batch, label_batch


def foreground_dice(logits: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = logits.argmax(dim=1)
    scores = []
    for class_id in range(1, NUM_CLASSES):
        overlap = ((predicted == class_id) & (labels == class_id)).sum().item()
        scores.append(2 * overlap / ((predicted == class_id).sum().item() + (labels == class_id).sum().item()))
    return float(np.mean(scores))


def test_pretrained_lite_medsam_beats_random_weights_on_acdc_with_box_prompts():
    from bench.prompts import prompts_from_labels

    images, labels = acdc_slices_with_every_class(real_data_root("acdc"), count=2)
    prompts = prompts_from_labels(labels, NUM_CLASSES)
    scores = {}
    for name, options in (("pretrained", {}), ("random", {"sam_random_init": True})):
        torch.manual_seed(0)
        sam = sam_for(task(sam_model="lite-medsam", **options), class_tokens=False, adaptation="frozen", report=False).eval()
        with torch.no_grad():
            logits = sam.decode_per_class(sam.embed(images), prompts.valid[:, 1:], boxes=prompts.boxes[:, 1:],
                                          frame_size=prompts.frame_size, output_size=(256, 256))
        scores[name] = foreground_dice(logits, labels)
    # LiteMedSAM outlines RV and LV cavities almost exactly from their boxes; the myocardium's box
    # encloses the LV, which LiteMedSAM segments instead, so the mean stays well below 1
    assert scores["pretrained"] > 0.55, scores
    assert scores["pretrained"] > scores["random"] + 0.3, scores
