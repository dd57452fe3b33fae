"""FixMatch: confident weak pseudo-labels supervise a CutMixed strong view; the rest is ignored."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import baselines.fixmatch as fixmatch_module
from baselines.fixmatch import FixMatch, FixMatchParams
from bench import Batch, Progress, TaskSpec, UNet, UNetConfig, ce_dice_loss
from bench.cli import main

NUM_CLASSES = 3
TASK = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(32, 32), total_steps=10, network_widths=(4, 8, 16))


class Recorder(nn.Module):
    """Wraps a network, keeping every call's input and output (outputs keep their gradients)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor, **kwargs):
        output = self.network(images, **kwargs)
        if output.requires_grad:
            output.retain_grad()
        self.inputs.append(images.detach().clone())
        self.outputs.append(output)
        return output


def deterministic_unet() -> UNet:
    return UNet(UNetConfig(1, NUM_CLASSES, (4, 8, 16), dropout=(0.0, 0.0, 0.0)))


def make_batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    return Batch(
        labeled_images=torch.rand(2, 1, 32, 32, generator=generator),
        labels=torch.randint(0, NUM_CLASSES, (2, 32, 32), generator=generator),
        unlabeled={"weak": torch.rand(3, 1, 32, 32, generator=generator),
                   "strong": torch.rand(3, 1, 32, 32, generator=generator)},
    )


def fixed_box() -> torch.Tensor:
    box = torch.zeros(3, 32, 32)
    box[0, :, :16] = 1
    box[2, 8:24, 8:24] = 1
    return box


def median_weak_confidence(network: nn.Module, batch: Batch) -> float:
    with torch.no_grad():
        logits = network(torch.cat([batch.labeled_images, batch.unlabeled["weak"]]))[2:]
    return float(torch.softmax(logits, dim=1).max(dim=1).values.median())


def test_unconfident_pixels_get_no_gradient_and_mixed_targets_follow_the_box(monkeypatch):
    torch.manual_seed(0)
    batch = make_batch()
    network = deterministic_unet()
    threshold = median_weak_confidence(network, batch)
    method = FixMatch(FixMatchParams(confidence_threshold=threshold), TASK)
    method.network = Recorder(network)
    method.train()
    box = fixed_box()
    monkeypatch.setattr(fixmatch_module, "cutmix_boxes", lambda *args, **kwargs: box.clone())

    output = method.training_step(batch, Progress(0, 10))
    output.loss.backward()

    joint_logits, strong_logits = method.network.outputs
    weak_probs = torch.softmax(joint_logits.detach()[2:], dim=1)
    weak_confidence, weak_labels = weak_probs.max(dim=1)
    inside = box.bool()
    mixed_confidence = torch.where(inside, weak_confidence.roll(1, 0), weak_confidence)
    mixed_labels = torch.where(inside, weak_labels.roll(1, 0), weak_labels)
    strong = batch.unlabeled["strong"]
    assert torch.equal(method.network.inputs[1], torch.where(inside[:, None], strong.roll(1, 0), strong))

    confident = mixed_confidence >= threshold
    assert 0 < confident.sum() < confident.numel()
    pixel_gradient = strong_logits.grad.abs().sum(dim=1)
    assert torch.all(pixel_gradient[~confident] == 0)
    assert torch.all(pixel_gradient[confident] > 0)
    # pseudo-labels are targets, not predictions to train: the weak logits receive no gradient
    assert torch.all(joint_logits.grad[2:] == 0)
    assert joint_logits.grad[:2].abs().sum() > 0

    # the loss, recomputed independently: (L_x + L_u) / 2 with Dice on the confident pixels only
    strong_probs = torch.softmax(strong_logits.detach(), dim=1)
    unlabeled_terms = []
    for class_index in range(NUM_CLASSES):
        probs = strong_probs[:, class_index][confident]
        target = (mixed_labels[confident] == class_index).float()
        dice = (2 * (probs * target).sum() + 1e-5) / ((probs**2).sum() + (target**2).sum() + 1e-5)
        unlabeled_terms.append(1 - dice)
    unlabeled_loss = torch.stack(unlabeled_terms).mean()
    supervised_loss = ce_dice_loss(joint_logits.detach()[:2], batch.labels)
    assert torch.allclose(output.loss.detach(), (supervised_loss + unlabeled_loss) / 2, atol=1e-6)


def test_search_space_names_real_parameters():
    optuna = pytest.importorskip("optuna")
    trial = optuna.trial.FixedTrial({"confidence_threshold": 0.9, "unlabeled_weight": 2.0, "cutmix_probability": 0.3})
    space = FixMatch.search_space(trial)
    assert FixMatch.params_from_dict(space) == FixMatchParams(0.9, 2.0, 0.3)


def test_smoke_run(tmp_path):
    code = main(["run", "--methods", "fixmatch", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
                 "--budget", "smoke", "--out", str(tmp_path), "--no-progress", "--no-estimate"])
    assert code == 0
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["config"]["method"] == "fixmatch"
    assert math.isfinite(summary["metrics"]["dice"])
