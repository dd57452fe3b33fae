"""URPC: the uncertainty-rectified pyramid consistency against independent computations, gradients
through every head, and a smoke run through the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch

from baselines.urpc import (
    URPC,
    URPCParams,
    pyramid_log_probs,
    pyramid_mean_log_probs,
    rectified_consistency,
    scale_uncertainty,
    uncertainty_rectified_pyramid_consistency,
)
from bench import Batch, Progress, TaskSpec
from bench.cli import main

TINY_TASK = TaskSpec(in_channels=1, num_classes=3, patch_size=(32, 32), total_steps=10, network_widths=(4, 8, 16))


def random_scale_logits(scales: int = 4, shape: tuple[int, ...] = (2, 3, 8, 8), seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [3.0 * torch.randn(shape, generator=generator) for _ in range(scales)]


def test_mean_and_uncertainty_match_kl_from_the_average_to_each_scale() -> None:
    scale_logits = random_scale_logits()
    probs = [torch.softmax(logits, dim=1) for logits in scale_logits]
    expected_mean = torch.stack(probs).mean(dim=0)

    log_probs = pyramid_log_probs(scale_logits)
    mean_log_probs = pyramid_mean_log_probs(log_probs)
    torch.testing.assert_close(mean_log_probs.exp(), expected_mean)
    for scale_probs, scale_log_probs in zip(probs, log_probs):
        expected = (expected_mean * torch.log(expected_mean / scale_probs)).sum(dim=1, keepdim=True)
        reverse = (scale_probs * torch.log(scale_probs / expected_mean)).sum(dim=1, keepdim=True)
        uncertainty = scale_uncertainty(scale_log_probs, mean_log_probs)
        assert uncertainty.shape == (2, 1, 8, 8)
        torch.testing.assert_close(uncertainty, expected)
        # SSL4MIS' direction, not the reverse one: the two differ on these random predictions.
        assert not torch.allclose(uncertainty, reverse)
        assert (uncertainty >= -1e-6).all()


def test_consistency_is_zero_when_every_scale_agrees() -> None:
    same = torch.randn(2, 3, 8, 8)
    loss, mean_uncertainty = uncertainty_rectified_pyramid_consistency([same.clone() for _ in range(4)], 1e-8)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert mean_uncertainty.item() == pytest.approx(0.0, abs=1e-7)


def test_zero_uncertainty_falls_back_to_plain_mse_to_the_average() -> None:
    generator = torch.Generator().manual_seed(1)
    scale_probs = torch.softmax(torch.randn(2, 3, 8, 8, generator=generator), dim=1)
    mean_probs = torch.softmax(torch.randn(2, 3, 8, 8, generator=generator), dim=1)
    zero = torch.zeros(2, 1, 8, 8)
    plain_mse = ((mean_probs - scale_probs) ** 2).mean()
    assert plain_mse.item() > 1e-3
    torch.testing.assert_close(rectified_consistency(scale_probs, mean_probs, zero, 0.0), plain_mse)


def test_constant_uncertainty_adds_itself_and_varying_uncertainty_reweights_pixels() -> None:
    generator = torch.Generator().manual_seed(2)
    scale_probs = torch.softmax(torch.randn(1, 2, 4, 4, generator=generator), dim=1)
    mean_probs = torch.softmax(torch.randn(1, 2, 4, 4, generator=generator), dim=1)
    squared = (mean_probs - scale_probs) ** 2
    constant = torch.full((1, 1, 4, 4), 0.7)
    torch.testing.assert_close(rectified_consistency(scale_probs, mean_probs, constant, 0.0), squared.mean() + 0.7)

    # One uncertain pixel: its weight exp(-u) is tiny, so the distance term is a weighted average that
    # (almost) ignores it.  Computed by hand over the 16 pixels x 2 classes.
    uncertainty = torch.zeros(1, 1, 4, 4)
    uncertainty[0, 0, 0, 0] = 20.0
    weights = torch.exp(-uncertainty)
    expected = (squared * weights).sum() / 2 / weights.sum() + uncertainty.mean()
    torch.testing.assert_close(rectified_consistency(scale_probs, mean_probs, uncertainty, 0.0), expected)


def test_log_space_stays_finite_where_probabilities_underflow() -> None:
    scale_logits = [torch.tensor([[[[200.0]], [[-200.0]]]]), torch.tensor([[[[-200.0]], [[200.0]]]])]
    loss, _ = uncertainty_rectified_pyramid_consistency(scale_logits, 1e-8)
    assert math.isfinite(loss.item())


def make_batch(num_labeled: int = 2, num_unlabeled: int = 2, size: int = 32) -> Batch:
    generator = torch.Generator().manual_seed(3)
    return Batch(
        labeled_images=torch.randn(num_labeled, 1, size, size, generator=generator),
        labels=torch.randint(0, 3, (num_labeled, size, size), generator=generator),
        unlabeled={"weak": torch.randn(num_unlabeled, 1, size, size, generator=generator)},
    )


def test_consistency_gradients_reach_every_head_and_only_unlabeled_images_feed_it() -> None:
    torch.manual_seed(0)
    method = URPC(URPCParams(), TINY_TASK)
    method.train()
    batch = make_batch()
    scale_logits = method.network(torch.cat([batch.labeled_images, batch.unlabeled["weak"]]))
    assert len(scale_logits) == len(TINY_TASK.network_widths) - 1
    consistency, _ = uncertainty_rectified_pyramid_consistency([logits[2:] for logits in scale_logits], 1e-8)
    consistency.backward()
    decoder = method.network.decoder
    for head in [decoder.out_conv, *decoder.aux_heads]:
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_training_step_ramps_the_consistency_weight_and_predicts_with_the_main_head() -> None:
    torch.manual_seed(0)
    method = URPC(URPCParams(), TINY_TASK)
    batch = make_batch()
    weights = {
        step: method.training_step(batch, Progress(step=step, total_steps=30_000)).logs["consistency_weight"]
        for step in (0, 149, 150, 30_000)
    }
    # SSL4MIS: 0.1 * exp(-5 (1 - (step // 150) / 200)^2), a staircase that changes every 150 steps.
    assert weights[0] == pytest.approx(0.1 * math.exp(-5.0))
    assert weights[149] == weights[0]
    assert weights[150] == pytest.approx(0.1 * math.exp(-5.0 * (1 - 1 / 200) ** 2))
    assert weights[30_000] == pytest.approx(0.1)
    # A shorter budget ramps over its whole run too (epochs of 150 * 1000 / 30000 = 5 steps).
    short = method.training_step(batch, Progress(step=5, total_steps=1_000)).logs["consistency_weight"]
    assert short == pytest.approx(weights[150])
    end = method.training_step(batch, Progress(step=30_000, total_steps=30_000))
    assert torch.isfinite(end.loss)

    method.eval()
    with torch.no_grad():
        images = batch.labeled_images
        torch.testing.assert_close(method.predict(images), method.network(images)[0])


def test_smoke_run(tmp_path, smoke_args) -> None:
    code = main(["run", "--methods", "urpc", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
                 "--out", str(tmp_path), *smoke_args])
    assert code == 0
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["method"] == "urpc"
    dice = [value for key, value in summary["metrics"].items() if "dice" in key.lower()]
    assert dice and all(math.isfinite(value) for value in dice)


def test_search_space_names_real_hyper_parameters() -> None:
    optuna = pytest.importorskip("optuna")
    values = URPC.search_space(optuna.trial.FixedTrial({"consistency": 0.3, "consistency_rampup_epochs": 50.0}))
    assert URPC.params_from_dict(values) == URPCParams(consistency=0.3, consistency_rampup_epochs=50.0)
