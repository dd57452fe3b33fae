"""SemiSAM (Zhang et al., "SemiSAM: Enhancing Semi-Supervised Medical Image Segmentation via SAM-Assisted
Consistency Regularization", BIBM 2024, arXiv 2312.06316): a frozen SAM as an extra supervision branch of
any classic semi-supervised framework.

The method section (§II) in the order this module computes it, for an unlabeled image ``X_j``:

1. **The framework** (§II-A, Eq. 1).  The wrapped method's own step: its supervised loss on the labeled
   images plus its own consistency, ``L_sup(f_theta(X_i), Y_i) + lambda_c L_con(...)`` (Mean Teacher
   for ``semisam``; any registered baseline for ``semisam:<name>``).  SemiSAM changes nothing in it.
2. **Prompts from the student** (§II-B).  The student's prediction ``f_theta(X_j)`` localises the
   targets.  "To minimize the performance degradation caused by noisy prompts", prompts are generated
   only from *low-uncertainty* regions: a pixel counts when the predictive entropy of the student's
   softmax is below ``sam_prompt_uncertainty``; for every foreground class, the largest connected
   component of its confident pixels gives one positive point, the pixel farthest from the component's
   boundary (``bench.prompts``).  A class without confident pixels is not prompted.
3. **SAM's pseudo-label** (Eq. 2), ``F_Theta(X_j) = M[I(X_j) + P(f_theta(X_j))]``: SAM's image encoder
   ``I``, prompt encoder ``P`` and mask decoder ``M``, all frozen with the checkpoint's weights, segment
   each prompted class on its own; the binary masks are merged into a label map (a pixel takes the
   class of highest positive mask logit, background elsewhere; ``AdaptedSAM.decode_per_class``).
4. **SAM-assisted consistency** (Eq. 3):

       min_theta  L_sup + lambda_c L_con(f_theta(X_j), f_theta'(X_j)) + lambda_s L_con(f_theta(X_j), F_Theta(X_j))

   with ``L_con`` Mean Teacher's squared distance between softmax maps (here against SAM's one-hot
   label map, mean over pixels and classes) and the ramp-down ``lambda_s = 0.1 e^{-5 t / t_max}``, which
   trusts SAM most at the start and "mitigate[s] possible misleading in the late training stage".
   An image on which the student is confident of no foreground class gets no prompt, so SAM is asked
   nothing about it; its all-background "answer" is not a pseudo-label and the image is left out of
   ``L_con(f, F)`` (the mean runs over the prompted images).

Where the paper leaves a detail open or the official code (YichiZhang98/SemiSAM, ``code/
train_LA_semisam_mt.py``; ``code_semisam+/``) differs, the choices and why:

* **No labels in the prompts.**  The official LA script simulates 10 interactive clicks from the ground
  truth of the *whole* batch, unlabeled volumes included, which leaks their labels into training.  Here
  the unlabeled stream carries no labels at all (``bench.Batch``), and the prompts are a function of the
  student's logits only, as Eq. 2 and the paper's text state (SemiSAM+'s ``semisam_plus.py`` also
  prompts from ``outputs_soft``).
* **Uncertainty.**  The paper names no estimator or threshold.  We use the entropy of the student's own
  softmax (the same forward pass the SAM loss uses, so no extra cost) and UA-MT's initial threshold
  ``0.75 ln 2`` (SSL4MIS ``train_uncertainty_aware_mean_teacher_2D.py``; UA-MT is the paper's ref. [14],
  whose Monte-Carlo block the official script computes beside its SAM branch without using it).
* **Number and kind of prompts.**  One positive point per foreground class: the 2D, multi-class form of
  "prompt points" with SAM's own 4-token decoder (as the SAM-point rows of the CPC-SAM and InteractMatch
  tables); the official script's later clicks correct SAM towards its reference mask, which without
  ground truth would only copy the student back.  ``sam_prompt="box"`` uses the component's tight box
  instead, for box-only backbones (LiteMedSAM ignores points, and a run with points on it is flagged).
* **``lambda_s``.**  Eq. 3's text, ``0.1 e^{-5 t / t_max}``.  The official LA script uses
  ``0.5 * 0.1 * sigmoid_rampup((t_max - t) // 150, 40)``, i.e. ``0.05 e^{-5 (t / t_max)^2}`` as a staircase.
* **``lambda_c``.**  Eq. 3's text prints ``0.1 e^{-5 (1 - t / t_max)}`` "following the design in related
  works [14], [16]" (UA-MT and SSL4MIS), whose ramp-up is ``exp(-5 (1 - t / t_rampup)^2)``.  The wrapped
  framework keeps its own ramp-up unchanged (Mean Teacher's SSL4MIS staircase, ``bench.schedules``), so
  ``semisam`` and ``mean-teacher`` differ only by the SAM term.  At mid-training the two curves differ
  by a factor of about 3.5.
* **A second student pass.**  Eq. 3 uses one ``f_theta(X_j)`` in both consistency terms; here the SAM
  term's student output (and the prompts) come from the extra forward pass of ``Method.student_logits``
  (see Cost), so in training mode it sees its own dropout mask and BatchNorm batch statistics, and
  BatchNorm's running statistics are updated by both passes.
* **Unprompted classes in a prompted image.**  The paper's LA task has one class.  Here a class without
  confident pixels gets no SAM mask, so in an image where another class is prompted SAM's label map
  calls that class's pixels background (or another class), and ``L_con(f, F)`` covers every pixel of
  the image: the student is pulled towards background where it was unsure of a class.  Not corrected
  (any correction, such as masking the pixels the student gives to unprompted classes, is not in the
  paper); the published ``semisam`` runs were trained this way.
* **2D slices, not SAM-Med3D.**  The paper's SAM-Med3D on LA volumes becomes a 2D SAM on the SSL4MIS ACDC
  slices, the setting of every other method here; SAM is prompted per class since ACDC has three.
* **Schedule.**  §III-A trains its LA V-Net for 6,000 iterations with SGD at 0.01 divided by 10 every
  2,500.  Here the wrapped Mean Teacher keeps the benchmark's schedule (SSL4MIS ACDC: 30k iterations at
  ``paper``, SGD 0.01 with poly decay), so that ``semisam`` and ``mean-teacher`` differ by the SAM term
  only; ``lambda_s`` decays over whatever length the budget gives.

Cost.  The student's prediction on the weak view comes from ``Method.student_logits`` (default: the
wrapped method's ``predict``), i.e. one extra forward and backward of the unlabeled batch per step;
its BatchNorm layers also see that batch once more.  SAM is frozen, so its image embedding of a slice
never changes: it is computed once on the un-augmented ``plain`` view, kept in a bounded cache keyed
by the slice's index (``sam_embedding_cache_mb``), and SAM's answer is carried into the student's
augmented frame by the augmentation's own geometry (``bench.geometry``).  Per step, SAM then costs
``B x (C - 1)`` prompt-decoder passes plus the image encoder on the slices not cached yet.  With
``--sam-embedding-store DIR`` the embeddings are also kept on disk for later runs, which then skip the
encoding pass (the first ~1h15m of a LiteMedSAM run on a 2-core CPU).
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from bench import (
    Batch,
    ClassPrompts,
    EmbeddingStore,
    Method,
    Progress,
    SAMOptions,
    StepOutput,
    TaskSpec,
    apply_geometry,
    exponential_rampdown,
    invert_geometry,
    method_class,
    predictive_entropy,
    prompts_from_labels,
    register_method,
    sam_for,
)

NOT_CONFIDENT = -1
"""Label of a pixel too uncertain to place a prompt on: it belongs to no class's component."""
POINT_PROMPTS_UNTRAINED = "point-prompts-untrained"
"""Result flag (the same as SAM-point's): the backbone was never trained with point prompts."""
POINT_BLIND_BACKBONES = ("lite-medsam",)
PROMPT_TYPES = ("point", "box")


