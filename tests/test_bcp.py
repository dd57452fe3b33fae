"""BCP: labeled copy-paste pre-training, then bidirectional copy-paste with an EMA teacher's
largest-component pseudo-labels; image and label always mixed by one mask."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import baselines.bcp as bcp_module
from baselines.bcp import BCP, BCPParams, copy_paste_loss
from bench import Batch, Progress, TaskSpec, UNet, UNetConfig, copy_paste_mask, largest_component_per_class, make_teacher
from bench.budget import resolve_budget
from bench.cli import main

NUM_CLASSES = 3
TOTAL_STEPS = 4


class Recorder(nn.Module):
    """Wraps a network, keeping every call's input and output."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.network(images)
        self.inputs.append(images.detach().clone())
        self.outputs.append(output.detach().clone())
        return output


def make_method(pretrain_fraction: float = 0.5) -> BCP:
    task = TaskSpec(1, NUM_CLASSES, (32, 32), TOTAL_STEPS, network_widths=(4, 8, 16))
    method = BCP(BCPParams(pretrain_fraction=pretrain_fraction), task)
    student = UNet(UNetConfig(1, NUM_CLASSES, (4, 8, 16), dropout=(0.0, 0.0, 0.0)))
    method.network = Recorder(student)
    method.teacher = Recorder(make_teacher(student))
    method.train()
    return method


def make_batch(seed: int = 0, unlabeled_seed: int | None = None) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    labeled = torch.rand(4, 1, 32, 32, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (4, 32, 32), generator=generator)
    unlabeled_generator = torch.Generator().manual_seed(seed if unlabeled_seed is None else unlabeled_seed)
    unlabeled = torch.rand(4, 1, 32, 32, generator=unlabeled_generator) + 2.0
    return Batch(labeled_images=labeled, labels=labels, unlabeled={"weak": unlabeled})


@pytest.fixture
def recorded_losses(monkeypatch):
    """Every mask drawn and every ``copy_paste_loss`` call, with the labels it was given."""
    masks: list[torch.Tensor] = []
    calls: list[tuple] = []

    def recording_mask(*args, **kwargs):
        masks.append(copy_paste_mask(*args, **kwargs))
        return masks[-1].clone()

    def recording_loss(logits, mixed_labels, mask, weight_where_one, weight_where_zero):
        calls.append((mixed_labels.clone(), mask.clone(), weight_where_one, weight_where_zero))
        return copy_paste_loss(logits, mixed_labels, mask, weight_where_one, weight_where_zero)

    monkeypatch.setattr(bcp_module, "copy_paste_mask", recording_mask)
    monkeypatch.setattr(bcp_module, "copy_paste_loss", recording_loss)
    return masks, calls


def test_copy_paste_loss_matches_official_mix_loss_computed_independently():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, NUM_CLASSES, 12, 12, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (2, 12, 12), generator=generator)
    mask = copy_paste_mask(12, 12, generator=generator)
    probs = torch.softmax(logits, dim=1)
    pixel_ce = -torch.log(probs.gather(1, labels[:, None]))[:, 0]
    expected_dice = expected_ce = 0.0
    for region, weight in ((mask == 1, 0.5), (mask == 0, 1.0)):
        keep = region.expand(2, 12, 12)
        terms = []
        for class_index in range(NUM_CLASSES):
            class_probs, class_target = probs[:, class_index][keep], (labels[keep] == class_index).float()
            dice = (2 * (class_probs * class_target).sum() + 1e-5) / ((class_probs**2).sum() + class_target.sum() + 1e-5)
            terms.append(1 - dice)
        expected_dice += weight * torch.stack(terms).mean()
        expected_ce += weight * pixel_ce[keep].mean()
    loss = copy_paste_loss(logits, labels, mask, 0.5, 1.0)
    assert torch.allclose(loss, (expected_dice + expected_ce) / 2, atol=1e-5)


def test_pretraining_mixes_labeled_halves_and_ignores_unlabeled_data(recorded_losses):
    masks, calls = recorded_losses
    method = make_method()
    batch = make_batch()
    torch.manual_seed(0)
    loss = method.training_step(batch, Progress(0, TOTAL_STEPS)).loss
    mask = masks[0]
    images, labels = batch.labeled_images, batch.labels
    assert torch.equal(method.network.inputs[0], torch.where(mask.bool(), images[:2], images[2:]))
    mixed_labels, loss_mask, weight_one, weight_zero = calls[0]
    assert torch.equal(mixed_labels, torch.where(mask.bool(), labels[:2], labels[2:]))
    assert torch.equal(loss_mask, mask) and (weight_one, weight_zero) == (1.0, 1.0)
    assert method.teacher.inputs == []  # no teacher before the stage switch

    torch.manual_seed(0)
    other_unlabeled = make_batch(unlabeled_seed=7)
    assert torch.equal(method.training_step(other_unlabeled, Progress(0, TOTAL_STEPS)).loss, loss)


