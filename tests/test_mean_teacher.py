"""Mean Teacher: the teacher is the EMA of the student, gets no gradient, sees noisy input, and the
student is pulled towards it on unlabeled images only with SSL4MIS' ramped weight."""
from __future__ import annotations

import json
import math

import optuna
import pytest
import torch

from baselines.mean_teacher import MeanTeacher, MeanTeacherParams
from bench import Batch, Progress, TaskSpec, add_clipped_gaussian_noise, ce_dice_loss, softmax_mse
from bench.cli import main

NUM_CLASSES = 3
TASK = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(32, 32), total_steps=100, network_widths=(4, 8, 16))


def make_batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    return Batch(
        labeled_images=torch.randn(2, 1, 32, 32, generator=generator),
        labels=torch.randint(0, NUM_CLASSES, (2, 32, 32), generator=generator),
        unlabeled={"weak": torch.randn(3, 1, 32, 32, generator=generator)},
    )


def test_teacher_is_the_ema_of_the_recorded_student_weights():
    torch.manual_seed(0)
    decay = 0.6  # below 1 - 1/(step + 1) from step 2 on, so both branches of the SSL4MIS alpha are used
    method = MeanTeacher(MeanTeacherParams(ema_decay=decay, consistency_start_step=0), TASK)
    optimizer = method.optimizers()[0].optimizer
    expected = [p.detach().clone() for p in method.teacher.parameters()]
    method.train()
    for step in range(5):
        method.training_step(make_batch(step), Progress(step, TASK.total_steps)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        method.on_step_end(Progress(step, TASK.total_steps))
        alpha = min(1.0 - 1.0 / (step + 1), decay)
        student = [p.detach().clone() for p in method.network.parameters()]
        expected = [alpha * t + (1.0 - alpha) * s for t, s in zip(expected, student)]
    for teacher_param, expected_param, student_param in zip(method.teacher.parameters(), expected, student):
        torch.testing.assert_close(teacher_param, expected_param)
    assert any(not torch.equal(t, s) for t, s in zip(method.teacher.parameters(), student))


def test_teacher_gets_no_gradient_and_sees_noisy_unlabeled_images():
    torch.manual_seed(0)
    method = MeanTeacher(MeanTeacherParams(consistency_start_step=0), TASK)
    batch = make_batch()
    teacher_inputs = []
    method.teacher.register_forward_hook(lambda module, inputs, output: teacher_inputs.append(inputs[0]))
    method.train()
    method.training_step(batch, Progress(TASK.total_steps, TASK.total_steps)).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.network.parameters())
    (teacher_input,) = teacher_inputs
    noise = teacher_input - batch.unlabeled["weak"]
    assert noise.abs().max() <= 0.2 + 1e-6 and noise.abs().min() < 0.2 and noise.std() > 0.05


def test_clipped_noise_is_clipped_and_centred():
    torch.manual_seed(0)
    images = torch.zeros(4, 1, 64, 64)
    noise = add_clipped_gaussian_noise(images, std=0.1, clip=0.2)
    assert noise.abs().max() == pytest.approx(0.2)
    assert abs(float(noise.mean())) < 0.01 and 0.08 < float(noise.std()) < 0.1
    assert float((noise.abs() == 0.2).float().mean()) == pytest.approx(math.erfc(2 / math.sqrt(2)), abs=0.01)


def test_softmax_mse_pulls_only_the_student():
    student_logits = torch.randn(2, NUM_CLASSES, 4, 4, requires_grad=True)
    teacher_logits = torch.randn(2, NUM_CLASSES, 4, 4, requires_grad=True)
    distance = softmax_mse(student_logits, teacher_logits)
    expected = (torch.softmax(student_logits, 1) - torch.softmax(teacher_logits, 1)) ** 2
    torch.testing.assert_close(distance, expected)
    distance.mean().backward()
    assert teacher_logits.grad is None and student_logits.grad.abs().sum() > 0


def test_consistency_weight_schedule():
    method = MeanTeacher(MeanTeacherParams(), TASK)
    weight = lambda step, total=30_000: method.consistency_weight(Progress(step, total))
    assert weight(0) == 0.0
    assert weight(999) == 0.0  # SSL4MIS: no consistency before iteration 1000
    assert weight(1000) == pytest.approx(0.1 * math.exp(-5 * (1 - 6 / 200) ** 2))
    assert weight(1049) == weight(1000)  # constant within a 150-iteration "epoch"
    assert weight(30_000) == pytest.approx(0.1)
    assert weight(100_000) == pytest.approx(0.1)
    # A 1,000-iteration budget covers the same share of the ramp: start at 1000/30 ~ 33, epochs of 5.
    assert weight(33, 1000) == 0.0 and weight(34, 1000) == pytest.approx(0.1 * math.exp(-5 * (1 - 6 / 200) ** 2))
    assert weight(500, 1000) == pytest.approx(weight(15_000))


def test_loss_is_supervised_plus_weighted_mse_on_unlabeled_images_only():
    torch.manual_seed(0)
    method = MeanTeacher(MeanTeacherParams(noise_std=0.0), TASK)
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    method.eval()  # deterministic forwards: no dropout, BatchNorm running statistics
    batch = make_batch()
    output = method.training_step(batch, Progress(30_000, 30_000))
    with torch.no_grad():
        student_probs = torch.softmax(method.network(batch.unlabeled["weak"]), dim=1)
        teacher_probs = torch.softmax(method.teacher(batch.unlabeled["weak"]), dim=1)
        expected_consistency = ((student_probs - teacher_probs) ** 2).mean()
        expected_supervised = ce_dice_loss(method.network(batch.labeled_images), batch.labels)
    assert output.logs["loss_consistency"] == pytest.approx(float(expected_consistency), rel=1e-5)
    expected_loss = expected_supervised + 0.1 * expected_consistency
    assert float(output.loss.detach()) == pytest.approx(float(expected_loss), rel=1e-5)


def test_predict_uses_the_student():
    torch.manual_seed(0)
    method = MeanTeacher(MeanTeacherParams(), TASK).eval()
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.zero_()
        images = torch.randn(2, 1, 32, 32)
        torch.testing.assert_close(method.predict(images), method.network(images))


def test_search_space_names_real_parameters():
    values = MeanTeacher.search_space(optuna.trial.FixedTrial(
        {"consistency": 0.3, "consistency_rampup_epochs": 50.0, "ema_decay": 0.95}))
    params = MeanTeacher.params_from_dict(values)
    assert (params.consistency, params.consistency_rampup_epochs, params.ema_decay) == (0.3, 50.0, 0.95)


def test_smoke_run(tmp_path):
    args = ["run", "--methods", "mean-teacher", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
            "--budget", "smoke", "--out", str(tmp_path), "--no-progress", "--no-estimate"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "synthetic/smoke/mean-teacher/1/seed0/summary.json").read_text())
    assert math.isfinite(summary["metrics"]["dice"]) and 0.0 <= summary["metrics"]["dice"] <= 1.0
    assert summary["params"]["ema_decay"] == 0.99