@dataclass
class SemiSAMParams:
    """SemiSAM's own hyper-parameters, prefixed ``sam_`` so they never collide with the framework's.

    ``sam_weight`` 0.1 -- ``lambda_s`` at ``t = 0``, Eq. 3's ``lambda_s = 0.1 e^{-5 t / t_max}`` (§II-B).
    ``sam_prompt_uncertainty`` 0.75 ln 2 -- a pixel can carry a prompt when the entropy of the student's
    softmax there is below this (nats).  Not given in the paper: UA-MT's initial threshold (SSL4MIS
    ``threshold = (0.75 + 0.25 ramp) * log(2)`` at ``ramp = 0``), kept fixed (module docstring).
    ``sam_prompt`` ``point`` -- one positive point per confident foreground class (§II-B "prompt points");
    ``box`` gives the same component's tight box.
    ``sam_multimask`` True -- for a point, the best of SAM's three masks by predicted IoU (Kirillov et al.
    2023 §3: one point is ambiguous); the official code's SAM-Med3D has a single output instead.
    ``sam_vit_image_size`` 1024 and ``sam_pixel_normalization`` ``pretraining`` -- SAM is used zero-shot,
    at its own input size and with the preprocessing its weights were trained with (as SAM-point).
    ``sam_embedding_cache_mb`` 6144 -- memory for cached image embeddings, on SAM's device (not a modelling
    choice: cached and fresh embeddings are equal).  An embedding takes 4 MiB for ViT-B at 1024 px or
    LiteMedSAM, so this holds all 1,312 ACDC training slices; with less, the least recently used are
    recomputed when they come back.  0 recomputes every embedding at every step.
    """

    sam_weight: float = 0.1
    sam_prompt_uncertainty: float = 0.75 * math.log(2)
    sam_prompt: str = "point"
    sam_multimask: bool = True
    sam_vit_image_size: int = 1024
    sam_pixel_normalization: str = "pretraining"
    sam_embedding_cache_mb: float = 6144.0

    def __post_init__(self) -> None:
        framework_check = getattr(super(), "__post_init__", None)
        if framework_check is not None:
            framework_check()
        if self.sam_prompt not in PROMPT_TYPES:
            raise ValueError(f"SemiSAM sam_prompt {self.sam_prompt!r}: expected one of {PROMPT_TYPES}")
        if self.sam_weight < 0 or self.sam_prompt_uncertainty <= 0 or self.sam_embedding_cache_mb < 0:
            raise ValueError(
                f"SemiSAM: sam_weight ({self.sam_weight}) and sam_embedding_cache_mb ({self.sam_embedding_cache_mb}) "
                f"must be >= 0 and sam_prompt_uncertainty ({self.sam_prompt_uncertainty}) > 0"
            )


