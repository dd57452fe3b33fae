"""KnowSAM: the XOR dissimilarity map of Eq. 2, distillation that trains the sub-networks only (Eq. 10),
SAM supervised through detached mask prompts (Eq. 7-8), uncertainty-guided copy-paste of the top-5
patches (§III-D), the Gaussian warm-up of lambda_m, the 2D V-Net, and a CLI smoke run with the tiny SAM."""
from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F

import methods.knowsam  # noqa: F401  (registers "knowsam")
from bench import Batch, Progress, TaskSpec, VNet2D, VNet2DConfig
from bench.cli import main
from bench.method import RANDOM_INIT_SAM
from methods.knowsam import (
    HybridAggregation,
    KnowSAM,
    KnowSAMParams,
    dissimilarity_map,
    uncertain_patch_mask,
    uncertainty_guided_copy_paste,
)

NUM_CLASSES = 4
SIZE = 32
TASK = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(SIZE, SIZE), total_steps=100,
                network_widths=(4, 8, 16), options={"sam_model": "tiny", "sam_random_init": True})


@pytest.fixture(scope="module")
def method() -> KnowSAM:
    torch.manual_seed(0)
    return KnowSAM(KnowSAMParams(), TASK).train()


def images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def has_gradient(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def no_gradient(module: torch.nn.Module) -> bool:
    return all(p.grad is None or not p.grad.any() for p in module.parameters())


def test_dissimilarity_map_is_the_xor_of_the_binarised_class_maps():
    generator = torch.Generator().manual_seed(3)
    probs_a = torch.softmax(3 * torch.randn(2, NUM_CLASSES, 8, 8, generator=generator), dim=1)
    probs_b = torch.softmax(3 * torch.randn(2, NUM_CLASSES, 8, 8, generator=generator), dim=1)
    expected = np.logical_xor(probs_a.numpy() > 0.5, probs_b.numpy() > 0.5).astype(np.float32)
    result = dissimilarity_map(probs_a, probs_b, 0.5)
    assert result.shape == probs_a.shape and 0 < result.sum() < result.numel()
    np.testing.assert_array_equal(result.numpy(), expected)
    assert not dissimilarity_map(probs_a, probs_a, 0.5).any()


def pixel_rows(logits: torch.Tensor) -> torch.Tensor:
    return logits.detach().permute(0, 2, 3, 1).reshape(-1, logits.shape[1])


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The official ``KDLoss`` on pixel rows: ``kl_div(..., reduction="batchmean") * T^2``."""
    student_log_probs = F.log_softmax(pixel_rows(student_logits) / temperature, dim=1)
    teacher_probs = F.softmax(pixel_rows(teacher_logits) / temperature, dim=1)
    return F.kl_div(student_log_probs, teacher_probs, reduction="batchmean") * temperature**2


def test_distillation_is_the_tempered_kl_to_sam_and_trains_only_the_sub_networks(method):
    method.zero_grad(set_to_none=True)
    batch_images = images(3, 1)
    outputs = method.co_training(batch_images)
    sam_logits = method.sam_prediction(batch_images, outputs.fused_logits)
    kd = method.distillation(outputs, sam_logits)

    temperature = method.params.kd_temperature
    expected = hinton_kd(outputs.logits_a, sam_logits, temperature) + hinton_kd(outputs.logits_b, sam_logits, temperature)
    torch.testing.assert_close(kd.detach(), expected, rtol=1e-4, atol=1e-6)

    kd.backward()
    assert has_gradient(method.co_training.unet) and has_gradient(method.co_training.vnet)
    assert no_gradient(method.sam) and no_gradient(method.learnable_prompt)


def test_sam_learns_from_labels_through_a_detached_mask_prompt(method):
    method.zero_grad(set_to_none=True)
    batch_images = images(2, 2)
    outputs = method.co_training(batch_images)
    sam_logits = method.sam_prediction(batch_images, outputs.fused_logits)
    assert sam_logits.shape == (2, NUM_CLASSES, SIZE, SIZE)
    F.cross_entropy(sam_logits, torch.zeros(2, SIZE, SIZE, dtype=torch.long)).backward()
    assert has_gradient(method.sam.decoders) and has_gradient(method.learnable_prompt)
    encoder = dict(method.sam.image_encoder.named_parameters())
    adapters = [p for name, p in encoder.items() if "adapter" in name]
    assert adapters and any(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters)  # §III-B adapters
    assert all(p.grad is None for name, p in encoder.items() if "adapter" not in name)  # the rest is frozen
    assert no_gradient(method.co_training)
    # The mask prompt is the fused map: changing it changes SAM's prediction.
    other = method.sam_prediction(batch_images, -outputs.fused_logits.detach())
    assert not torch.allclose(other, sam_logits)


def test_the_five_most_uncertain_of_sixteen_patches_are_selected():
    patch_means = torch.randperm(16, generator=torch.Generator().manual_seed(4)).float().view(1, 4, 4)
    uncertainty = patch_means.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)  # 32 x 32, 8 px patches
    uncertainty = uncertainty + 0.01 * torch.rand(1, 32, 32)  # patch means keep their order
    mask = uncertain_patch_mask(uncertainty, grid=4, top_k=5)
    expected = (patch_means >= 11).float().repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    torch.testing.assert_close(mask, expected)
    assert mask.sum() == 5 * 64


def test_copy_paste_swaps_the_uncertain_patches_with_labels_and_pseudo_labels():
    labeled, unlabeled = torch.full((2, 1, 32, 32), 1.0), torch.full((2, 1, 32, 32), -1.0)
    labels, pseudo_labels = torch.full((2, 32, 32), 2), torch.full((2, 32, 32), 3)
    generator = torch.Generator().manual_seed(5)
    labeled_uncertainty = torch.rand(2, 32, 32, generator=generator)
    unlabeled_uncertainty = torch.rand(2, 32, 32, generator=generator)
    mixed_images, mixed_targets = uncertainty_guided_copy_paste(
        labeled, labels, unlabeled, pseudo_labels, labeled_uncertainty, unlabeled_uncertainty, grid=4, top_k=5)

    labeled_mask = uncertain_patch_mask(labeled_uncertainty, 4, 5).bool()
    unlabeled_mask = uncertain_patch_mask(unlabeled_uncertainty, 4, 5).bool()
    assert mixed_images.shape == (4, 1, 32, 32) and mixed_targets.shape == (4, 32, 32)
    # Labeled images receive unlabeled content and its pseudo-label in their own uncertain patches...
    assert torch.equal(mixed_images[:2, 0] == -1.0, labeled_mask)
    assert torch.equal(mixed_targets[:2] == 3, labeled_mask)
    # ...and unlabeled images labeled content with its ground truth in theirs.
    assert torch.equal(mixed_images[2:, 0] == 1.0, unlabeled_mask)
    assert torch.equal(mixed_targets[2:] == 2, unlabeled_mask)


def test_mutual_weight_is_the_gaussian_warm_up(method):
    for step in (0, 30, 100):
        expected = math.exp(-5 * (1 - step / 100) ** 2)
        assert method.mutual_weight(Progress(step, 100)) == pytest.approx(expected)


def test_training_step_mixes_only_after_the_copy_paste_start(method):
    batch = Batch(labeled_images=images(2, 6), labels=torch.randint(0, NUM_CLASSES, (2, SIZE, SIZE)),
                  unlabeled={"strong": images(2, 7)})
    before = method.training_step(batch, Progress(10, 100))
    after = method.training_step(batch, Progress(30, 100))
    assert before.logs["loss_mixed"] == 0.0 and after.logs["loss_mixed"] > 0.0
    assert torch.isfinite(after.loss)
    method.eval()
    assert method.predict(batch.labeled_images).shape == (2, NUM_CLASSES, SIZE, SIZE)
    method.train()


def test_optimizers_split_the_sub_networks_and_sam(method):
    sgd, adam = (spec.optimizer for spec in method.optimizers())
    assert isinstance(sgd, torch.optim.SGD) and isinstance(adam, torch.optim.Adam)
    assert sgd.param_groups[0]["lr"] == 0.01 and adam.param_groups[0]["lr"] == 1e-4
    in_sgd = {id(p) for p in sgd.param_groups[0]["params"]}
    in_adam = {id(p) for p in adam.param_groups[0]["params"]}
    assert in_sgd == {id(p) for p in method.co_training.parameters()}
    for name, parameter in method.sam.image_encoder.named_parameters():
        assert (id(parameter) in in_adam) == ("adapter" in name), name
    assert {id(p) for p in method.learnable_prompt.parameters()} <= in_adam


def test_vnet_differs_from_the_unet_and_keeps_the_size():
    vnet = VNet2D(VNet2DConfig(in_channels=1, num_classes=3, widths=(4, 8, 16, 32)))
    assert vnet(torch.rand(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    stages = [sum(isinstance(m, torch.nn.Conv2d) for m in s.modules()) for s in vnet.encoder_stages]
    assert stages == [1, 2, 3, 3]
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in vnet.modules())
    with pytest.raises(ValueError, match="multiples of 8"):
        vnet(torch.rand(1, 1, 36, 36))


def test_hybrid_aggregation_has_the_official_widths_at_the_benchmark_unet():
    aggregation = HybridAggregation(NUM_CLASSES, 0.5)
    first_fusion_conv, last_fusion_conv = aggregation.fusion[0][0], aggregation.fusion[1][0]
    assert (first_fusion_conv.in_channels, first_fusion_conv.out_channels) == (64, 64)
    assert last_fusion_conv.out_channels == NUM_CLASSES
    assert aggregation.entropy_view[0][0].in_channels == 2
    assert aggregation.dissimilarity_view[0][0].in_channels == NUM_CLASSES
    assert aggregation.prediction_view[0][0].in_channels == 2 * NUM_CLASSES


def test_search_space_names_real_hyper_parameters():
    values = KnowSAM.search_space(optuna.trial.FixedTrial(
        {"kd_temperature": 4.0, "entropy_weight": 0.5, "mutual_weight": 2.0, "sam_lr": 3e-4}))
    assert KnowSAM.params_from_dict(values) == KnowSAMParams(kd_temperature=4.0, entropy_weight=0.5,
                                                            mutual_weight=2.0, sam_lr=3e-4)


def test_smoke_run_through_the_cli(tmp_path, smoke_args):
    assert main(["run", "--methods", "knowsam", "--dataset", "synthetic", "--labels", "2", "--seeds", "1",
                 "--out", str(tmp_path), "--sam-model", "tiny", "--sam-random-init", *smoke_args]) == 0
    (summary_path,) = tmp_path.rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["method"] == "knowsam" and summary["family"] == "sam" and RANDOM_INIT_SAM in summary["flags"]
    dice = [value for key, value in summary["metrics"].items() if key.startswith("dice")]
    assert dice and all(math.isfinite(value) for value in dice)


def spy_on_step(method: KnowSAM, monkeypatch) -> dict:
    """Record the co-training outputs and SAM's logits of the next ``training_step``."""
    captured: dict = {"co_training": []}
    real_forward, real_sam_prediction = method.co_training.forward, method.sam_prediction

    def forward(*args, **kwargs):
        captured["co_training"].append(real_forward(*args, **kwargs))
        return captured["co_training"][-1]

    def sam_prediction(images, fused_logits):
        captured["sam_logits"] = real_sam_prediction(images, fused_logits)
        return captured["sam_logits"]

    monkeypatch.setattr(method.co_training, "forward", forward)
    monkeypatch.setattr(method, "sam_prediction", sam_prediction)
    return captured


def test_total_loss_before_mixing_is_eq_14_written_out(method, monkeypatch):
    """Eq. 14 + L_sam from the step's own network outputs, with each term written out independently:
    Eq. 12's SEG sums, Hinton's T^2-scaled KL to SAM's softened map (Eq. 9-10), Eq. 13's entropies
    weighted by lambda_e = 0.9, Eq. 5's soft cross-entropies weighted by the Gaussian lambda_m(t)."""
    from bench import ce_dice_loss

    captured = spy_on_step(method, monkeypatch)
    batch = Batch(labeled_images=images(2, 11), labels=torch.randint(0, NUM_CLASSES, (2, SIZE, SIZE)),
                  unlabeled={"strong": images(2, 12)})
    step = method.training_step(batch, Progress(10, 100))
    (outputs,), sam_logits, labels = captured["co_training"], captured["sam_logits"].detach(), batch.labels
    a, b, fused = (t.detach() for t in (outputs.logits_a, outputs.logits_b, outputs.fused_logits))

    def seg(logits, target):
        return ce_dice_loss(logits, target, ce_weight=1.0, dice_weight=1.0)

    def hinton(student, teacher, temperature=10.0):
        teacher_probs = torch.softmax(teacher / temperature, dim=1)
        kl = teacher_probs * (torch.log_softmax(teacher / temperature, 1) - torch.log_softmax(student / temperature, 1))
        return temperature**2 * kl.sum(dim=1).mean()

    def entropy(logits):
        return torch.special.entr(torch.softmax(logits, dim=1)).sum(dim=1).mean()

    def soft_ce(logits, target_logits):
        return -(torch.softmax(target_logits, 1) * torch.log_softmax(logits, 1)).sum(dim=1).mean()

    supervised = seg(a[:2], labels) + seg(b[:2], labels) + seg(fused[:2], labels)
    distillation = hinton(a, sam_logits) + hinton(b, sam_logits)
    mutual = soft_ce(a, b) + soft_ce(b, a)
    lambda_m = math.exp(-5 * (1 - 10 / 100) ** 2)
    expected = (supervised + distillation + 0.9 * (entropy(a) + entropy(b)) + lambda_m * mutual
                + seg(sam_logits[:2], labels))
    assert step.logs["loss_mixed"] == 0.0
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_mixing_pastes_by_the_fused_uncertainty_with_sam_pseudo_labels_and_predict_is_y_f(method, monkeypatch):
    captured = spy_on_step(method, monkeypatch)
    real_copy_paste = methods.knowsam.uncertainty_guided_copy_paste

    def copy_paste(*args):
        captured["copy_paste_args"] = args
        return real_copy_paste(*args)

    monkeypatch.setattr(methods.knowsam, "uncertainty_guided_copy_paste", copy_paste)
    batch = Batch(labeled_images=images(2, 13), labels=torch.randint(0, NUM_CLASSES, (2, SIZE, SIZE)),
                  unlabeled={"strong": images(2, 14)})
    method.training_step(batch, Progress(30, 100))
    args = captured["copy_paste_args"]
    fused = captured["co_training"][0].fused_logits.detach()
    fused_entropy = torch.special.entr(torch.softmax(fused, dim=1)).sum(dim=1)
    assert torch.equal(args[3], captured["sam_logits"][2:].detach().argmax(dim=1))  # SAM's argmax labels U
    torch.testing.assert_close(torch.cat([args[4], args[5]]), fused_entropy, rtol=1e-4, atol=1e-5)
    assert torch.equal(args[1], batch.labels) and torch.equal(args[2], batch.unlabeled["strong"])

    method.eval()
    with torch.no_grad():
        outputs = method.co_training(batch.labeled_images)
        prediction = method.predict(batch.labeled_images)
    method.train()
    assert torch.equal(prediction, outputs.fused_logits)  # §IV-B: Y_f, not either sub-network
    assert not torch.allclose(prediction, outputs.logits_a) and not torch.allclose(prediction, outputs.logits_b)
