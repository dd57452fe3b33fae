"""UniMatch: two strong views with their own CutMix boxes and a feature-perturbation stream, all
guided by the confident part of one weak prediction."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import baselines.unimatch as unimatch_module
from baselines.unimatch import UniMatch, UniMatchParams
from bench import Batch, Progress, TaskSpec, UNet, UNetConfig, ce_dice_loss, cutmix_boxes
from bench.cli import main

NUM_CLASSES = 3
TASK = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(32, 32), total_steps=10, network_widths=(4, 8, 16))
UNLABELED = 6


class Recorder(nn.Module):
    """Wraps a network, keeping every call's input, keyword arguments and outputs (with gradients)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.inputs: list[torch.Tensor] = []
        self.kwargs: list[dict] = []
        self.outputs: list = []

    def forward(self, images: torch.Tensor, **kwargs):
        output = self.network(images, **kwargs)
        for tensor in output if isinstance(output, tuple) else (output,):
            if tensor.requires_grad:
                tensor.retain_grad()
        self.inputs.append(images.detach().clone())
        self.kwargs.append(kwargs)
        self.outputs.append(output)
        return output


def make_batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    views = {view: torch.rand(UNLABELED, 1, 32, 32, generator=generator) for view in ("weak", "strong", "strong2")}
    return Batch(
        labeled_images=torch.rand(2, 1, 32, 32, generator=generator),
        labels=torch.randint(0, NUM_CLASSES, (2, 32, 32), generator=generator),
        unlabeled=views,
    )


def reference_dice(probs: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    terms = []
    for class_index in range(probs.shape[1]):
        class_probs = probs[:, class_index][keep]
        class_target = (target[keep] == class_index).float()
        dice = (2 * (class_probs * class_target).sum() + 1e-5) / ((class_probs**2).sum() + (class_target**2).sum() + 1e-5)
        terms.append(1 - dice)
    return torch.stack(terms).mean()


@pytest.fixture
def recorded_step(monkeypatch):
    """One training step with every forward pass and every CutMix box recorded."""
    batch = make_batch()
    network = UNet(UNetConfig(1, NUM_CLASSES, (4, 8, 16), dropout=(0.0, 0.0, 0.0)))
    torch.manual_seed(0)
    with torch.no_grad():
        clean, _ = network(torch.cat([batch.labeled_images, batch.unlabeled["weak"]]), feature_perturbation=True)
    threshold = float(torch.softmax(clean[2:], dim=1).max(dim=1).values.median())

    method = UniMatch(UniMatchParams(confidence_threshold=threshold), TASK)
    method.network = Recorder(network)
    method.train()
    boxes: list[torch.Tensor] = []

    def recording_boxes(batch_size, height, width, *args, **kwargs):
        boxes.append(cutmix_boxes(batch_size, height, width, probability=1.0))
        return boxes[-1].clone()

    monkeypatch.setattr(unimatch_module, "cutmix_boxes", recording_boxes)
    torch.manual_seed(0)
    output = method.training_step(batch, Progress(0, 10))
    output.loss.backward()
    return batch, method, boxes, output, threshold


def test_two_strong_views_use_their_own_cutmix_boxes(recorded_step):
    batch, method, boxes, _, _ = recorded_step
    assert len(boxes) == 2
    assert not torch.equal(boxes[0], boxes[1])
    mixed_first, mixed_second = method.network.inputs[1].chunk(2)
    for mixed, view, box in ((mixed_first, "strong", boxes[0]), (mixed_second, "strong2", boxes[1])):
        images = batch.unlabeled[view]
        inside = box.bool()[:, None]
        assert torch.equal(mixed, torch.where(inside, images.roll(1, 0), images))


def test_loss_matches_independent_computation_with_each_label_mixed_by_its_own_box(recorded_step):
    batch, method, boxes, output, threshold = recorded_step
    (clean_logits, perturbed_logits), strong_logits = method.network.outputs
    assert method.network.kwargs[0] == {"feature_perturbation": True}
    weak_confidence, weak_labels = torch.softmax(clean_logits.detach()[2:], dim=1).max(dim=1)
    first_logits, second_logits = strong_logits.detach().chunk(2)

    def strong_term(logits: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        inside = box.bool()
        labels = torch.where(inside, weak_labels.roll(1, 0), weak_labels)
        confidence = torch.where(inside, weak_confidence.roll(1, 0), weak_confidence)
        return reference_dice(torch.softmax(logits, dim=1), labels, confidence >= threshold)

    supervised = ce_dice_loss(clean_logits.detach()[:2], batch.labels)
    feature = reference_dice(torch.softmax(perturbed_logits.detach()[2:], dim=1), weak_labels, weak_confidence >= threshold)
    own_boxes = strong_term(first_logits, boxes[0]) + strong_term(second_logits, boxes[1])
    expected = (supervised + 0.25 * own_boxes + 0.5 * feature) / 2
    assert torch.allclose(output.loss.detach(), expected, atol=1e-6)
    swapped_boxes = strong_term(first_logits, boxes[1]) + strong_term(second_logits, boxes[0])
    assert not torch.allclose(output.loss.detach(), (supervised + 0.25 * swapped_boxes + 0.5 * feature) / 2, atol=1e-6)


def test_feature_perturbation_stream_is_trained_on_confident_weak_pixels_only(recorded_step):
    _, method, boxes, _, threshold = recorded_step
    (clean_logits, perturbed_logits), strong_logits = method.network.outputs
    weak_confidence = torch.softmax(clean_logits.detach()[2:], dim=1).max(dim=1).values
    confident = weak_confidence >= threshold
    assert 0 < confident.sum() < confident.numel()
    perturbed_gradient = perturbed_logits.grad.abs().sum(dim=1)
    assert torch.all(perturbed_gradient[:2] == 0)  # labeled features are perturbed but not supervised
    assert torch.all(perturbed_gradient[2:][~confident] == 0)
    assert torch.all(perturbed_gradient[2:][confident] > 0)
    assert torch.all(clean_logits.grad[2:] == 0)  # weak predictions are targets only

    strong_gradient = strong_logits.grad.abs().sum(dim=1)
    for gradient, box in zip(strong_gradient.chunk(2), boxes):
        mixed_confidence = torch.where(box.bool(), weak_confidence.roll(1, 0), weak_confidence)
        assert torch.all(gradient[mixed_confidence < threshold] == 0)
        assert torch.all(gradient[mixed_confidence >= threshold] > 0)


def test_search_space_names_real_parameters():
    optuna = pytest.importorskip("optuna")
    values = {"confidence_threshold": 0.9, "image_perturbation_weight": 1.0, "feature_perturbation_weight": 0.3}
    space = UniMatch.search_space(optuna.trial.FixedTrial(values))
    assert UniMatch.params_from_dict(space) == UniMatchParams(**values)


def test_smoke_run(tmp_path):
    code = main(["run", "--methods", "unimatch", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
                 "--budget", "smoke", "--out", str(tmp_path), "--no-progress", "--no-estimate"])
    assert code == 0
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["config"]["method"] == "unimatch"
    assert math.isfinite(summary["metrics"]["dice"])
