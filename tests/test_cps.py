"""CPS: two differently initialised networks, each supervised by the other's detached argmax."""
from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
import torch.nn.functional as F

from baselines.cps import CPS, CPSParams
from bench import Batch, Progress, TaskSpec, ce_dice_loss
from bench.cli import main

NUM_CLASSES = 3
TASK = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(32, 32), total_steps=100, network_widths=(4, 8, 16))
AFTER_RAMP = Progress(30_000, 30_000)


def make_batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    return Batch(
        labeled_images=torch.randn(2, 1, 32, 32, generator=generator),
        labels=torch.randint(0, NUM_CLASSES, (2, 32, 32), generator=generator),
        unlabeled={"weak": torch.randn(3, 1, 32, 32, generator=generator)},
    )


def test_networks_start_with_different_weights():
    torch.manual_seed(0)
    method = CPS(CPSParams(), TASK)
    conv_a = [m.weight.detach() for m in method.network_a.modules() if isinstance(m, torch.nn.Conv2d)]
    conv_b = [m.weight.detach() for m in method.network_b.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(not torch.allclose(a, b) for a, b in zip(conv_a, conv_b))
    assert not {id(p) for p in method.network_a.parameters()} & {id(p) for p in method.network_b.parameters()}
    # Kaiming normal (fan-in, gain sqrt 2) vs Xavier normal (fan-in + fan-out, gain 1) on the widest 3x3 conv.
    widest_a, widest_b = max(conv_a, key=torch.numel), max(conv_b, key=torch.numel)
    assert widest_a.shape[-2:] == (3, 3)
    fan_in, fan_out = widest_a.shape[1] * 9, widest_a.shape[0] * 9
    assert float(widest_a.std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)
    assert float(widest_b.std()) == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.1)


def test_target_of_each_network_is_the_others_argmax_and_carries_no_gradient():
    torch.manual_seed(0)
    method = CPS(CPSParams(), TASK).train()
    images = torch.randn(3, 1, 32, 32)
    logits_a, logits_b = method.network_a(images), method.network_b(images)
    loss_for_a, loss_for_b = method.pseudo_supervision_losses(logits_a, logits_b)

    torch.testing.assert_close(loss_for_a, F.cross_entropy(logits_a, logits_b.argmax(dim=1)))
    torch.testing.assert_close(loss_for_b, F.cross_entropy(logits_b, logits_a.argmax(dim=1)))
    assert not torch.allclose(loss_for_a, F.cross_entropy(logits_a, logits_a.argmax(dim=1)))

    params_a, params_b = list(method.network_a.parameters()), list(method.network_b.parameters())
    grads_into_b = torch.autograd.grad(loss_for_a, params_b, retain_graph=True, allow_unused=True)
    grads_into_a = torch.autograd.grad(loss_for_a, params_a, retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in grads_into_b)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_into_a)
    grads_into_a_from_b = torch.autograd.grad(loss_for_b, params_a, allow_unused=True)
    assert all(g is None or not g.any() for g in grads_into_a_from_b)


@pytest.mark.parametrize("params,pseudo_supervise_labeled", [
    (CPSParams(), False),  # SSL4MIS default: cross pseudo supervision on the unlabeled images only
    (CPSParams(pseudo_supervise_labeled=True), True),  # the paper's L_cps^l + L_cps^u
])
def test_loss_matches_an_independent_computation(params, pseudo_supervise_labeled):
    torch.manual_seed(0)
    method = CPS(params, TASK).eval()
    batch = make_batch()
    output = method.training_step(batch, AFTER_RAMP)
    with torch.no_grad():
        logits_a = method.network_a(torch.cat([batch.labeled_images, batch.unlabeled["weak"]]))
        logits_b = method.network_b(torch.cat([batch.labeled_images, batch.unlabeled["weak"]]))
        supervised = ce_dice_loss(logits_a[:2], batch.labels) + ce_dice_loss(logits_b[:2], batch.labels)
        start = 0 if pseudo_supervise_labeled else 2
        cps_a = F.cross_entropy(logits_a[start:], logits_b[start:].argmax(dim=1))
        cps_b = F.cross_entropy(logits_b[start:], logits_a[start:].argmax(dim=1))
    assert output.logs["loss_cps_a"] == pytest.approx(float(cps_a), rel=1e-5)
    assert output.logs["loss_cps_b"] == pytest.approx(float(cps_b), rel=1e-5)
    assert float(output.loss.detach()) == pytest.approx(float(supervised + 0.1 * (cps_a + cps_b)), rel=1e-5)


def test_consistency_weight_ramps_to_the_ssl4mis_value():
    method = CPS(CPSParams(), TASK).eval()
    batch = make_batch()
    at_start = method.training_step(batch, Progress(0, 30_000)).logs["consistency_weight"]
    mid_epoch = method.training_step(batch, Progress(15_149, 30_000)).logs["consistency_weight"]
    assert at_start == pytest.approx(0.1 * math.exp(-5))
    assert mid_epoch == pytest.approx(0.1 * math.exp(-5 * (1 - 100 / 200) ** 2))
    assert method.training_step(batch, AFTER_RAMP).logs["consistency_weight"] == pytest.approx(0.1)


def test_one_optimizer_per_network_and_predict_uses_network_a():
    torch.manual_seed(0)
    method = CPS(CPSParams(), TASK).eval()
    specs = method.optimizers()
    assert len(specs) == 2
    for spec, network in zip(specs, (method.network_a, method.network_b)):
        optimised = {id(p) for group in spec.optimizer.param_groups for p in group["params"]}
        assert optimised == {id(p) for p in network.parameters()}
        assert spec.optimizer.defaults["lr"] == 0.01 and spec.lr_lambda(0.0) == 1.0
        assert spec.lr_lambda(0.5) == pytest.approx(0.5**0.9)  # SSL4MIS poly decay
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(method.predict(images), method.network_a(images))


def test_search_space_names_real_parameters():
    values = CPS.search_space(optuna.trial.FixedTrial(
        {"consistency": 1.5, "consistency_rampup_epochs": 20.0, "pseudo_supervise_labeled": True}))
    params = CPS.params_from_dict(values)
    assert params.consistency == 1.5 and params.pseudo_supervise_labeled


def test_smoke_run(tmp_path):
    args = ["run", "--methods", "cps", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
            "--budget", "smoke", "--out", str(tmp_path), "--no-progress", "--no-estimate"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "synthetic/smoke/cps/1/seed0/summary.json").read_text())
    assert math.isfinite(summary["metrics"]["dice"]) and 0.0 <= summary["metrics"]["dice"] <= 1.0