def test_bidirectional_copy_paste_uses_one_mask_and_complementary_unlabeled_regions(recorded_losses):
    masks, calls = recorded_losses
    method = make_method()
    batch = make_batch()
    method.training_step(batch, Progress(TOTAL_STEPS // 2, TOTAL_STEPS))
    assert len(masks) == 1
    mask = masks[0].bool()
    labeled, labels, unlabeled = batch.labeled_images, batch.labels, batch.unlabeled["weak"]
    pseudo_a, pseudo_b = (largest_component_per_class(logits.argmax(dim=1), NUM_CLASSES) for logits in method.teacher.outputs)
    assert torch.equal(method.teacher.inputs[0], unlabeled[:2]) and torch.equal(method.teacher.inputs[1], unlabeled[2:])

    inward_input, outward_input = method.network.inputs
    assert torch.equal(inward_input, torch.where(mask, unlabeled[:2], labeled[:2]))
    assert torch.equal(outward_input, torch.where(mask, labeled[2:], unlabeled[2:]))
    (inward_labels, inward_mask, inward_one, inward_zero), (outward_labels, outward_mask, outward_one, outward_zero) = calls
    assert torch.equal(inward_labels, torch.where(mask, pseudo_a, labels[:2]))
    assert torch.equal(outward_labels, torch.where(mask, labels[2:], pseudo_b))
    assert torch.equal(inward_mask, masks[0]) and torch.equal(outward_mask, masks[0])

    # unlabeled pixels (weight alpha) lie where M = 1 inward and where M = 0 outward: together, every pixel once
    alpha = method.params.unlabeled_weight
    assert (inward_one, inward_zero) == (alpha, 1.0) and (outward_one, outward_zero) == (1.0, alpha)
    assert torch.equal(inward_input[:, 0][:, mask], unlabeled[:2, 0][:, mask])
    assert torch.equal(outward_input[:, 0][:, ~mask], unlabeled[2:, 0][:, ~mask])


def test_teacher_starts_as_the_pretrained_student_then_follows_by_ema():
    method = make_method(pretrain_fraction=0.5)
    switch = method.pretrain_steps
    assert switch == TOTAL_STEPS // 2
    optimizer = torch.optim.SGD(method.network.parameters(), lr=0.1)
    initial_teacher = [p.clone() for p in method.teacher.parameters()]
    for step in range(switch):
        method.training_step(make_batch(step), Progress(step, TOTAL_STEPS)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        method.on_step_end(Progress(step, TOTAL_STEPS))
    assert all(torch.equal(a, b) for a, b in zip(initial_teacher, method.teacher.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(method.network.parameters(), method.teacher.parameters()))

    method.training_step(make_batch(switch), Progress(switch, TOTAL_STEPS)).loss.backward()
    assert all(torch.equal(a, b) for a, b in zip(method.network.parameters(), method.teacher.parameters()))
    teacher_before = [p.clone() for p in method.teacher.parameters()]
    optimizer.step()
    method.on_step_end(Progress(switch, TOTAL_STEPS))
    decay = min(1 - 1 / (switch + 1), method.params.ema_decay)
    for teacher, before, student in zip(method.teacher.parameters(), teacher_before, method.network.parameters()):
        assert torch.allclose(teacher, decay * before + (1 - decay) * student)
    assert all(not p.requires_grad for p in method.teacher.parameters())


def test_paper_budget_is_ten_thousand_pretraining_plus_thirty_thousand_steps():
    budget = resolve_budget("paper", {}, BCP.budget_overrides)
    assert budget.iterations == 40_000
    task = TaskSpec(1, 4, (256, 256), budget.iterations)
    assert BCP(BCPParams(), task).pretrain_steps == 10_000


def test_too_small_batches_are_refused():
    method = make_method()
    batch = make_batch()
    batch.labeled_images, batch.labels = batch.labeled_images[:1], batch.labels[:1]
    with pytest.raises(ValueError, match="at least 2 images"):
        method.training_step(batch, Progress(0, TOTAL_STEPS))


def test_search_space_names_real_parameters():
    optuna = pytest.importorskip("optuna")
    values = {"unlabeled_weight": 0.3, "pretrain_fraction": 0.2, "patch_fraction": 0.5}
    space = BCP.search_space(optuna.trial.FixedTrial(values))
    assert BCP.params_from_dict(space) == BCPParams(**values)


def test_smoke_run(tmp_path):
    code = main(["run", "--methods", "bcp", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
                 "--budget", "smoke", "--out", str(tmp_path), "--no-progress", "--no-estimate"])
    assert code == 0
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["config"]["method"] == "bcp"
    assert math.isfinite(summary["metrics"]["dice"])