class EmbeddingCache:
    """Least-recently-used memo: unlabeled slice index -> SAM image embedding of its un-augmented patch.

    Deliberately not module state: the encoder is frozen, so every entry is a pure function of its slice;
    a resumed run rebuilds the cache and trains exactly as if it had been kept.  Checkpoints stay small.
    With an ``EmbeddingStore`` (``--sam-embedding-store``) a slice missing here is read from disk before
    it is encoded, and what is encoded is written there, so later runs skip the encoding pass.
    """

    def __init__(self, capacity_mb: float, store: EmbeddingStore | None = None) -> None:
        self.capacity_bytes = capacity_mb * 2**20
        self.entries: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.store_on_disk = store

    def embeddings(
        self, indices: torch.Tensor, images: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        """Embeddings ``[B, D, h, w]`` of ``images`` (the slices ``indices``), encoding only those not
        cached (each once, also when a slice occurs twice in the batch); returns them and how many of the
        ``B`` were not encoded."""
        keys = [int(key) for key in indices.tolist()]
        found = {key: self.entries[key] for key in keys if key in self.entries}
        for key in found:
            self.entries.move_to_end(key)
        missing = list(dict.fromkeys(key for key in keys if key not in found))
        first_position = {key: keys.index(key) for key in missing}
        if self.store_on_disk is not None:
            for key in missing:
                embedding = self.store_on_disk.get(images[first_position[key]], images.device)
                if embedding is not None:
                    found[key] = embedding
                    self.store(key, embedding)
            missing = [key for key in missing if key not in found]
        if missing:
            fresh = encode(images[[first_position[key] for key in missing]])
            for key, embedding in zip(missing, fresh):
                found[key] = embedding
                self.store(key, embedding)
                if self.store_on_disk is not None:
                    self.store_on_disk.put(images[first_position[key]], embedding)
        return torch.stack([found[key] for key in keys]), len(keys) - len(missing)

    def store(self, key: int, embedding: torch.Tensor) -> None:
        size = embedding.numel() * embedding.element_size()
        if size > self.capacity_bytes:
            return
        self.entries[key] = embedding.detach()
        while len(self.entries) * size > self.capacity_bytes:
            self.entries.popitem(last=False)


class SemiSAMBranch(Method):
    """The SAM branch; never registered alone: :meth:`compose` puts it on top of a framework class."""

    family = "sam"
    framework: ClassVar[type[Method]]

    @classmethod
    def compose(cls, framework: type[Method], name: str | None = None) -> type[Method]:
        """``SemiSAM`` on ``framework``: a subclass of the framework whose step is the framework's step plus
        the SAM term, whose hyper-parameters are the framework's plus SemiSAM's, and which asks for the
        ``plain`` view besides the framework's views (appended, so the framework's augmentation draws
        are unchanged).  ``bench.registry`` calls it for ``semisam:<framework>``."""
        if issubclass(framework, SemiSAMBranch):
            raise ValueError(f"SemiSAM cannot wrap {framework.name!r}: it already is SemiSAM")
        if framework.family == "sam" or not framework.trains:
            raise ValueError(
                f"SemiSAM wraps a classic framework that trains a segmentation network; {framework.name!r} "
                f"(family {framework.family!r}, trains={framework.trains}) is not one"
            )
        framework_names = {field.name for field in dataclasses.fields(framework.Params)}
        shared = framework_names & {field.name for field in dataclasses.fields(SemiSAMParams)}
        if shared:
            raise ValueError(f"SemiSAM on {framework.name!r}: hyper-parameter names {sorted(shared)} are taken")
        params = dataclass(type(f"SemiSAM{framework.Params.__name__}", (SemiSAMParams, framework.Params), {
            "__doc__": f"{framework.Params.__doc__}\n\n{SemiSAMParams.__doc__}",
            "__module__": __name__,
        }))
        return type(f"SemiSAM{framework.__name__}", (SemiSAMBranch, framework), {
            "name": name or f"semisam:{framework.name}",
            "paper": f"SemiSAM (Zhang et al., BIBM 2024) on {framework.name}: {framework.paper}",
            "Params": params,
            "unlabeled_views": tuple(dict.fromkeys((*framework.unlabeled_views, "weak", "plain"))),
            "framework": framework,
            "__module__": __name__,
            "__doc__": f"SemiSAM's frozen-SAM branch on {framework.__name__} (module docstring).",
        })

    def __init__(self, params: Any, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.sam = sam_for(
            task,
            class_tokens=False,
            decoder_init="checkpoint",
            adaptation="frozen",
            vit_image_size=params.sam_vit_image_size,
            pixel_normalization=params.sam_pixel_normalization,
            report=False,
        )
        self.sam.requires_grad_(False)
        self.sam.eval()
        sam_options = SAMOptions.from_task(task)
        store = EmbeddingStore(sam_options.embedding_store, self.sam) if sam_options.embedding_store else None
        self.embedding_cache = EmbeddingCache(params.sam_embedding_cache_mb, store)
        self.result_flags = type(self).result_flags + self.sam.result_flags
        if params.sam_prompt == "point" and sam_options.model in POINT_BLIND_BACKBONES:
            self.result_flags += (POINT_PROMPTS_UNTRAINED,)

    def train(self, mode: bool = True) -> "SemiSAMBranch":
        """The harness puts the whole method in training mode every step; the frozen SAM stays in eval."""
        super().train(mode)
        self.sam.eval()
        return self

    def sam_weight(self, progress: Progress) -> float:
        """``lambda_s = 0.1 e^{-5 t / t_max}`` (Eq. 3)."""
        return self.params.sam_weight * exponential_rampdown(progress.fraction)

    def prompts_from_student(self, student_probs: torch.Tensor) -> ClassPrompts:
        """Prompts of every class from the student's probabilities ``[B, C, H, W]`` alone: each class's
        largest component of pixels it wins with entropy below ``sam_prompt_uncertainty`` (§II-B)."""
        uncertainty = predictive_entropy(student_probs)[:, 0]
        confident_labels = torch.where(
            uncertainty < self.params.sam_prompt_uncertainty, student_probs.argmax(dim=1), NOT_CONFIDENT
        )
        return prompts_from_labels(confident_labels, self.task.num_classes)

    @torch.no_grad()
    def sam_pseudo_labels(
        self, student_logits: torch.Tensor, plain_images: torch.Tensor, indices: torch.Tensor, geometry: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``F_Theta(X_j)`` (Eq. 2) as a label map ``[B, H, W]`` in the student's (weak) frame, with the
        ``[B, C - 1]`` mask of prompted foreground classes and the number of cached embeddings used.

        The student's probabilities go back to the un-augmented frame of the cached embeddings, prompts
        are placed there, and SAM's label map comes forward through the same augmentation."""
        student_probs = invert_geometry(torch.softmax(student_logits.float(), dim=1), geometry, "bilinear")
        prompts = self.prompts_from_student(student_probs)
        embeddings, cache_hits = self.embedding_cache.embeddings(indices, plain_images, self.sam.embed)
        foreground = slice(1, None)
        use_points = self.params.sam_prompt == "point"
        sam_logits = self.sam.decode_per_class(
            embeddings,
            valid=prompts.valid[:, foreground],
            points=prompts.center_points[:, foreground] if use_points else None,
            boxes=None if use_points else prompts.boxes[:, foreground],
            frame_size=prompts.frame_size,
            multimask=self.params.sam_multimask and use_points,
            output_size=tuple(plain_images.shape[-2:]),
        )
        plain_labels = sam_logits.argmax(dim=1, keepdim=True)
        return apply_geometry(plain_labels, geometry, "nearest")[:, 0], prompts.valid[:, foreground], cache_hits

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        if batch.unlabeled_index is None or batch.unlabeled_geometry is None or "plain" not in batch.unlabeled:
            raise ValueError(
                f"{self.name}: the unlabeled batch needs the 'plain' view, unlabeled_index and unlabeled_geometry "
                f"(bench.data.streams provides them)"
            )
        framework_output = super().training_step(batch, progress)

        student_logits = self.student_logits(batch.unlabeled["weak"])
        if not student_logits.requires_grad:
            raise RuntimeError(
                f"{self.name}: {self.framework.__name__}.student_logits returned logits without gradient; it must "
                f"return the trained network's output (override Method.student_logits)"
            )
        sam_labels, prompted, cache_hits = self.sam_pseudo_labels(
            student_logits.detach(), batch.unlabeled["plain"], batch.unlabeled_index, batch.unlabeled_geometry
        )
        student_probs = torch.softmax(student_logits.float(), dim=1)
        sam_targets = F.one_hot(sam_labels, self.task.num_classes).permute(0, 3, 1, 2).to(student_probs.dtype)
        squared_distance = ((student_probs - sam_targets) ** 2).mean(dim=(1, 2, 3))
        answered = prompted.any(dim=1).to(squared_distance.dtype)
        sam_loss = (squared_distance * answered).sum() / answered.sum().clamp(min=1.0)

        sam_weight = self.sam_weight(progress)
        loss = framework_output.loss + sam_weight * sam_loss
        return StepOutput(loss, {
            **framework_output.logs,
            "loss_sam": float(sam_loss.detach()),
            "sam_weight": sam_weight,
            "sam_prompted_fraction": float(prompted.float().mean()),
            "sam_student_agreement": float((sam_labels == student_logits.detach().argmax(dim=1)).float().mean()),
            "sam_cache_hit_fraction": cache_hits / len(sam_labels),
        })

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """The framework's own search space plus SAM's initial weight and how certain a prompt must be."""
        return {
            **super().search_space(trial),
            "sam_weight": trial.suggest_float("sam_weight", 0.01, 1.0, log=True),
            "sam_prompt_uncertainty": trial.suggest_float("sam_prompt_uncertainty", 0.05, 1.0, log=True),
        }


SemiSAM = register_method()(SemiSAMBranch.compose(method_class("mean-teacher"), name="semisam"))
"""``semisam``: SemiSAM on Mean Teacher, the paper's SemiSAM-MT (Fig. 1, Tables I-II)."""
