"""SemiSAM: a frozen SAM prompted from the student's confident prediction supervises the student with
Eq. 3's ramp-down weight on top of the wrapped framework's own loss; its image embeddings are cached per
un-augmented slice and carried through the augmentation; no label of an unlabeled slice can reach it."""
from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
import torch

from bench import Batch, Geometry, Progress, TaskSpec, apply_geometry
from bench.cli import main
from bench.data.adapter import TrainingSlice
from bench.data.streams import SliceViews
from bench.method import RANDOM_INIT_SAM
from bench.registry import METHODS
from bench.training import assemble_batch
from methods.semisam import EmbeddingCache, SemiSAM, SemiSAMBranch

NUM_CLASSES = 4
PATCH = 32
TOTAL_STEPS = 100
CONFIDENCE_SCALE = 20.0
GEOMETRIES = [Geometry(quarter_turns=1, flip_axis=0), Geometry(), Geometry(quarter_turns=3, flip_axis=1)]


def tiny_task() -> TaskSpec:
    return TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(PATCH, PATCH), total_steps=TOTAL_STEPS,
                    network_widths=(4, 8, 16, 32), options={"sam_model": "tiny", "sam_random_init": True})


def tiny_semisam(method_cls=SemiSAM, confident: bool = True, **params) -> SemiSAMBranch:
    """With ``confident``, the student's output layer is scaled up so that its softmax is confident
    (entropy below the prompt threshold) yet not saturated: every class it predicts is then prompted
    and the SAM term still has a gradient."""
    torch.manual_seed(0)
    method = method_cls(method_cls.Params(**params), tiny_task())
    if confident:
        with torch.no_grad():
            method.network.decoder.out_conv.weight.mul_(CONFIDENCE_SCALE)
            method.network.decoder.out_conv.bias.mul_(CONFIDENCE_SCALE)
    return method


def tiny_batch(geometries=GEOMETRIES, seed: int = 1) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    count = len(geometries)
    plain = torch.rand(count, 1, PATCH, PATCH, generator=generator)
    geometry = torch.stack([g.as_tensor() for g in geometries])
    return Batch(
        labeled_images=torch.rand(2, 1, PATCH, PATCH, generator=generator),
        labels=torch.randint(0, NUM_CLASSES, (2, PATCH, PATCH), generator=generator),
        unlabeled={"weak": apply_geometry(plain, geometry), "plain": plain},
        unlabeled_index=torch.arange(count),
        unlabeled_geometry=geometry,
    )


def test_semisam_is_mean_teacher_with_the_plain_view_and_composes_with_any_baseline():
    assert METHODS.get("semisam") is SemiSAM and SemiSAM.family == "sam"
    assert SemiSAM.framework.name == "mean-teacher" and SemiSAM.unlabeled_views == ("weak", "plain")
    composed = METHODS.get("semisam:unimatch")
    assert composed.name == "semisam:unimatch" and issubclass(composed, METHODS.get("unimatch"))
    assert composed.unlabeled_views == ("weak", "strong", "strong2", "plain")
    params = composed.params_from_dict({"confidence_threshold": 0.9, "sam_weight": 0.2})
    assert params.confidence_threshold == 0.9 and params.sam_weight == 0.2
    for not_a_framework in ("samed", "sam-point", "semisam"):
        with pytest.raises(ValueError):
            SemiSAMBranch.compose(METHODS.get(not_a_framework))


