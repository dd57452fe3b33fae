"""InteractMatch: determined prompts (centre point + tight box) and ambiguous prompts (random point +
enlarged offset box that still encloses the component) from the other branch's output; one-way
distillation from branch 1 to branch 2; the PAC target is the detached ensemble; smoke run."""
from __future__ import annotations

import json
import math

import optuna
import pytest
import torch

from bench import Batch, Progress, TaskSpec
from bench.cli import main
from bench.method import RANDOM_INIT_SAM
from methods.interactmatch import InteractMatch, InteractMatchParams
from sam_reference_losses import dice_ce, half_dice_ce, hard_ensemble

NUM_CLASSES = 4
SIZE = 32
AFTER_WARM_UP = Progress(500, 1000)
LARGE_OFFSET = 50.0
COMPONENT_ROWS, COMPONENT_COLUMNS = slice(5, 23), slice(3, 13)
TIGHT_BOX = [3, 5, 12, 22]
"""Inclusive ``(x0, y0, x1, y1)`` of the class-1 component decoder 1 is made to predict."""


def tiny_interactmatch(**params) -> InteractMatch:
    torch.manual_seed(0)
    task = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(SIZE, SIZE), total_steps=1000,
                    options={"sam_model": "tiny", "sam_random_init": True})
    return InteractMatch(InteractMatchParams(**params), task)


def make_batch() -> Batch:
    generator = torch.Generator().manual_seed(1)
    return Batch(
        labeled_images=torch.rand(2, 1, SIZE, SIZE, generator=generator),
        labels=torch.randint(0, NUM_CLASSES, (2, SIZE, SIZE), generator=generator),
        unlabeled={"weak": torch.rand(2, 1, SIZE, SIZE, generator=generator)},
    )




def test_determined_and_ambiguous_prompts_come_from_the_other_branch_and_ambiguous_boxes_enclose_the_component():
    method = tiny_interactmatch(box_offset=0.2)
    # Branch 1 (index 0) predicts class 1 on a rectangle plus a smaller island, background elsewhere.
    offset = torch.zeros(1, NUM_CLASSES, SIZE, SIZE)
    offset[:, 0] = LARGE_OFFSET
    for rows, columns in ((COMPONENT_ROWS, COMPONENT_COLUMNS), (slice(27, 30), slice(26, 29))):
        offset[:, 0, rows, columns] = 0.0
        offset[:, 1, rows, columns] = LARGE_OFFSET
    background_only = torch.zeros(1, NUM_CLASSES, SIZE, SIZE)
    background_only[:, 0] = LARGE_OFFSET
    unprompted_offsets = [offset, background_only]
    calls = []
    original = method.sam.decode

    def decode(image_embeddings, decoder_index=0, **prompts):
        logits = original(image_embeddings, decoder_index, **prompts)
        if prompts.get("points") is None and prompts.get("boxes") is None:
            return logits + unprompted_offsets[decoder_index]
        calls.append((decoder_index, prompts))
        return logits

    method.sam.decode = decode
    ambiguous_boxes, determined_points, ambiguous_points = [], [], []
    for _ in range(3):
        calls.clear()
        method.training_step(make_batch(), AFTER_WARM_UP)
        (_, determined), (_, ambiguous) = [call for call in calls if call[0] == 1]  # branch 2, prompted from branch 1
        for prompts in (determined, ambiguous):
            assert prompts["points"][1].tolist() == [[0, 1, -1, -1]] * 4
            assert prompts["box_labels"].tolist() == [[1, -1, -1]] * 4  # foreground classes only
            points = prompts["points"][0][:, 1]
            assert ((points[:, 0] >= 3) & (points[:, 0] <= 12) & (points[:, 1] >= 5) & (points[:, 1] <= 22)).all()
        determined_points.append(determined["points"][0][:, 1])
        ambiguous_points.append(ambiguous["points"][0][:, 1])
        assert determined["boxes"][:, 0].tolist() == [TIGHT_BOX] * 4  # the island is not part of the ROI
        box = ambiguous["boxes"][:, 0]
        assert (box[:, :2] <= torch.tensor(TIGHT_BOX[:2])).all() and (box[:, 2:] >= torch.tensor(TIGHT_BOX[2:])).all()
        # At most twice the margin beyond the tight box: enlarged by 0.2 of the extent, shifted within it.
        extent = torch.tensor([10.0, 18.0, 10.0, 18.0])
        assert ((box - torch.tensor(TIGHT_BOX, dtype=torch.float)).abs() <= 2 * 0.2 * extent + 1e-4).all()
        ambiguous_boxes.append(box)
        # Branch 1 is prompted from branch 2's output, which has no foreground at all.
        for _, prompts in [call for call in calls if call[0] == 0]:
            assert prompts["points"][1].tolist() == [[0, -1, -1, -1]] * 4
    # P_d's point is the component's centre (columns 3-12, rows 5-22: (7.5, 13.5)), the same every step;
    # P_a's is drawn at random.
    centres = torch.cat(determined_points)
    assert (centres == centres[0]).all() and ((centres - torch.tensor([7.5, 13.5])).abs() <= 1).all()
    randoms = torch.cat(ambiguous_points)
    assert len({tuple(point.tolist()) for point in randoms}) > 1
    all_boxes = torch.cat(ambiguous_boxes)
    assert not (all_boxes == torch.tensor(TIGHT_BOX, dtype=torch.float)).all(dim=1).any()  # always enlarged
    assert len({tuple(box.tolist()) for box in all_boxes}) > 1  # and shifted at random


