"""SynFoC: the self/mutual-confidence ensemble ratio (Eq. 4-6), the ensembled pseudo-label (Eq. 3), the
intermediate samples (Eq. 1), the consensus-divergence regularisation (Eq. 8-10), the two Mean-Teacher
pairs and their optimisers; smoke runs of ``synfoc`` and ``synfoc-unet`` with the tiny SAM."""
from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
import torch.nn.functional as F

from bench import Batch, Progress, PseudoLabels, TaskSpec
from bench.cli import main
from bench.method import RANDOM_INIT_SAM
import methods.synfoc as synfoc
from methods.synfoc import (
    SynFoC,
    SynFoCParams,
    SynFoCUNet,
    class_agreement,
    consensus_divergence_masks,
    consensus_loss,
    divergence_loss,
    ensemble_probs,
    ensemble_ratio,
    intermediate_samples,
)

NUM_CLASSES = 4


def tiny_synfoc(cls: type = SynFoC, patch: int = 32, total_steps: int = 100, **params) -> SynFoC:
    torch.manual_seed(0)
    task = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(patch, patch), total_steps=total_steps,
                    network_widths=(4, 8, 16), options={"sam_model": "tiny", "sam_random_init": True})
    return cls(SynFoCParams(**params), task)


def tiny_batch(size: int = 32, labeled: int = 2, unlabeled: int = 3) -> Batch:
    generator = torch.Generator().manual_seed(3)
    weak = torch.rand(unlabeled, 1, size, size, generator=generator)
    return Batch(
        labeled_images=torch.rand(labeled, 1, size, size, generator=generator),
        labels=torch.randint(0, NUM_CLASSES, (labeled, size, size), generator=generator),
        unlabeled={"weak": weak, "strong": (weak + 0.1 * torch.rand(weak.shape, generator=generator)).clamp(0, 1)},
    )


def reference_agreement(first: torch.Tensor, second: torch.Tensor, num_classes: int) -> list[float]:
    """Eq. 4/5 per image, written out: mean over foreground classes of (2|A and B| + 1) / (|A| + |B| + 1)."""
    values = []
    for first_map, second_map in zip(first.tolist(), second.tolist()):
        scores = []
        for class_id in range(1, num_classes):
            a = [[pixel == class_id for pixel in row] for row in first_map]
            b = [[pixel == class_id for pixel in row] for row in second_map]
            both = sum(x and y for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b))
            size = sum(map(sum, a)) + sum(map(sum, b))
            scores.append((2 * both + 1) / (size + 1))
        values.append(sum(scores) / len(scores))
    return values


# ---- Eq. 4-6: the ensemble ratio ---------------------------------------------------------------------------


def test_alpha_is_one_when_student_teacher_and_sam_agree_and_drops_when_they_disagree():
    # Class 3 is absent from every map: agreeing on an absent class is agreement.
    labels = torch.randint(0, NUM_CLASSES - 1, (2, 12, 12), generator=torch.Generator().manual_seed(0))
    alpha, self_confidence, mutual_confidence = ensemble_ratio(labels, labels.clone(), labels.clone(), NUM_CLASSES)
    assert torch.equal(alpha, torch.ones(2)) and torch.equal(self_confidence, torch.ones(2))

    sam_labels = labels.clone()
    sam_labels[1, :6] = 0  # SAM disagrees with the U-Net teacher on image 1 only
    alpha, self_confidence, mutual_confidence = ensemble_ratio(labels, labels, sam_labels, NUM_CLASSES)
    assert alpha[0] == 1 and alpha[1] < 0.9
    assert torch.allclose(mutual_confidence, torch.tensor(reference_agreement(sam_labels, labels, NUM_CLASSES)))

    student_labels = labels.clone()
    student_labels[0, :, :4] = 1  # the U-Net student drifts from its teacher on image 0 only
    alpha, self_confidence, mutual_confidence = ensemble_ratio(student_labels, labels, sam_labels, NUM_CLASSES)
    expected_self = torch.tensor(reference_agreement(student_labels, labels, NUM_CLASSES))
    assert torch.allclose(self_confidence, expected_self) and self_confidence[0] < 1 and self_confidence[1] == 1
    assert torch.allclose(alpha, expected_self * mutual_confidence)  # Eq. 6: the product