def test_lambda_s_is_equation_3_ramp_down():
    method = tiny_semisam(confident=False)
    assert method.sam_weight(Progress(0, TOTAL_STEPS)) == pytest.approx(0.1)
    assert method.sam_weight(Progress(TOTAL_STEPS // 2, TOTAL_STEPS)) == pytest.approx(0.1 * math.exp(-2.5))
    assert method.sam_weight(Progress(TOTAL_STEPS, TOTAL_STEPS)) == pytest.approx(0.1 * math.exp(-5))


def test_loss_is_the_framework_loss_plus_lambda_s_times_the_sam_consistency():
    method = tiny_semisam().eval()  # eval: no dropout, so the independent recomputation sees the same student
    batch = tiny_batch()
    progress = Progress(30, TOTAL_STEPS)
    torch.manual_seed(5)
    output = method.training_step(batch, progress)
    torch.manual_seed(5)
    framework_loss = method.framework.training_step(method, batch, progress).loss
    student_logits = method.network(batch.unlabeled["weak"])
    sam_labels, prompted, _ = method.sam_pseudo_labels(
        student_logits, batch.unlabeled["plain"], batch.unlabeled_index, batch.unlabeled_geometry)
    assert prompted.any(dim=1).all()
    one_hot = torch.stack([(sam_labels == c).float() for c in range(NUM_CLASSES)], dim=1)
    sam_consistency = ((torch.softmax(student_logits, dim=1) - one_hot) ** 2).mean()
    expected = framework_loss + 0.1 * math.exp(-5 * 0.3) * sam_consistency
    assert torch.allclose(output.loss, expected, atol=1e-6)
    assert output.logs["loss_sam"] == pytest.approx(float(sam_consistency.detach()), abs=1e-6)


def test_sam_gets_no_gradient_and_the_sam_term_reaches_the_student():
    batch, progress = tiny_batch(), Progress(0, TOTAL_STEPS)

    def student_gradients(sam_weight: float) -> torch.Tensor:
        method = tiny_semisam(sam_weight=sam_weight).eval()
        torch.manual_seed(5)
        method.training_step(batch, progress).loss.backward()
        assert all(not p.requires_grad and p.grad is None for p in method.sam.parameters())
        assert all(p.grad is None for p in method.teacher.parameters())
        return torch.cat([p.grad.flatten() for p in method.network.parameters()])

    without_sam, with_sam = student_gradients(0.0), student_gradients(1.0)
    assert without_sam.abs().sum() > 0
    assert not torch.allclose(without_sam, with_sam)
    assert not any(p.requires_grad for p in tiny_semisam(confident=False).sam.parameters())


def test_an_image_without_a_confident_class_gets_no_sam_loss():
    method = tiny_semisam(confident=False, sam_prompt_uncertainty=1e-9)
    output = method.training_step(tiny_batch(), Progress(0, TOTAL_STEPS))
    assert output.logs["sam_prompted_fraction"] == 0.0 and output.logs["loss_sam"] == 0.0


def test_the_sam_term_averages_over_the_prompted_images_of_a_mixed_batch(monkeypatch):
    """Image 1 has no prompt: its squared distance is left out of both the sum and the count."""
    method = tiny_semisam().eval()
    batch = tiny_batch()
    generator = torch.Generator().manual_seed(9)
    sam_labels = torch.randint(0, NUM_CLASSES, (len(GEOMETRIES), PATCH, PATCH), generator=generator)
    prompted = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    monkeypatch.setattr(method, "sam_pseudo_labels", lambda *args: (sam_labels, prompted, 0))
    output = method.training_step(batch, Progress(0, TOTAL_STEPS))
    with torch.no_grad():
        probs = torch.softmax(method.network(batch.unlabeled["weak"]), dim=1).numpy()
    one_hot = np.eye(NUM_CLASSES)[sam_labels.numpy()].transpose(0, 3, 1, 2)
    per_image = ((probs - one_hot) ** 2).mean(axis=(1, 2, 3))
    assert output.logs["loss_sam"] == pytest.approx((per_image[0] + per_image[2]) / 2, rel=1e-5)
    assert output.logs["sam_prompted_fraction"] == pytest.approx(3 / 9)


def test_training_mode_leaves_the_frozen_sam_in_eval_mode():
    method = tiny_semisam(confident=False).train()
    assert method.network.training and not method.sam.training
    assert not any(module.training for module in method.sam.modules())


def test_cached_embeddings_equal_fresh_ones_and_the_encoder_runs_once_per_slice():
    method = tiny_semisam(confident=False)
    encoded = []
    method.sam.image_encoder.register_forward_hook(lambda module, inputs, output: encoded.append(output.shape[0]))
    plain = torch.rand(3, 1, PATCH, PATCH)
    plain[2] = plain[0]
    indices = torch.tensor([4, 9, 4])  # slice 4 twice in one batch, as at an epoch boundary
    first, hits = method.embedding_cache.embeddings(indices, plain, method.sam.embed)
    assert encoded == [2] and hits == 1
    second, hits = method.embedding_cache.embeddings(indices, plain, method.sam.embed)
    assert encoded == [2] and hits == 3
    fresh = method.sam.embed(plain)
    assert torch.equal(second, fresh) and torch.equal(first, fresh)
    assert not any("cache" in key for key in method.state_dict())  # a memo, not state: resumes rebuild it


def test_embedding_cache_is_bounded_least_recently_used():
    entry_mb = 1.0
    cache = EmbeddingCache(capacity_mb=2 * entry_mb)
    entry = torch.zeros(int(entry_mb * 2**20) // 4)  # float32: exactly one entry per MiB
    encode = lambda images: entry.expand(len(images), -1).clone()  # noqa: E731
    for key in (1, 2, 1, 3):
        cache.embeddings(torch.tensor([key]), torch.zeros(1, 1), encode)
    assert list(cache.entries) == [1, 3]
    assert not EmbeddingCache(capacity_mb=0).embeddings(torch.tensor([1]), torch.zeros(1, 1), encode)[1]


def test_sam_pseudo_labels_follow_the_students_augmentation():
    """SAM sees the un-augmented slice whatever the augmentation; its answer must land where the student
    saw that anatomy: for the same student prediction, augmented and not, the labels match up to the
    augmentation."""
    method = tiny_semisam()
    plain = torch.rand(len(GEOMETRIES), 1, PATCH, PATCH)
    plain_frame_logits = method.network(plain).detach()
    identity = torch.stack([Geometry().as_tensor()] * len(GEOMETRIES))
    geometry = torch.stack([g.as_tensor() for g in GEOMETRIES])
    indices = torch.arange(len(GEOMETRIES))
    reference, prompted, _ = method.sam_pseudo_labels(plain_frame_logits, plain, indices, identity)
    augmented, _, _ = method.sam_pseudo_labels(apply_geometry(plain_frame_logits, geometry), plain, indices, geometry)
    assert prompted.any() and reference.unique().numel() > 1
    assert torch.equal(augmented, apply_geometry(reference[:, None], geometry, "nearest")[:, 0])


def test_prompts_are_a_function_of_the_students_logits_only(monkeypatch):
    """Each foreground class is prompted at the centre of the student's confident region of it; a class
    the student is unsure of is not prompted."""
    method = tiny_semisam(confident=False)
    batch = tiny_batch(geometries=[Geometry()])
    seen = []
    decode = method.sam.decode_per_class
    monkeypatch.setattr(method.sam, "decode_per_class",
                        lambda embeddings, **kw: seen.append((kw["points"], kw["valid"])) or decode(embeddings, **kw))

    def confident_square(row: int, column: int) -> torch.Tensor:
        logits = torch.zeros(1, NUM_CLASSES, PATCH, PATCH)
        logits[:, 0] = 20.0
        logits[:, 1, row:row + 9, column:column + 9] = 40.0  # class 1, certain
        logits[:, 2, 0:5, 0:5] = 20.0  # class 2 ties with the background: entropy ln 2 > threshold
        return logits.requires_grad_()

    for row, column in ((3, 5), (20, 18)):
        monkeypatch.setattr(method, "student_logits", lambda images, r=row, c=column: confident_square(r, c))
        method.training_step(batch, Progress(0, TOTAL_STEPS))
        points, valid = seen[-1]
        assert valid.tolist() == [[True, False, False]]
        assert points[0, 0].tolist() == [column + 4, row + 4]  # (x, y) centre of the 9 x 9 square


def slices_with_labels(labels: list[np.ndarray]) -> list[TrainingSlice]:
    images = np.random.default_rng(0).random((len(labels), PATCH, PATCH)).astype(np.float32)
    return [TrainingSlice(case_id=f"case{i}", image=images[i], label=label) for i, label in enumerate(labels)]


def test_hidden_labels_of_unlabeled_slices_cannot_reach_semisam():
    """The official code prompts SAM from the ground truth of unlabeled images; here the unlabeled stream
    has no labels to give, so changing them changes nothing: not the batch, not the loss."""
    count = 4
    blank = [np.zeros((PATCH, PATCH), dtype=np.int64)] * count
    truth = [np.random.default_rng(i).integers(0, NUM_CLASSES, (PATCH, PATCH)) for i in range(count)]
    labeled = {"weak": torch.rand(2, 1, PATCH, PATCH), "label": torch.randint(0, NUM_CLASSES, (2, PATCH, PATCH))}
    losses = []
    for labels in (blank, truth):
        stream = SliceViews(slices_with_labels(labels), (PATCH, PATCH), SemiSAM.unlabeled_views, False, seed=3)
        samples = [stream[code] for code in range(count)]
        assert all("label" not in sample for sample in samples)
        unlabeled = {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}
        method = tiny_semisam()
        batch = assemble_batch(labeled, unlabeled, method)
        assert set(batch.unlabeled) == {"weak", "plain"} and batch.unlabeled_index.tolist() == [0, 1, 2, 3]
        torch.manual_seed(0)
        output = method.training_step(batch, Progress(0, TOTAL_STEPS))
        assert output.logs["sam_prompted_fraction"] > 0
        losses.append(output.loss)
    assert torch.equal(losses[0], losses[1])


def test_search_space_adds_sams_weight_and_prompt_certainty_to_the_frameworks():
    values = {"consistency": 0.2, "consistency_rampup_epochs": 50.0, "ema_decay": 0.95,
              "sam_weight": 0.05, "sam_prompt_uncertainty": 0.3}
    chosen = SemiSAM.search_space(optuna.trial.FixedTrial(values))
    assert chosen == values
    assert SemiSAM.params_from_dict(chosen).sam_prompt_uncertainty == 0.3


def test_smoke_runs_of_semisam_and_semisam_on_unimatch(tmp_path, smoke_args):
    methods = ["semisam", "semisam:unimatch"]
    assert main(["run", "--methods", ",".join(methods), "--dataset", "synthetic", "--labels", "2", "--seeds", "1",
                 "--out", str(tmp_path), "--sam-model", "tiny", "--sam-random-init", *smoke_args]) == 0
    for name in methods:
        (summary_path,) = [path for path in tmp_path.rglob("summary.json") if path.parent.parent.parent.name == name.replace(":", "+")]
        summary = json.loads(summary_path.read_text())
        assert summary["method"] == name and summary["family"] == "sam" and RANDOM_INIT_SAM in summary["flags"]
        dice = [value for key, value in summary["metrics"].items() if key.startswith("dice")]
        assert dice and all(math.isfinite(value) for value in dice)
