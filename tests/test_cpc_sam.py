"""CPC-SAM: each decoder is prompted from the other decoder's unprompted output; the prompt-consistency
target is the detached ensemble of the centre- and random-prompted outputs; inference ensembles both
decoders; smoke run through the CLI with the tiny SAM."""
from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
import torch.nn.functional as F

from bench import Batch, Progress, TaskSpec
from bench.cli import main
from bench.dual_sam import full_resolution_upsampling_stages
from bench.method import RANDOM_INIT_SAM
from methods.cpc_sam import CPCSAM, CPCSAMParams
from sam_reference_losses import dice_ce, half_dice_ce, hard_ensemble, reference_dice

NUM_CLASSES = 4
SIZE = 32
TINY_SAM = {"sam_model": "tiny", "sam_random_init": True}
AFTER_WARM_UP = Progress(500, 1000)
HALF = SIZE // 2
LARGE_OFFSET = 50.0
"""Added to a random-init decoder's logits (a few units at most), it decides the argmax."""


def tiny_cpc_sam(total_steps: int = 1000, **params) -> CPCSAM:
    torch.manual_seed(0)
    task = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(SIZE, SIZE), total_steps=total_steps,
                    options=TINY_SAM)
    return CPCSAM(CPCSAMParams(**params), task)


def make_batch(labeled: int = 2, unlabeled: int = 2) -> Batch:
    generator = torch.Generator().manual_seed(1)
    return Batch(
        labeled_images=torch.rand(labeled, 1, SIZE, SIZE, generator=generator),
        labels=torch.randint(0, NUM_CLASSES, (labeled, SIZE, SIZE), generator=generator),
        unlabeled={"weak": torch.rand(unlabeled, 1, SIZE, SIZE, generator=generator)},
    )




def region_offset(class_id: int, columns: slice) -> torch.Tensor:
    """Logit offsets that make the argmax ``class_id`` in ``columns`` and background elsewhere."""
    offset = torch.zeros(1, NUM_CLASSES, SIZE, SIZE)
    offset[:, 0] = LARGE_OFFSET
    offset[:, 0, :, columns] = 0.0
    offset[:, class_id, :, columns] = LARGE_OFFSET
    return offset


def spy_on_decode(method: CPCSAM, unprompted_offsets: list[torch.Tensor], prompted_calls: list) -> None:
    """Unprompted outputs get ``unprompted_offsets[decoder]``; prompted calls are recorded."""
    original = method.sam.decode

    def decode(image_embeddings, decoder_index=0, **prompts):
        logits = original(image_embeddings, decoder_index, **prompts)
        if prompts.get("points") is None and prompts.get("boxes") is None:
            return logits + unprompted_offsets[decoder_index]
        prompted_calls.append((decoder_index, prompts))
        return logits

    method.sam.decode = decode


def test_each_decoder_is_prompted_from_the_other_decoders_unprompted_output():
    method = tiny_cpc_sam()
    left, right = slice(0, HALF), slice(HALF, None)
    # Decoder 1 (index 0) sees class 1 on the left half, decoder 2 (index 1) class 2 on the right half.
    calls: list = []
    spy_on_decode(method, [region_offset(1, left), region_offset(2, right)], calls)
    method.training_step(make_batch(), AFTER_WARM_UP)

    assert [decoder for decoder, _ in calls] == [0, 0, 1, 1]  # centre and random prompt per decoder
    for decoder, prompts in calls:
        coordinates, labels = prompts["points"]
        assert prompts["frame_size"] == (SIZE, SIZE) and prompts["boxes"] is None
        if decoder == 1:  # prompted from decoder 1's output: background and class 1 only
            assert labels.tolist() == [[0, 1, -1, -1]] * 4
            assert (coordinates[:, 1, 0] < HALF).all() and (coordinates[:, 0, 0] >= HALF).all()
        else:  # prompted from decoder 2's output: background and class 2 only
            assert labels.tolist() == [[0, -1, 2, -1]] * 4
            assert (coordinates[:, 2, 0] >= HALF).all() and (coordinates[:, 0, 0] < HALF).all()
    # The first call of each decoder is the centre point: the middle of its half, the same every time.
    centre_for_second_decoder = calls[2][1]["points"][0][:, 1]
    assert torch.all((centre_for_second_decoder[:, 0] - (HALF - 1) / 2).abs() <= 0.5)
    assert torch.all((centre_for_second_decoder[:, 1] - (SIZE - 1) / 2).abs() <= 0.5)