def test_class_agreement_matches_a_written_out_dice_and_ignores_background():
    generator = torch.Generator().manual_seed(1)
    first = torch.randint(0, NUM_CLASSES, (3, 9, 7), generator=generator)
    second = torch.randint(0, NUM_CLASSES, (3, 9, 7), generator=generator)
    assert torch.allclose(class_agreement(first, second, NUM_CLASSES),
                          torch.tensor(reference_agreement(first, second, NUM_CLASSES)))
    # One pixel is background in the first map and class 1 in the second: class 1 scores
    # (2*15+1)/(15+16+1), classes 2-3 (absent from both) score 1; background (1/2) is not averaged in.
    first, second = torch.ones(1, 4, 4, dtype=torch.long), torch.ones(1, 4, 4, dtype=torch.long)
    first[0, 0, 0] = 0
    expected = ((2 * 15 + 1) / (15 + 16 + 1) + 1 + 1) / 3
    assert class_agreement(first, second, NUM_CLASSES).item() == pytest.approx(expected, rel=1e-6)


def test_ensembled_probabilities_follow_alpha_per_image():
    generator = torch.Generator().manual_seed(2)
    unet_probs = torch.softmax(torch.randn(3, NUM_CLASSES, 5, 5, generator=generator), dim=1)
    sam_probs = torch.softmax(torch.randn(3, NUM_CLASSES, 5, 5, generator=generator), dim=1)
    ensembled = ensemble_probs(torch.tensor([1.0, 0.0, 0.25]), unet_probs, sam_probs)
    assert torch.allclose(ensembled[0], unet_probs[0]) and torch.allclose(ensembled[1], sam_probs[1])
    assert torch.allclose(ensembled[2], 0.25 * unet_probs[2] + 0.75 * sam_probs[2])
    assert torch.allclose(ensembled.sum(dim=1), torch.ones(3, 5, 5))


def test_training_step_ensembles_the_teachers_on_the_weak_view(monkeypatch):
    captured = {}
    real_ratio, real_mixing = synfoc.ensemble_ratio, synfoc.intermediate_samples

    def spy_ratio(*args):
        captured["ratio_args"], captured["ratio"] = args, real_ratio(*args)
        return captured["ratio"]

    def spy_mixing(box, labeled_images, labels, strong_images, pseudo_labels):
        captured["pseudo_labels"] = pseudo_labels
        return real_mixing(box, labeled_images, labels, strong_images, pseudo_labels)

    monkeypatch.setattr(synfoc, "ensemble_ratio", spy_ratio)
    monkeypatch.setattr(synfoc, "intermediate_samples", spy_mixing)
    method, batch = tiny_synfoc(), tiny_batch()
    method.eval()  # no dropout, so every prediction below is reproducible
    weak = batch.unlabeled["weak"]
    with torch.no_grad():
        assert torch.equal(method.unet(weak), method.unet_teacher(weak))  # the teacher starts as a copy
        for parameter in method.unet.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
        student_probs = torch.softmax(method.unet(weak), dim=1)
        unet_probs = torch.softmax(method.unet_teacher(weak), dim=1)
        sam_probs = F.interpolate(torch.softmax(method.sam_teacher.decode(method.sam_teacher.embed(weak)), dim=1),
                                  size=(32, 32), mode="bilinear", align_corners=False)
    assert not torch.equal(student_probs.argmax(1), unet_probs.argmax(1))
    method.training_step(batch, Progress(0, 100))

    student_labels, teacher_labels, sam_labels, num_classes = captured["ratio_args"]
    assert torch.equal(student_labels, student_probs.argmax(1)) and torch.equal(teacher_labels, unet_probs.argmax(1))
    assert torch.equal(sam_labels, sam_probs.argmax(1)) and num_classes == NUM_CLASSES
    alpha = captured["ratio"][0]
    confidence, labels = ensemble_probs(alpha, unet_probs, sam_probs).max(dim=1)
    assert torch.equal(captured["pseudo_labels"].labels, labels)
    assert torch.allclose(captured["pseudo_labels"].confidence, confidence)


def test_stability_score_compares_weights_not_dropout_noise():
    # The harness trains in train mode; at step 0 the teacher is a copy of the student, so Eq. 4 must
    # score 1 (the official U-Net has no dropout).  With dropout in those passes it does not.
    scores = {}
    for pseudo_label_dropout in (False, True):
        method, batch = tiny_synfoc(pseudo_label_dropout=pseudo_label_dropout), tiny_batch()
        method.train()
        torch.manual_seed(1)
        scores[pseudo_label_dropout] = method.training_step(batch, Progress(0, 100)).logs["self_confidence"]
        dropout_layers = [layer for layer in method.unet.modules() if isinstance(layer, torch.nn.Dropout)]
        assert dropout_layers and all(layer.training for layer in dropout_layers)  # restored for training
        weak = batch.unlabeled["weak"]
        assert not torch.equal(method.unet(weak), method.unet(weak))  # the students' passes keep dropout
    assert scores[False] == 1.0
    assert scores[True] < 0.99


