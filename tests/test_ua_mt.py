"""UA-MT: Monte-Carlo uncertainty of the teacher, a ramped entropy threshold, and a consistency that
counts exactly the pixels whose uncertainty is below it."""
from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
from torch import nn

from baselines.ua_mt import UAMT, UAMTParams
from bench import Batch, Progress, TaskSpec, masked_consistency, monte_carlo_probs, predictive_entropy
from bench.cli import main

NUM_CLASSES = 4
SIZE = 32
TASK = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(SIZE, SIZE), total_steps=100,
                network_widths=(4, 8, 16))
IMPOSSIBLE_LOGIT = -40.0  # softmax probability ~1e-18: a class the teacher rules out


def make_batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    return Batch(
        labeled_images=torch.randn(2, 1, SIZE, SIZE, generator=generator),
        labels=torch.randint(0, NUM_CLASSES, (2, SIZE, SIZE), generator=generator),
        unlabeled={"weak": torch.randn(2, 1, SIZE, SIZE, generator=generator)},
    )


class FixedTeacher(nn.Module):
    """A teacher whose prediction ignores its input, so its entropy map is known exactly."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        copies = images.shape[0] // self.logits.shape[0]
        return self.logits.repeat(copies, 1, 1, 1)


def entropy(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def teacher_with_known_entropy(certain_pixels: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is ``(0.55, 0.45, 0, 0)`` (entropy just below ln 2) on ``certain_pixels``
    and ``(0.5, 0.49, 0.01, 0)`` (just above ln 2) elsewhere."""
    below = torch.tensor([math.log(0.55), math.log(0.45), IMPOSSIBLE_LOGIT, IMPOSSIBLE_LOGIT])
    above = torch.tensor([math.log(0.5), math.log(0.49), math.log(0.01), IMPOSSIBLE_LOGIT])
    assert entropy([0.55, 0.45]) < math.log(2) < entropy([0.5, 0.49, 0.01])
    return torch.where(certain_pixels[:, None], below[None, :, None, None], above[None, :, None, None])


def test_mask_keeps_exactly_the_pixels_below_the_threshold():
    torch.manual_seed(0)
    batch = make_batch()
    certain_pixels = torch.rand(2, SIZE, SIZE) < 0.3
    teacher_logits = teacher_with_known_entropy(certain_pixels)
    method = UAMT(UAMTParams(), TASK)
    method.teacher = FixedTeacher(teacher_logits)
    method.eval()  # deterministic student
    progress = Progress(TASK.total_steps, TASK.total_steps)
    assert method.uncertainty_threshold(progress) == pytest.approx(math.log(2))

    output = method.training_step(batch, progress)

    with torch.no_grad():
        student_probs = torch.softmax(method.network(batch.unlabeled["weak"]), dim=1)
    squared = (student_probs - torch.softmax(teacher_logits, dim=1)) ** 2
    kept = certain_pixels[:, None].float()
    expected = (squared * kept).sum() / (2 * kept.sum() + 1e-16)
    assert output.logs["certain_fraction"] == pytest.approx(float(certain_pixels.float().mean()))
    assert output.logs["loss_consistency"] == pytest.approx(float(expected), rel=1e-5)
    # Early in training the threshold is 0.75 ln 2 + a little: both kinds of pixel are now too uncertain.
    early = method.training_step(batch, Progress(0, TASK.total_steps))
    assert early.logs["certain_fraction"] == 0.0 and early.logs["loss_consistency"] == 0.0


def test_threshold_ramps_from_three_quarters_of_ln2_to_ln2():
    method = UAMT(UAMTParams(), TASK)
    assert method.uncertainty_threshold(Progress(0, 100)) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))
    assert method.uncertainty_threshold(Progress(50, 100)) == pytest.approx(
        (0.75 + 0.25 * math.exp(-5 * 0.25)) * math.log(2))
    assert method.uncertainty_threshold(Progress(100, 100)) == pytest.approx(math.log(2))
    per_class = UAMT(UAMTParams(max_uncertainty=None), TASK)
    assert per_class.uncertainty_threshold(Progress(100, 100)) == pytest.approx(math.log(NUM_CLASSES))


