"""MC-Net+: sharpening by hand, mutual consistency against an independent computation, which decoder
receives gradient from which pseudo-label, the shared encoder, and a smoke run through the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch

from baselines.mcnet_plus import MCNetPlus, MCNetPlusParams, mutual_consistency_loss, sharpen
from bench import Batch, Progress, TaskSpec, dice_loss
from bench.cli import main

TINY_TASK = TaskSpec(in_channels=1, num_classes=3, patch_size=(32, 32), total_steps=10, network_widths=(4, 8, 16))


def test_sharpening_at_temperature_point_one_by_hand() -> None:
    probs = torch.tensor([0.5, 0.6, 0.9, 0.2])
    # p^10 / (p^10 + (1 - p)^10), worked out term by term.
    expected = torch.tensor([
        0.5,
        0.0060466176 / (0.0060466176 + 0.0001048576),
        0.3486784401 / (0.3486784401 + 1e-10),
        1.024e-07 / (1.024e-07 + 0.1073741824),
    ])
    torch.testing.assert_close(sharpen(probs, 0.1), expected)
    assert sharpen(probs, 0.1)[1] > 0.98  # 0.6 becomes a confident 0.983


def test_mutual_consistency_pairs_each_decoder_with_the_others_pseudo_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = [torch.softmax(torch.randn(2, 3, 4, 4, generator=generator), dim=1) for _ in range(3)]
    pseudo = [p ** 10 / (p ** 10 + (1 - p) ** 10) for p in probs]
    expected = sum(((probs[i] - pseudo[j]) ** 2).mean() for i in range(3) for j in range(3) if i != j)
    torch.testing.assert_close(mutual_consistency_loss(probs, 0.1, detach_pseudo_labels=True), expected)
    # A decoder is never compared with its own pseudo-label: identical decoders still pay for
    # being unsharp, and confident identical decoders pay (almost) nothing.
    same = [probs[0]] * 3
    self_free = 6 * ((probs[0] - pseudo[0]) ** 2).mean()
    torch.testing.assert_close(mutual_consistency_loss(same, 0.1, True), self_free)
    confident = [torch.nn.functional.one_hot(torch.tensor([[0, 1], [2, 0]]), 3).permute(2, 0, 1)[None].float()] * 3
    assert mutual_consistency_loss(confident, 0.1, True).item() == pytest.approx(0.0, abs=1e-12)


def sharpen_derivative(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """d sharpen / dp by hand: with a = p^k, b = (1 - p)^k, k = 1/T, it is k a b (1/p + 1/(1-p)) / (a + b)^2."""
    k = 1.0 / temperature
    a, b = p ** k, (1 - p) ** k
    return k * a * b * (1 / p + 1 / (1 - p)) / (a + b) ** 2


def test_detached_pseudo_labels_send_no_gradient_to_the_decoder_that_made_them() -> None:
    generator = torch.Generator().manual_seed(1)
    values = [torch.softmax(torch.randn(1, 2, 3, 3, generator=generator), dim=1) for _ in range(2)]
    count = values[0].numel()
    gradients = {}
    for detach in (True, False):
        probs = [value.clone().requires_grad_() for value in values]
        mutual_consistency_loss(probs, 0.1, detach_pseudo_labels=detach).backward()
        gradients[detach] = probs[1].grad

    # Stop-gradient: decoder 1 moves only through its own prediction against decoder 0's pseudo-label.
    own_prediction = 2 * (values[1] - sharpen(values[0], 0.1)) / count
    torch.testing.assert_close(gradients[True], own_prediction)
    # Official code: decoder 1 also moves through the pseudo-label it made for decoder 0.
    through_pseudo_label = -2 * (values[0] - sharpen(values[1], 0.1)) / count * sharpen_derivative(values[1], 0.1)
    assert through_pseudo_label.abs().sum() > 1e-4
    torch.testing.assert_close(gradients[False], own_prediction + through_pseudo_label)


def test_the_stop_gradient_switch_reaches_the_network_update() -> None:
    torch.manual_seed(0)
    batch = make_batch()
    images = torch.cat([batch.labeled_images, batch.unlabeled["weak"]])
    gradients = {}
    for detach in (True, False):
        torch.manual_seed(0)
        method = MCNetPlus(MCNetPlusParams(detach_pseudo_labels=detach), TINY_TASK)
        method.eval()  # deterministic forward (no dropout), same BatchNorm in both runs
        probs = [torch.softmax(logits, dim=1) for logits in method.network(images)]
        mutual_consistency_loss(probs, 0.1, detach).backward()
        gradients[detach] = method.network.decoders[1].out_conv.weight.grad.clone()
    assert gradients[True].abs().sum() > 0
    assert not torch.allclose(gradients[True], gradients[False])


def make_batch(num_labeled: int = 2, num_unlabeled: int = 2, size: int = 32) -> Batch:
    generator = torch.Generator().manual_seed(3)
    return Batch(
        labeled_images=torch.randn(num_labeled, 1, size, size, generator=generator),
        labels=torch.randint(0, 3, (num_labeled, size, size), generator=generator),
        unlabeled={"weak": torch.randn(num_unlabeled, 1, size, size, generator=generator)},
    )


def test_three_decoders_share_one_encoder_and_all_learn_from_the_step() -> None:
    torch.manual_seed(0)
    method = MCNetPlus(MCNetPlusParams(), TINY_TASK)
    network = method.network
    assert network.upsample_modes == ("bilinear", "transpose", "nearest")
    assert len(network.decoders) == 3
    encoder_ids = {id(p) for p in network.encoder.parameters()}
    for decoder in network.decoders:
        assert encoder_ids.isdisjoint(id(p) for p in decoder.parameters())
    all_ids = [id(p) for p in method.parameters()]
    assert len(all_ids) == len(set(all_ids))
    assert sum(p.numel() for p in method.parameters()) == (
        sum(p.numel() for p in network.encoder.parameters())
        + sum(p.numel() for d in network.decoders for p in d.parameters())
    )

    output = method.training_step(make_batch(), Progress(step=30_000, total_steps=30_000))
    output.loss.backward()
    for module in [network.encoder, *network.decoders]:
        assert all(p.grad is not None for p in module.parameters())
    assert output.logs["consistency_weight"] == pytest.approx(0.1)


def test_supervised_loss_is_the_dice_sum_over_decoders_with_the_official_weight() -> None:
    torch.manual_seed(0)
    method = MCNetPlus(MCNetPlusParams(consistency=0.0), TINY_TASK)
    method.eval()
    batch = make_batch()
    output = method.training_step(batch, Progress(step=0, total_steps=10))
    with torch.no_grad():
        logits = method.network(torch.cat([batch.labeled_images, batch.unlabeled["weak"]]))
        expected = sum(0.25 * dice_loss(torch.softmax(l[:2], dim=1), batch.labels) for l in logits)
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_predict_uses_the_first_decoder() -> None:
    torch.manual_seed(0)
    method = MCNetPlus(MCNetPlusParams(), TINY_TASK)
    method.eval()
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(method.predict(images), method.network(images)[0])


def test_smoke_run(tmp_path, smoke_args) -> None:
    code = main(["run", "--methods", "mc-net-plus", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
                 "--out", str(tmp_path), *smoke_args])
    assert code == 0
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["method"] == "mc-net-plus"
    dice = [value for key, value in summary["metrics"].items() if "dice" in key.lower()]
    assert dice and all(math.isfinite(value) for value in dice)


def test_search_space_names_real_hyper_parameters() -> None:
    optuna = pytest.importorskip("optuna")
    chosen = {"consistency": 0.3, "temperature": 0.2, "consistency_rampup_epochs": 50.0}
    values = MCNetPlus.search_space(optuna.trial.FixedTrial(chosen))
    assert MCNetPlus.params_from_dict(values) == MCNetPlusParams(**chosen)


def test_sgd_keeps_the_official_constant_rate_unless_poly_decay_is_asked_for() -> None:
    """``train_mcnet_2d.py`` never changes the SGD rate; ``poly_lr_decay`` restores SSL4MIS' decay."""
    (constant,) = MCNetPlus(MCNetPlusParams(), TINY_TASK).optimizers()
    group = constant.optimizer.param_groups[0]
    assert isinstance(constant.optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 1e-4)
    assert [constant.lr_lambda(f) for f in (0.0, 0.5, 0.99)] == [1.0, 1.0, 1.0]
    (decaying,) = MCNetPlus(MCNetPlusParams(poly_lr_decay=True), TINY_TASK).optimizers()
    assert decaying.lr_lambda(0.5) == pytest.approx(0.5**0.9)
