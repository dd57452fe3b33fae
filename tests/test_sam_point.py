"""SAM-point / SAM-box: zero-shot SAM prompted per class from the ground truth; evaluation-only."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench import TaskSpec
from bench.cli import main
from bench.method import GROUND_TRUTH_PROMPTS, RANDOM_INIT_SAM
from methods.sam_point import POINT_PROMPTS_UNTRAINED, SAMBox, SAMPoint, SAMPointParams

NUM_CLASSES = 4


def tiny(method_cls):
    torch.manual_seed(0)
    task = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(32, 32), total_steps=1,
                    options={"sam_model": "tiny", "sam_random_init": True})
    return method_cls(SAMPointParams(), task).eval()


def labels_with_two_classes() -> torch.Tensor:
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[0, 4:9, 10:21] = 1      # rows 4-8, columns 10-20: centre (15, 6), box (10, 4, 20, 8)
    labels[0, 20:30, 2:8] = 3
    labels[1, 0:2, 0:2] = 3        # class 3 only, in the corner
    return labels


def test_point_prompts_are_the_ground_truth_centres_of_present_classes(monkeypatch):
    method = tiny(SAMPoint)
    seen = {}

    def spy(image_embeddings, valid, points=None, boxes=None, frame_size=None, multimask=False, output_size=None):
        seen.update(valid=valid, points=points, boxes=boxes, frame_size=frame_size, multimask=multimask)
        return torch.zeros(valid.shape[0], valid.shape[1] + 1, *output_size)

    monkeypatch.setattr(method.sam, "decode_per_class", spy)
    logits = method.predict_inputs(torch.rand(2, 1, 32, 32), labels_with_two_classes())
    assert logits.shape == (2, NUM_CLASSES, 32, 32)
    assert seen["valid"].tolist() == [[True, False, True], [False, False, True]]
    assert seen["points"][0, 0].tolist() == [15.0, 6.0]
    assert seen["boxes"] is None and seen["multimask"] is True and seen["frame_size"] == (32, 32)


def test_box_prompts_are_the_ground_truth_boxes(monkeypatch):
    method = tiny(SAMBox)
    seen = {}
    monkeypatch.setattr(method.sam, "decode_per_class",
                        lambda embeddings, valid, **kwargs: seen.update(kwargs) or torch.zeros(2, 4, 32, 32))
    method.predict_inputs(torch.rand(2, 1, 32, 32), labels_with_two_classes())
    assert seen["points"] is None and seen["multimask"] is False
    assert seen["boxes"][0, 0].tolist() == [10.0, 4.0, 20.0, 8.0]
    assert seen["boxes"][1, 2].tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("method_cls", [SAMPoint, SAMBox])
def test_absent_classes_are_never_predicted_and_predict_refuses_without_labels(method_cls):
    method = tiny(method_cls)
    assert not method_cls.trains and GROUND_TRUTH_PROMPTS in method.result_flags
    assert RANDOM_INIT_SAM in method.result_flags
    images = torch.rand(2, 1, 32, 32)
    predicted = method.predict_inputs(images, labels_with_two_classes()).argmax(dim=1)
    assert not (predicted[0] == 2).any()
    assert set(predicted[1].unique().tolist()) <= {0, 3}
    with pytest.raises(RuntimeError, match="predict_inputs"):
        method.predict(images)


def test_smoke_run_scores_with_ground_truth_prompts(tmp_path, smoke_args):
    assert main(["run", "--methods", "sam-box", "--dataset", "synthetic", "--labels", "1", "--seeds", "1",
                 "--out", str(tmp_path), "--sam-model", "tiny", "--sam-random-init", *smoke_args]) == 0
    (summary_path,) = tmp_path.rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert {GROUND_TRUTH_PROMPTS, RANDOM_INIT_SAM} <= set(summary["flags"])
    assert summary["training"]["train_seconds"] == 0.0
    dice = [value for key, value in summary["metrics"].items() if key.startswith("dice")]
    assert dice and all(math.isfinite(value) for value in dice)


def test_point_prompts_on_a_box_only_backbone_are_flagged():
    task = TaskSpec(in_channels=1, num_classes=NUM_CLASSES, patch_size=(32, 32), total_steps=1, options={})
    assert POINT_PROMPTS_UNTRAINED in SAMPoint(SAMPointParams(), task).result_flags  # default: lite-medsam
    assert POINT_PROMPTS_UNTRAINED not in SAMBox(SAMPointParams(), task).result_flags