def test_distillation_is_one_way_from_branch_one_to_branch_two():
    method = tiny_interactmatch()
    images = make_batch().labeled_images
    embeddings = method.sam.embed(images)
    unprompted = [method.sam.decode(embeddings, k, output_size=(SIZE, SIZE)) for k in (0, 1)]
    loss = method.distillation_loss(unprompted)
    teacher_probs = torch.softmax(unprompted[0], dim=1)
    expected = (teacher_probs * (teacher_probs.log() - torch.log_softmax(unprompted[1], dim=1))).sum(dim=1).mean()
    torch.testing.assert_close(loss, expected)
    assert loss > 0
    teacher, student = method.sam.decoders
    teacher_grads = torch.autograd.grad(loss, list(teacher.parameters()), retain_graph=True, allow_unused=True)
    student_grads = torch.autograd.grad(loss, list(student.parameters()), allow_unused=True)
    assert all(grad is None or not grad.any() for grad in teacher_grads)
    assert any(grad is not None and grad.abs().sum() > 0 for grad in student_grads)


def test_pac_target_is_the_detached_ensemble_and_cross_supervision_goes_across_branches():
    generator = torch.Generator().manual_seed(3)

    def logits() -> torch.Tensor:
        return (3 * torch.randn(2, NUM_CLASSES, 8, 8, generator=generator)).requires_grad_()

    unprompted = [logits(), logits()]
    prompted = [{"determined": logits(), "ambiguous": logits()} for _ in range(2)]
    cross_loss, pac_loss = InteractMatch.unlabeled_losses(unprompted, prompted)
    ensemble = [hard_ensemble(p["determined"], p["ambiguous"]) for p in prompted]
    assert not torch.equal(ensemble[0], prompted[0]["determined"].argmax(1))
    torch.testing.assert_close(pac_loss, sum(half_dice_ce(prompted[k]["ambiguous"], ensemble[k]) for k in (0, 1)))
    torch.testing.assert_close(
        cross_loss, half_dice_ce(unprompted[0], ensemble[1]) + half_dice_ce(unprompted[1], ensemble[0]))
    grads = torch.autograd.grad(pac_loss, [p[kind] for p in prompted for kind in ("determined", "ambiguous")],
                                allow_unused=True)
    assert grads[0] is None and grads[2] is None and grads[1].abs().sum() > 0 and grads[3].abs().sum() > 0


def test_total_loss_is_eq_4_to_7_written_out(cross_prompt_outputs, monkeypatch):
    """L_total from the step's own branch outputs: Eq. 5-6 (0.8 Dice + 0.2 CE, labeled rows), lambda_1 = 1
    times the pixel-wise KL from branch 1 to branch 2 over all rows (Eq. 2-3), lambda_2 = 0.4 times Eq. 7
    and lambda_3 = 0.05 times Eq. 1 on the unlabeled rows, with the hard ensemble targets recomputed here;
    before the warm-up ends, Eq. 5 alone."""
    import methods.interactmatch as interactmatch_module

    captured = cross_prompt_outputs(interactmatch_module)
    method, batch = tiny_interactmatch(), make_batch()
    # A random decoder's logits are near zero, where KL is nearly symmetric; scaled up, the KL's direction
    # (which branch teaches) changes the total.
    original_decode = method.sam.decode
    monkeypatch.setattr(method.sam, "decode", lambda *args, **kwargs: 20.0 * original_decode(*args, **kwargs))
    loss = method.training_step(batch, AFTER_WARM_UP).loss
    unprompted, prompted = captured["unprompted"], captured["prompted"]
    labels, lab, unl = batch.labels, slice(0, 2), slice(2, None)

    def supervision(logits):
        return dice_ce(logits, labels, 0.8)

    teacher, student = (torch.log_softmax(logits, dim=1) for logits in unprompted)
    distillation = (teacher.exp() * (teacher - student)).sum(dim=1).mean()
    targets = [hard_ensemble(outputs["determined"], outputs["ambiguous"])[unl] for outputs in prompted]
    sup1 = supervision(unprompted[0][lab]) + supervision(unprompted[1][lab])
    sup2 = sum(supervision(outputs[kind][lab]) for outputs in prompted for kind in ("determined", "ambiguous"))
    cross = half_dice_ce(unprompted[0][unl], targets[1]) + half_dice_ce(unprompted[1][unl], targets[0])
    pac = half_dice_ce(prompted[0]["ambiguous"][unl], targets[0]) + half_dice_ce(prompted[1]["ambiguous"][unl], targets[1])
    expected = sup1 + sup2 + 1.0 * distillation + 0.4 * cross + 0.05 * pac
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    warm_up = method.training_step(batch, Progress(0, 1000))
    assert set(warm_up.logs) == {"loss_sup1"}
    assert warm_up.loss.item() == pytest.approx(sup1.item(), rel=1e-5)


def test_search_space_names_real_hyper_parameters():
    values = {"distillation_weight": 2.0, "pac_weight": 0.1, "box_offset": 0.15, "base_lr": 5e-4}
    assert InteractMatch.params_from_dict(InteractMatch.search_space(optuna.trial.FixedTrial(values))) == \
        InteractMatchParams(**values)


def test_smoke_run_through_the_cli(tmp_path, smoke_args):
    assert main(["run", "--methods", "interactmatch", "--dataset", "synthetic", "--labels", "2", "--seeds", "1",
                 "--out", str(tmp_path), "--sam-model", "tiny", "--sam-random-init", *smoke_args]) == 0
    (summary_path,) = tmp_path.rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["method"] == "interactmatch" and summary["family"] == "sam" and RANDOM_INIT_SAM in summary["flags"]
    dice = [value for key, value in summary["metrics"].items() if key.startswith("dice")]
    assert dice and all(math.isfinite(value) for value in dice)