def test_supervised_only_phase_trains_unprompted_outputs_on_labeled_images():
    method = tiny_cpc_sam(total_steps=50_000)
    assert method.supervised_only(Progress(4_999, 50_000)) and not method.supervised_only(Progress(5_000, 50_000))
    calls: list = []
    spy_on_decode(method, [torch.zeros(()), torch.zeros(())], calls)
    batch = make_batch()
    output = method.training_step(batch, Progress(0, 50_000))
    assert not calls and set(output.logs) == {"loss_supervised"}
    embeddings = method.sam.embed(batch.labeled_images)
    expected = 0.0
    for decoder in (0, 1):
        logits = method.sam.decode(embeddings, decoder, output_size=(SIZE, SIZE))
        expected = expected + 0.2 * F.cross_entropy(logits, batch.labels) + 0.8 * reference_dice(
            torch.softmax(logits, dim=1), batch.labels)
    torch.testing.assert_close(output.loss, expected)


def test_prompt_consistency_target_is_the_detached_ensemble_of_centre_and_random_outputs():
    generator = torch.Generator().manual_seed(3)

    def logits() -> torch.Tensor:
        return (3 * torch.randn(2, NUM_CLASSES, 8, 8, generator=generator)).requires_grad_()

    unprompted = [logits(), logits()]
    prompted = [{"center": logits(), "random": logits()} for _ in range(2)]
    cross_prompt_loss, prompt_consistency_loss = CPCSAM.unlabeled_losses(unprompted, prompted)

    ensemble = [hard_ensemble(p["center"], p["random"]) for p in prompted]
    assert not torch.equal(ensemble[0], prompted[0]["center"].argmax(1))
    assert not torch.equal(ensemble[0], prompted[0]["random"].argmax(1))
    torch.testing.assert_close(
        prompt_consistency_loss, sum(half_dice_ce(prompted[k]["random"], ensemble[k]) for k in (0, 1)))
    # Eq. 1: decoder k's unprompted output learns from the *other* decoder's prompted ensemble.
    torch.testing.assert_close(
        cross_prompt_loss, half_dice_ce(unprompted[0], ensemble[1]) + half_dice_ce(unprompted[1], ensemble[0]))
    assert not torch.allclose(
        cross_prompt_loss, half_dice_ce(unprompted[0], ensemble[0]) + half_dice_ce(unprompted[1], ensemble[1]))

    prompted_outputs = [p[kind] for p in prompted for kind in ("center", "random")]
    consistency_grads = torch.autograd.grad(
        prompt_consistency_loss, prompted_outputs + unprompted, retain_graph=True, allow_unused=True)
    centre_0, random_0, centre_1, random_1, unprompted_0, unprompted_1 = consistency_grads
    assert centre_0 is None and centre_1 is None and unprompted_0 is None and unprompted_1 is None
    assert random_0.abs().sum() > 0 and random_1.abs().sum() > 0
    cross_grads = torch.autograd.grad(cross_prompt_loss, prompted_outputs + unprompted, allow_unused=True)
    assert all(grad is None for grad in cross_grads[:4]) and all(grad.abs().sum() > 0 for grad in cross_grads[4:])


def test_total_loss_weights_cross_prompting_and_consistency_by_the_paper_lambdas():
    method = tiny_cpc_sam()
    output = method.training_step(make_batch(), AFTER_WARM_UP)
    logs = output.logs
    expected = logs["loss_supervised"] + 0.4 * logs["loss_cross_prompt"] + 0.05 * logs["loss_prompt_consistency"]
    assert float(output.loss.detach()) == pytest.approx(expected, rel=1e-5)
    output.loss.backward()
    assert all(decoder.mask_tokens.weight.grad.abs().sum() > 0 for decoder in method.sam.decoders)
    lora = [parameter for name, parameter in method.sam.image_encoder.named_parameters() if "lora_" in name]
    assert any(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in lora)
    # §3: the image encoder is frozen but for its LoRA; the prompt encoder ("all the parameters in P")
    # learns, its class point embeddings through the cross prompts.
    frozen = [parameter for name, parameter in method.sam.image_encoder.named_parameters() if "lora_" not in name]
    assert frozen and not any(parameter.requires_grad for parameter in frozen)
    point_embeddings = method.sam.prompt_encoder.point_embeddings
    assert all(embedding.weight.requires_grad for embedding in point_embeddings)
    assert any(embedding.weight.grad is not None and embedding.weight.grad.abs().sum() > 0
               for embedding in point_embeddings)
    (spec,) = method.optimizers()
    optimised = {id(parameter) for group in spec.optimizer.param_groups for parameter in group["params"]}
    assert optimised == {id(parameter) for parameter in method.parameters() if parameter.requires_grad}
    assert {id(parameter) for parameter in point_embeddings.parameters()} <= optimised


