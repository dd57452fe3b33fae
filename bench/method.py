"""The plug-in contract: what a semi-supervised method gives the harness and what it receives.

A method is an ``nn.Module`` so that Accelerate can place it, wrap it for distributed training and
save it without knowing what is inside (one network, a student and an EMA teacher, two networks,
a SAM with two decoders...).  The harness calls ``forward(batch, progress)``, which is
``training_step``; it owns backward, optimizer and scheduler steps, precision and devices.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

VIEWS = ("weak", "strong", "strong2", "plain")
"""Views of an unlabeled image a method may ask for.  ``weak``, ``strong`` and ``strong2`` share one
geometric augmentation, so a pixel in one view is the same anatomy in the others; ``strong``/``strong2``
add independent photometric perturbations (colour jitter, blur) on top of the weak view.  ``plain`` is
the un-augmented patch: ``Batch.unlabeled_geometry`` maps it onto the weak view (``bench.geometry``),
e.g. to reuse a frozen encoder's features of a slice under every augmentation of it (SemiSAM)."""


GROUND_TRUTH_PROMPTS = "ground-truth-prompts"
"""Result flag of evaluation-only methods that are prompted from the test labels (not a fair SSL row)."""
RANDOM_INIT_SAM = "random-init-sam"
"""Result flag of SAM methods run without pretrained weights."""


@dataclass(frozen=True)
class TaskSpec:
    """What a method needs to build its networks; ``network`` overrides the default U-Net widths."""

    in_channels: int
    num_classes: int
    patch_size: tuple[int, int]
    total_steps: int
    network_widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    options: dict[str, Any] = field(default_factory=dict)
    """Harness options a method family may read (e.g. SAM model and checkpoint); recorded in results."""


@dataclass(frozen=True)
class Progress:
    """Where training stands, so ramp-ups and ramp-downs are exact functions of the step."""

    step: int
    total_steps: int

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps))


@dataclass
class Batch:
    """One training step's data: a labeled stream and an unlabeled stream in the requested views.

    Unlabeled samples never carry labels: the harness does not load them into the batch, so no
    method can use them, by construction.
    """

    labeled_images: torch.Tensor
    labels: torch.Tensor
    unlabeled: dict[str, torch.Tensor] = field(default_factory=dict)
    labeled_strong: dict[str, torch.Tensor] = field(default_factory=dict)
    unlabeled_index: torch.Tensor | None = None
    """``[B]`` position of each unlabeled slice in the unlabeled set: the same slice has the same index
    under every augmentation, so a method can key per-slice caches on it."""
    unlabeled_geometry: torch.Tensor | None = None
    """``[B, 3]`` what the weak augmentation did to each unlabeled slice (``bench.geometry``)."""

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            labeled_images=self.labeled_images.to(device),
            labels=self.labels.to(device),
            unlabeled={k: v.to(device) for k, v in self.unlabeled.items()},
            labeled_strong={k: v.to(device) for k, v in self.labeled_strong.items()},
            unlabeled_index=None if self.unlabeled_index is None else self.unlabeled_index.to(device),
            unlabeled_geometry=None if self.unlabeled_geometry is None else self.unlabeled_geometry.to(device),
        )


@dataclass
class StepOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class OptimizerSpec:
    """An optimizer and its learning-rate multiplier as a function of training progress in [0, 1]."""

    optimizer: torch.optim.Optimizer
    lr_lambda: Callable[[float], float]


def poly_decay(power: float = 0.9) -> Callable[[float], float]:
    """SSL4MIS schedule: lr = base_lr * (1 - step / total) ** 0.9."""

    return lambda fraction: (1.0 - min(fraction, 1.0)) ** power


def constant_rate(fraction: float) -> float:
    """For official loops that never change the learning rate (MC-Net+, SynFoC)."""
    return 1.0


@dataclass
class NoParams:
    """For methods without hyper-parameters of their own."""