# ---- Eq. 1: intermediate samples -----------------------------------------------------------------------------


def test_mixed_pseudo_label_uses_the_same_box_as_the_mixed_image():
    box = torch.zeros(2, 8, 8)
    box[0, 2:5, 1:6] = 1
    box[1, 4:8, 0:3] = 1
    labeled_images, strong_images = torch.ones(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    labels = torch.full((2, 8, 8), 2)
    pseudo_labels = PseudoLabels(torch.full((2, 8, 8), 1), torch.full((2, 8, 8), 0.5))
    images, targets = intermediate_samples(box, labeled_images, labels, strong_images, pseudo_labels)
    from_labeled = images[:, 0] == 1
    assert torch.equal(from_labeled, box.bool())
    assert torch.equal(targets.labels == 2, from_labeled) and torch.equal(targets.confidence == 1, from_labeled)
    assert torch.equal(targets.confident(0.95).bool(), from_labeled)  # pasted labels always count


def test_training_step_pastes_labeled_images_and_labels_through_one_box(monkeypatch):
    captured = {}
    real_boxes, real_mixing = synfoc.cutmix_boxes, synfoc.intermediate_samples

    def spy_boxes(*args, **kwargs):
        captured["box"] = real_boxes(*args, **kwargs)
        return captured["box"]

    def spy_mixing(*args):
        captured["ensembled"] = args[-1]
        captured["images"], captured["targets"] = real_mixing(*args)
        return captured["images"], captured["targets"]

    monkeypatch.setattr(synfoc, "cutmix_boxes", spy_boxes)
    monkeypatch.setattr(synfoc, "intermediate_samples", spy_mixing)
    method, batch = tiny_synfoc(), tiny_batch(labeled=2, unlabeled=3)
    method.training_step(batch, Progress(0, 100))

    box = captured["box"].bool()
    assert box.flatten(1).any(dim=1).all()  # probability 1: every intermediate sample gets a box
    partner = torch.tensor([0, 1, 0])  # labeled images cycle when the labeled batch is smaller
    expected_images = torch.where(box[:, None], batch.labeled_images[partner], batch.unlabeled["strong"])
    assert torch.equal(captured["images"], expected_images)
    targets = captured["targets"]
    assert torch.equal(targets.labels[box], batch.labels[partner][box])
    ensembled = captured["ensembled"]  # Q^EN_w and max P^EN_w outside the box
    assert torch.equal(targets.labels[~box], ensembled.labels[~box])
    assert torch.equal(targets.confidence[~box], ensembled.confidence[~box])
    assert torch.all(targets.confidence[box] == 1)


# ---- Eq. 8-10: consensus-divergence regularisation -----------------------------------------------------------


def test_consensus_and_divergence_masks_partition_the_image():
    generator = torch.Generator().manual_seed(4)
    unet_probs = torch.softmax(torch.randn(2, NUM_CLASSES, 6, 6, generator=generator), dim=1)
    sam_probs = torch.softmax(torch.randn(2, NUM_CLASSES, 6, 6, generator=generator), dim=1)
    consensus, divergence = consensus_divergence_masks(unet_probs, sam_probs)
    assert torch.equal(consensus + divergence, torch.ones(2, 1, 6, 6))
    assert torch.equal(consensus * divergence, torch.zeros(2, 1, 6, 6))
    assert torch.equal(consensus[:, 0].bool(), unet_probs.argmax(1) == sam_probs.argmax(1))
    assert 0 < consensus.mean() < 1


def test_consensus_entropy_and_divergence_match_the_equations_and_train_both_students():
    generator = torch.Generator().manual_seed(5)
    unet_logits = torch.randn(2, NUM_CLASSES, 6, 6, generator=generator, requires_grad=True)
    sam_logits = torch.randn(2, NUM_CLASSES, 6, 6, generator=generator, requires_grad=True)
    unet_probs, sam_probs = torch.softmax(unet_logits, 1), torch.softmax(sam_logits, 1)
    consensus, divergence = consensus_divergence_masks(unet_probs, sam_probs)

    elements = unet_probs.numel()  # S = W H C, times the batch
    unet_entropy = -(unet_probs * torch.log(unet_probs)).sum(dim=1, keepdim=True)
    sam_entropy = -(sam_probs * torch.log(sam_probs)).sum(dim=1, keepdim=True)
    expected_consensus = ((unet_entropy * consensus).sum() + (sam_entropy * consensus).sum()) / elements / 2
    expected_divergence = (((unet_probs - sam_probs) ** 2) * divergence).sum() / elements
    consensus_term = consensus_loss(unet_probs, sam_probs, consensus)
    divergence_term = divergence_loss(unet_probs, sam_probs, divergence)
    assert torch.allclose(consensus_term, expected_consensus, atol=1e-5)
    assert torch.allclose(divergence_term, expected_divergence, atol=1e-7)

    for term in (consensus_term, divergence_term):
        unet_grad, sam_grad = torch.autograd.grad(term, [unet_logits, sam_logits], retain_graph=True)
        assert unet_grad.abs().sum() > 0 and sam_grad.abs().sum() > 0
    assert divergence_loss(unet_probs, unet_probs.clone(), torch.ones_like(consensus)) == 0


# ---- Eq. 2, teachers, optimisers ------------------------------------------------------------------------------


def test_lambda_is_the_official_gaussian_staircase_over_the_whole_run():
    method = tiny_synfoc(total_steps=1000)
    assert method.consistency_weight(Progress(0, 1000)) == pytest.approx(math.exp(-5))
    assert method.consistency_weight(Progress(500, 1000)) == pytest.approx(math.exp(-5 * 0.25))
    assert method.consistency_weight(Progress(501, 1000)) == method.consistency_weight(Progress(500, 1000))
    assert method.consistency_weight(Progress(1000, 1000)) == pytest.approx(1.0)


def test_total_loss_is_supervised_plus_lambda_times_the_unlabeled_terms():
    method, batch = tiny_synfoc(), tiny_batch()
    output = method.training_step(batch, Progress(60, 100))
    logs = output.logs
    expected = (logs["loss_supervised_unet"] + logs["loss_supervised_sam"] + logs["consistency_weight"] * (
        logs["loss_unlabeled_unet"] + logs["loss_unlabeled_sam"] + logs["loss_consensus"] + logs["loss_divergence"]))
    assert float(output.loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert 0 < logs["ensemble_ratio"] <= 1
    assert logs["consistency_weight"] == method.consistency_weight(Progress(60, 100))


def test_sam_supervised_loss_is_ce_plus_dice_at_its_low_resolution():
    method, batch = tiny_synfoc(patch=64), tiny_batch(size=64)
    logs = method.training_step(batch, Progress(0, 100)).logs
    with torch.no_grad():
        low_res_logits = method.sam.decode(method.sam.embed(batch.labeled_images))
    assert low_res_logits.shape[-2:] == (32, 32)
    low_res_labels = batch.labels[:, 1::2, 1::2]
    probs = torch.softmax(low_res_logits, dim=1)
    one_hot = F.one_hot(low_res_labels, NUM_CLASSES).permute(0, 3, 1, 2).float()
    intersection, sizes = (probs * one_hot).sum((0, 2, 3)), (probs**2).sum((0, 2, 3)) + one_hot.sum((0, 2, 3))
    dice = 1 - (2 * intersection + 1e-5) / (sizes + 1e-5)
    expected = F.cross_entropy(low_res_logits, low_res_labels) + dice.mean()
    assert logs["loss_supervised_sam"] == pytest.approx(float(expected), rel=1e-4)


def test_teachers_get_no_gradient_and_are_emas_of_their_students():
    method, batch = tiny_synfoc(), tiny_batch()
    specs = method.optimizers()
    method.training_step(batch, Progress(0, 100)).loss.backward()
    assert all(parameter.grad is None for parameter in method.unet_teacher.parameters())
    assert all(parameter.grad is None for parameter in method.sam_teacher.parameters())
    lora_name = next(name for name, _ in method.sam.named_parameters() if "lora_B" in name)
    assert dict(method.sam.named_parameters())[lora_name].grad is not None

    for spec in specs:
        spec.optimizer.step()
    before = {
        "unet": {name: value.clone() for name, value in method.unet_teacher.named_parameters()},
        "sam": {name: value.clone() for name, value in method.sam_teacher.named_parameters()},
    }
    step = 500  # late enough that SSL4MIS' "true average" warm-up no longer caps the decay
    method.on_step_end(Progress(step, 1000))
    decay = method.params.ema_decay
    for key, student, teacher in (("unet", method.unet, method.unet_teacher), ("sam", method.sam, method.sam_teacher)):
        student_params = dict(student.named_parameters())
        moved = 0
        for name, value in teacher.named_parameters():
            expected = decay * before[key][name] + (1 - decay) * student_params[name].detach()
            assert torch.allclose(value, expected, atol=1e-6), (key, name)
            moved += int(not torch.equal(value, before[key][name]))
        assert moved > 0, key
    sam_teacher_params = dict(method.sam_teacher.named_parameters())
    assert not torch.equal(sam_teacher_params[lora_name], before["sam"][lora_name])  # the LoRA is averaged too


def test_sgd_trains_the_unet_student_and_adamw_the_sam_student_at_constant_rates():
    method = tiny_synfoc()
    unet_spec, sam_spec = method.optimizers()
    assert isinstance(unet_spec.optimizer, torch.optim.SGD) and isinstance(sam_spec.optimizer, torch.optim.AdamW)
    unet_group, sam_group = unet_spec.optimizer.param_groups[0], sam_spec.optimizer.param_groups[0]
    assert (unet_group["lr"], unet_group["momentum"], unet_group["weight_decay"]) == (0.03, 0.9, 1e-4)
    assert (sam_group["lr"], sam_group["weight_decay"], sam_group["betas"]) == (1e-4, 0.1, (0.9, 0.999))
    assert {id(p) for p in unet_group["params"]} == {id(p) for p in method.unet.parameters()}
    assert {id(p) for p in sam_group["params"]} == {id(p) for p in method.sam.parameters() if p.requires_grad}
    frozen_encoder = [name for name, p in method.sam.image_encoder.named_parameters() if not p.requires_grad]
    assert frozen_encoder and all("lora_" not in name for name in frozen_encoder)
    assert unet_spec.lr_lambda(0.0) == unet_spec.lr_lambda(0.7) == sam_spec.lr_lambda(0.99) == 1.0


def test_synfoc_predicts_with_the_sam_student_and_synfoc_unet_with_the_unet_student():
    assert set(vars(SynFoCUNet)) - {"__module__", "__doc__", "__qualname__"} == {"name", "paper", "predict"}
    images = tiny_batch().labeled_images
    for cls, network in ((SynFoC, "sam"), (SynFoCUNet, "unet")):
        method = tiny_synfoc(cls)
        method.eval()
        with torch.no_grad():
            for teacher in (method.sam_teacher, method.unet_teacher):  # a teacher unlike its student
                for parameter in teacher.parameters():
                    parameter.add_(0.1 * torch.randn_like(parameter))
            prediction = method.predict(images)
            assert torch.equal(prediction, getattr(method, network)(images))
            assert not torch.allclose(prediction, getattr(method, f"{network}_teacher")(images))
        assert method.predict(images).shape == (2, NUM_CLASSES, 32, 32)
        assert RANDOM_INIT_SAM in method.result_flags and method.family == "sam"


def test_search_space_names_real_hyper_parameters():
    chosen = {"confidence_threshold": 0.9, "consistency": 0.5, "unet_lr": 0.01, "sam_lr": 2e-4}
    values = SynFoC.search_space(optuna.trial.FixedTrial(chosen))
    assert SynFoC.params_from_dict(values) == SynFoCParams(**chosen)


def test_smoke_runs_of_both_rows_through_the_cli(tmp_path, smoke_args):
    assert main(["run", "--methods", "synfoc,synfoc-unet", "--dataset", "synthetic", "--labels", "2", "--seeds", "1",
                 "--out", str(tmp_path), "--sam-model", "tiny", "--sam-random-init", *smoke_args]) == 0
    summaries = {json.loads(path.read_text())["method"]: json.loads(path.read_text())
                 for path in tmp_path.rglob("summary.json")}
    assert set(summaries) == {"synfoc", "synfoc-unet"}
    for summary in summaries.values():
        assert summary["family"] == "sam" and RANDOM_INIT_SAM in summary["flags"]
        dice = [value for key, value in summary["metrics"].items() if key.startswith("dice")]
        assert dice and all(math.isfinite(value) for value in dice)
