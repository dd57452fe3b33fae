"""SAMed: supervised LoRA SAM on labeled data only, 0.2 CE + 0.8 Dice on the low-resolution logits,
AdamW with warm-up; smoke run through the CLI with the tiny SAM."""
from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
import torch.nn.functional as F

from bench import Batch, Progress, TaskSpec
from bench.cli import main
from bench.method import RANDOM_INIT_SAM
from methods.samed import SAMed, SAMedParams
from sam_reference_losses import reference_dice

NUM_CLASSES = 4


def tiny_samed(patch: int = 64, total_steps: int = 1000, **params) -> SAMed:
    torch.manual_seed(0)
    task = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(patch, patch), total_steps=total_steps,
                    options={"sam_model": "tiny", "sam_random_init": True})
    return SAMed(SAMedParams(**params), task)


def batch_at(size: int) -> Batch:
    generator = torch.Generator().manual_seed(2)
    return Batch(labeled_images=torch.rand(2, 1, size, size, generator=generator),
                 labels=torch.randint(0, NUM_CLASSES, (2, size, size), generator=generator))



def test_loss_is_point_two_ce_plus_point_eight_dice_on_low_resolution_logits():
    method = tiny_samed()
    batch = batch_at(64)
    loss = method.training_step(batch, Progress(0, 1000)).loss
    low_res_logits = method.sam.decode(method.sam.embed(batch.labeled_images))
    assert low_res_logits.shape[-2:] == (32, 32)  # the tiny SAM's decoder: 4 x its 8 x 8 grid
    low_res_labels = batch.labels[:, 1::2, 1::2]  # nearest (pixel-centre) down-sampling of 64 -> 32
    expected = 0.2 * F.cross_entropy(low_res_logits, low_res_labels) + 0.8 * reference_dice(
        torch.softmax(low_res_logits, dim=1), low_res_labels)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_loss_at_patch_resolution_when_asked():
    method = tiny_samed(loss_at_low_resolution=False, dice_weight=0.5)
    batch = batch_at(64)
    loss = method.training_step(batch, Progress(0, 1000)).loss
    logits = F.interpolate(method.sam.decode(method.sam.embed(batch.labeled_images)), size=(64, 64), mode="bilinear",
                           align_corners=False)
    expected = 0.5 * F.cross_entropy(logits, batch.labels) + 0.5 * reference_dice(torch.softmax(logits, 1), batch.labels)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_only_lora_prompt_encoder_and_decoder_train_with_adamw_and_warmup():
    method = tiny_samed(total_steps=1000)
    (spec,) = method.optimizers()
    optimizer = spec.optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.005 and group["weight_decay"] == 0.1 and group["betas"] == (0.9, 0.999)
    optimized = {id(p) for p in group["params"]}
    for name, parameter in method.named_parameters():
        in_encoder = name.startswith("sam.image_encoder.")
        expected = (not in_encoder) or "lora_" in name
        assert (id(parameter) in optimized) == expected, name
    assert spec.lr_lambda(0.0) == pytest.approx(1 / 250)
    assert spec.lr_lambda(0.25) == pytest.approx(1.0)
    assert spec.lr_lambda(1.0) == pytest.approx((1 - 750 / 1000) ** 0.9)


def test_training_moves_lora_and_prediction_is_at_patch_size():
    method = tiny_samed()
    batch = batch_at(64)
    (spec,) = method.optimizers()
    lora_b = method.sam.image_encoder.blocks[0].attn.qkv.v.lora_B["default"].weight
    frozen = method.sam.image_encoder.blocks[0].attn.qkv.v.base_layer.weight.clone()
    method.training_step(batch, Progress(0, 1000)).loss.backward()
    spec.optimizer.step()
    assert lora_b.abs().sum() > 0 and torch.equal(method.sam.image_encoder.blocks[0].attn.qkv.v.base_layer.weight, frozen)
    method.eval()
    assert method.predict(batch.labeled_images[:, :, :48, :48]).shape == (2, NUM_CLASSES, 48, 48)


def test_search_space_names_real_hyper_parameters():
    values = SAMed.search_space(optuna.trial.FixedTrial({"base_lr": 1e-3, "lora_rank": 8, "dice_weight": 0.7}))
    assert SAMed.params_from_dict(values) == SAMedParams(base_lr=1e-3, lora_rank=8, dice_weight=0.7)


def test_smoke_run_through_the_cli(tmp_path, smoke_args):
    assert main(["run", "--methods", "samed", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
                 "--out", str(tmp_path), "--sam-model", "tiny", "--sam-random-init", *smoke_args]) == 0
    (summary_path,) = tmp_path.rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["method"] == "samed" and summary["family"] == "sam" and RANDOM_INIT_SAM in summary["flags"]
    dice = [value for key, value in summary["metrics"].items() if key.startswith("dice")]
    assert dice and all(math.isfinite(value) for value in dice)