def test_total_loss_is_eq_1_to_3_written_out(cross_prompt_outputs):
    """L_total from the step's own decoder outputs: Eq. 3's 0.8/0.2 unprompted and four 0.5/0.5 prompted
    terms on the labeled rows, lambda_1 = 0.4 times Eq. 1 and lambda_2 = 0.05 times Eq. 2 on the unlabeled
    rows, with the hard ensemble targets recomputed here."""
    import methods.cpc_sam as cpc_sam_module

    captured = cross_prompt_outputs(cpc_sam_module)
    batch = make_batch()
    loss = tiny_cpc_sam().training_step(batch, AFTER_WARM_UP).loss
    unprompted, prompted = captured["unprompted"], captured["prompted"]
    labels, lab, unl = batch.labels, slice(0, 2), slice(2, None)

    targets = [hard_ensemble(outputs["center"], outputs["random"])[unl] for outputs in prompted]
    supervised = (sum(dice_ce(logits[lab], labels, 0.8) for logits in unprompted)
                  + sum(half_dice_ce(outputs[kind][lab], labels) for outputs in prompted for kind in ("center", "random")))
    cross = half_dice_ce(unprompted[0][unl], targets[1]) + half_dice_ce(unprompted[1][unl], targets[0])
    consistency = half_dice_ce(prompted[0]["random"][unl], targets[0]) + half_dice_ce(prompted[1]["random"][unl], targets[1])
    expected = supervised + 0.4 * cross + 0.05 * consistency
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_prediction_is_the_mean_probability_of_both_unprompted_decoders():
    method = tiny_cpc_sam().eval()
    images = make_batch().labeled_images
    with torch.no_grad():
        embeddings = method.sam.embed(images)
        probs = [torch.softmax(method.sam.decode(embeddings, k, output_size=(SIZE, SIZE)), 1) for k in (0, 1)]
        predicted = torch.softmax(method.predict(images), dim=1)
    torch.testing.assert_close(predicted, (probs[0] + probs[1]) / 2)
    assert not torch.allclose(probs[0], probs[1], atol=1e-3)  # different random initialisations


def test_architecture_class_prompts_random_decoders_and_full_resolution_output():
    method = tiny_cpc_sam()
    assert len(method.sam.prompt_encoder.point_embeddings) == NUM_CLASSES + 2
    weights = [dict(decoder.named_parameters()) for decoder in method.sam.decoders]
    assert not torch.allclose(weights[0]["mask_tokens.weight"], weights[1]["mask_tokens.weight"])
    low_res = method.sam.decode(method.sam.embed(make_batch().labeled_images), 0)
    assert low_res.shape[-2:] == (64, 64)  # the tiny SAM's 8 x 8 grid up-sampled to its 64-px input
    task = lambda model: TaskSpec(1, NUM_CLASSES, (256, 256), 10, options={"sam_model": model, "sam_random_init": True})
    assert full_resolution_upsampling_stages(task("vit_b"), 512) == 4  # CPC-SAM: 32 -> 512
    assert full_resolution_upsampling_stages(task("lite-medsam"), 512) == 2  # 64 -> 256


def test_adamw_with_official_warm_up_as_fractions_of_the_run():
    method = tiny_cpc_sam(total_steps=50_000)
    (spec,) = method.optimizers()
    group = spec.optimizer.param_groups[0]
    assert isinstance(spec.optimizer, torch.optim.AdamW)
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.1
    assert spec.lr_lambda(0.0) == pytest.approx(1 / 250)
    assert spec.lr_lambda(250 / 50_000) == pytest.approx(1.0)
    assert CPCSAM.budget_overrides["paper"] == {"iterations": 50_000, "labeled_batch": 6, "unlabeled_batch": 6}


def test_search_space_names_real_hyper_parameters():
    values = {"base_lr": 5e-4, "cross_prompt_weight": 0.2, "prompt_consistency_weight": 0.1,
              "supervised_only_fraction": 0.05}
    assert CPCSAM.params_from_dict(CPCSAM.search_space(optuna.trial.FixedTrial(values))) == CPCSAMParams(**values)


def test_smoke_run_through_the_cli(tmp_path, smoke_args):
    assert main(["run", "--methods", "cpc-sam", "--dataset", "synthetic", "--labels", "2", "--seeds", "1",
                 "--out", str(tmp_path), "--sam-model", "tiny", "--sam-random-init", *smoke_args]) == 0
    (summary_path,) = tmp_path.rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["method"] == "cpc-sam" and summary["family"] == "sam" and RANDOM_INIT_SAM in summary["flags"]
    dice = [value for key, value in summary["metrics"].items() if key.startswith("dice")]
    assert dice and all(math.isfinite(value) for value in dice)