class Method(nn.Module):
    """Base class of every registered method.

    Subclasses set the class attributes below, take ``(params, task)`` in ``__init__`` and implement
    ``training_step``.  ``predict`` defaults to ``self.network`` when the method has one.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "baseline"
    paper: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    unlabeled_views: ClassVar[tuple[str, ...]] = ()
    """Which views of unlabeled images the method needs; empty = it trains on labeled data only."""
    labeled_views: ClassVar[tuple[str, ...]] = ()
    """Extra strong views of labeled images (rarely needed)."""
    trains_on_all_labels: ClassVar[bool] = False
    """True for the fully-supervised upper bound: every training case is labeled."""
    fills_batch_with_labeled: ClassVar[bool] = False
    """True when the method's reference code fills the whole batch (labeled + unlabeled share) with
    labeled images, as SSL4MIS's supervised scripts do (batch 24 where the SSL scripts use 12 + 12)."""
    budget_overrides: ClassVar[dict[str, dict[str, Any]]] = {}
    """What the method's paper changes in a budget, e.g. BCP's pre-training: ``{"paper": {"iterations": 40000}}``."""
    trains: ClassVar[bool] = True
    """False for evaluation-only methods (zero-shot)."""
    result_flags: tuple[str, ...] = ()
    """Flags recorded with every result, e.g. ``ground-truth-prompts``; an instance may add its own
    (a SAM method built without pretrained weights adds ``random-init-sam``)."""

    def __init__(self, params: Any, task: TaskSpec) -> None:
        super().__init__()
        self.params = params
        self.task = task

    def forward(self, batch: Batch, progress: Progress) -> StepOutput:
        return self.training_step(batch, progress)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        raise NotImplementedError  # abstract

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C, H, W]`` of the model used at test time."""
        return self.network(images)

    def student_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C, H, W]``, with gradients, of the network the method trains: what a branch
        composed on top of a method (SemiSAM) adds its loss to.  Defaults to ``predict``, which is the
        student in every classic baseline; a method whose test-time model is not trained by gradient
        (an EMA teacher) must override it.  A composed branch calls it once more per step, so it
        costs one extra forward and backward of the images given."""
        return self.predict(images)

    def optimizers(self) -> list[OptimizerSpec]:
        """SSL4MIS default: SGD lr 0.01, momentum 0.9, weight decay 1e-4, poly decay."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9, weight_decay=1e-4)
        return [OptimizerSpec(optimizer, poly_decay())]

    def on_step_end(self, progress: Progress) -> None:
        """Called after the optimizer step (EMA teachers update here)."""

    def predict_inputs(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Evaluation hook of methods flagged ``ground-truth-prompts``; called only for them."""
        return self.predict(images)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Optuna search space over the hyper-parameters that matter; empty = nothing to tune."""
        return {}

    @classmethod
    def default_params(cls) -> Any:
        return cls.Params()

    @classmethod
    def params_from_dict(cls, values: dict[str, Any]) -> Any:
        """Build the dataclass, rejecting unknown names so a typo in a config never goes unnoticed."""
        return dataclasses.replace(cls.Params(), **cls.coerce_params(values))

    @classmethod
    def coerce_params(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` checked against the Params field types: unknown names and wrong types are errors
        naming the method, the field, the value and the expected type; a number written as text
        (YAML 1.1 reads ``1e30`` as a string) becomes the number.  Values of the right type pass
        unchanged (an int given for a float stays an int), so a run's key does not change."""
        known = {f.name: f for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"method {cls.name!r}: unknown hyper-parameter(s) {unknown}; known: {sorted(known)}"
            )
        hints = typing.get_type_hints(cls.Params)
        return {name: coerce_value(cls.name, name, value, hints[name]) for name, value in values.items()}

    @classmethod
    def recorded_params(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Every parameter a run with these overrides trains with, as its summary records them: a sweep
        compares them to skip only runs this checkout would repeat, a leaderboard to flag the others."""
        return dataclasses.asdict(cls.params_from_dict(values))


def coerce_value(method: str, name: str, value: Any, annotation: Any) -> Any:
    """One hyper-parameter value against its annotation (``float``, ``int``, ``bool``, ``str``, ``X | None``)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in options:
        return None
    for expected in (option for option in options if option is not type(None)):
        converted = _converted(value, expected)
        if converted is not _NOT_CONVERTIBLE:
            return converted
    expected_text = " or ".join(getattr(option, "__name__", str(option)) for option in options)
    raise ValueError(f"method {method!r}, hyper-parameter {name!r}: {value!r} ({type(value).__name__}) "
                     f"is not a valid {expected_text}")


_NOT_CONVERTIBLE = object()
_BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _converted(value: Any, expected: Any) -> Any:
    if expected is bool:
        if isinstance(value, bool):
            return value
        return _BOOLEAN_WORDS.get(value.strip().lower(), _NOT_CONVERTIBLE) if isinstance(value, str) else _NOT_CONVERTIBLE
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                return _NOT_CONVERTIBLE
        return _NOT_CONVERTIBLE
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value if not (isinstance(value, float) and math.isnan(value)) else _NOT_CONVERTIBLE
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return _NOT_CONVERTIBLE
            return _NOT_CONVERTIBLE if math.isnan(number) else number
        return _NOT_CONVERTIBLE
    if expected is str:
        return value if isinstance(value, str) else _NOT_CONVERTIBLE
    return value  # a type this check does not know: the method's own validation decides