def test_eight_stochastic_teacher_passes_in_four_batched_forwards():
    torch.manual_seed(0)
    method = UAMT(UAMTParams(), TASK).train()
    images = torch.randn(3, 1, SIZE, SIZE)
    forward_batch_sizes = []
    method.teacher.register_forward_hook(lambda module, inputs, output: forward_batch_sizes.append(inputs[0].shape[0]))
    probs = monte_carlo_probs(method.teacher, images, passes=8, noise_std=0.1, noise_clip=0.2, copies_per_forward=2)
    assert probs.shape == (8, 3, NUM_CLASSES, SIZE, SIZE)
    assert forward_batch_sizes == [6, 6, 6, 6]
    torch.testing.assert_close(probs.sum(dim=2), torch.ones(8, 3, SIZE, SIZE))
    assert all(not torch.allclose(probs[i], probs[j]) for i in range(8) for j in range(i))
    assert not probs.requires_grad

    method.eval()  # without noise and dropout every pass is the same prediction
    still = monte_carlo_probs(method.teacher, images, passes=8, noise_std=0.0, noise_clip=0.2)
    torch.testing.assert_close(still, still[:1].expand_as(still))


def test_predictive_entropy_against_closed_forms():
    uniform = torch.full((1, NUM_CLASSES, 2, 2), 1.0 / NUM_CLASSES)
    one_hot = torch.zeros(1, NUM_CLASSES, 2, 2)
    one_hot[:, 2] = 1.0
    assert predictive_entropy(uniform).shape == (1, 1, 2, 2)
    expected = torch.full((1, 1, 2, 2), math.log(NUM_CLASSES))
    torch.testing.assert_close(predictive_entropy(uniform), expected, atol=1e-5, rtol=0)
    assert float(predictive_entropy(one_hot).abs().max()) < 1e-5


def test_masked_consistency_normalisation():
    distance = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    mask = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
    assert float(masked_consistency(distance, mask, 2.0)) == 0.0
    mask[0, 0, 1, 1] = True
    assert float(masked_consistency(distance, mask, 2.0)) == pytest.approx(float(distance[0, :, 1, 1].sum()) / 2)
    assert float(masked_consistency(distance, torch.ones_like(mask), 1.0)) == pytest.approx(float(distance.sum()) / 8)


def test_teacher_gets_no_gradient_and_follows_the_student():
    torch.manual_seed(0)
    method = UAMT(UAMTParams(), TASK).train()
    optimizer = method.optimizers()[0].optimizer
    method.training_step(make_batch(), Progress(TASK.total_steps, TASK.total_steps)).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.network.parameters())
    optimizer.step()
    method.on_step_end(Progress(0, TASK.total_steps))  # first update: alpha = 0, the teacher copies the student
    for teacher_param, student_param in zip(method.teacher.parameters(), method.network.parameters()):
        torch.testing.assert_close(teacher_param, student_param)


def test_invalid_monte_carlo_split_is_rejected():
    with pytest.raises(ValueError, match="multiple of copies_per_forward"):
        UAMTParams(mc_passes=7, copies_per_forward=2)


def test_search_space_names_real_parameters():
    values = UAMT.search_space(optuna.trial.FixedTrial({"consistency": 0.2, "threshold_start": 0.6, "ema_decay": 0.95}))
    assert UAMT.params_from_dict(values).threshold_start == 0.6


def test_smoke_run(tmp_path):
    args = ["run", "--methods", "ua-mt", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
            "--budget", "smoke", "--out", str(tmp_path), "--no-progress", "--no-estimate"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "synthetic/smoke/ua-mt/1/seed0/summary.json").read_text())
    assert math.isfinite(summary["metrics"]["dice"]) and 0.0 <= summary["metrics"]["dice"] <= 1.0
