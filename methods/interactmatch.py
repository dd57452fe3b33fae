"""InteractMatch (Chang, "InteractMatch: Segment Anything Model with Interact-Consistency for
Semi-Supervised Medical Image Segmentation", ICIC 2025; https://github.com/haohua-chang/InteractMatch,
which holds no code).

§3.1 Architecture: CPC-SAM's dual-branch SAM ("following the design in [1]"): one image encoder
``E_I`` (LoRA on q and v) and prompt encoder ``E_P`` shared by two randomly initialised decoders
``D_1, D_2`` (``bench.dual_decoder_sam``).  ``p_k = D_k(E_I(I), E_P(P_default))`` is branch ``k``'s
*unprompted* prediction.

§3.2 Prompt augmentation-based consistency (PAC).  From the largest connected component of every class
in the other branch's ``p`` (``bench.cross_prompt``):

* *determined* prompts ``P_d``: the centre point and the tight box of the component;
* *ambiguous* prompts ``P_a``: a random point of the component and an "enlarged offset box", the
  tight box grown by ``box_offset`` of its extent on every side and shifted by at most that margin, so
  it always encloses the component (``bench.jitter_boxes``; §4.5: an offset of 0.05 is a 1.1 scale).

``p_hat_{1,d} = D_1(E_I(I), E_P(P_d2))``, ``p_hat_{1,a} = D_1(E_I(I), E_P(P_a2))``, their mean ``p_hat_1``
is branch 1's pseudo-label, and likewise for branch 2.  Eq. 1 (unlabeled images):

    L_PAC = 1/2 [Dice(p_hat_{1,a}, p_hat_1) + CE(p_hat_{1,a}, p_hat_1)] + 1/2 [... branch 2 ...]

§3.3 Cross-model knowledge distillation (CKD), one-way from branch 1 (teacher) to branch 2 (Eq. 2-3,
all images): ``L_CKD = L_KL(p_2, p_1) = 1/(W H) sum_i KL(q_i^2 || q_i^1)``, no gradient through
branch 1 (``bench.pixelwise_kl_divergence``, which says how the KL is read).

§3.4 Optimisation (Eq. 4-7):

    L_sup1 = L_s(p_1, y) + L_s(p_2, y)                                                      (5)
    L_sup2 = L_s(p_hat_{1,d}, y) + L_s(p_hat_{1,a}, y) + L_s(p_hat_{2,d}, y) + L_s(p_hat_{2,a}, y)   (6)
    L_cross = 1/2 [Dice(p_1, p_hat_2) + CE(p_1, p_hat_2)] + 1/2 [Dice(p_2, p_hat_1) + CE(p_2, p_hat_1)]  (7)
    L_total = L_sup1 + L_sup2 + lambda_1 L_CKD + lambda_2 L_cross + lambda_3 L_PAC             (4)

with ``lambda_1 = 1`` (Table 5), ``lambda_2 = 0.4`` (§4.2), ``lambda_3 = 0.05`` (Table 4).  Inference
averages both branches' unprompted predictions (§3.4).

The paper copies CPC-SAM's set-up (§4.2 "following [1]") and its code is not public, so every detail it
leaves open is taken from CPC-SAM's official code, as ``methods/cpc_sam.py`` documents: hard
pseudo-labels (argmax of the detached ensemble); one class-aware prompt set for all classes, the
background included for points, foreground classes only for boxes; prompts for labeled images from
the other branch's prediction; ``L_s = 0.8 Dice + 0.2 CE`` (SAMed, CPC-SAM's ``--dice_param 0.8``; the
paper says only "dice and CE"); the "warm-up period of 5,000 iterations" as 5,000 supervised-only
iterations (§3.1 "we first fine-tune SAM on all labeled data") with SAMed's 250-iteration learning-rate
warm-up, both as fractions of the paper's 8,000 epochs of 5 iterations (CPC-SAM's ACDC sampler with one
labeled patient) = 40,000 iterations.  During the supervised-only phase only Eq. 5 is used.  One
optimizer step minimises ``L_total`` per iteration (CPC-SAM's code takes three).

Further departures from §4.2 and §4.5, each the harness's or CPC-SAM's choice:

* After the warm-up §4.2 decays the learning rate "exponential[ly], consistent with [2]"; [2] (SAMed)
  and CPC-SAM's code decay it polynomially (power 0.9, ``bench.sam.optim``), which is used here.
* §4.2 resizes the input images to 512x512; here a slice keeps the harness's patch size (256 px in the
  ``paper`` budget) and is upsampled to SAM's 512-px input inside the model; losses and prompts are
  computed at the patch size (as ``methods/cpc_sam.py`` does).
* §4.5 varies "the number of random points in the ambiguous prompting strategy" without stating the
  value used; one random point per class is used, matching the one centre point of ``P_d``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench import (
    Batch,
    Method,
    OptimizerSpec,
    Progress,
    PromptRecipe,
    StepOutput,
    TaskSpec,
    ce_dice_loss,
    cross_prompt,
    dual_decoder_prediction,
    dual_decoder_sam,
    ensemble_pseudo_labels,
    other_decoder,
    pixelwise_kl_divergence,
    pseudo_label_loss,
    register_method,
    sam_optimizer,
)

BRANCHES = (0, 1)
TEACHER, STUDENT = BRANCHES
"""§3.3: branch 1 (index 0) teaches branch 2 (index 1)."""
PAPER_ITERATIONS = 40_000
"""§4.2 "8000 epochs" x 5 iterations per epoch (CPC-SAM's sampler: ``32 // 6`` for one ACDC patient)."""


@dataclass
class InteractMatchParams:
    """Defaults of the paper; open details from CPC-SAM's official code (module docstring).

    ``lora_rank`` 4 -- §4.2 "rank r = 4".
    ``base_lr`` 1e-3 -- §4.2 "maximum learning rate is set to 0.001".
    ``weight_decay`` 0.1 -- AdamW of SAMed / CPC-SAM ``trainer_dualmask.py`` (§4.2 "consistent with [2]").
    ``lr_warmup_fraction`` -- SAMed's and CPC-SAM's ``--warmup_period 250`` of 40,000 iterations.
    ``supervised_only_fraction`` -- the 5,000 warm-up iterations of §4.2 (CPC-SAM ``--warm_iter 5000``)
    of 40,000.
    ``distillation_weight`` 1.0 -- ``lambda_1``, §4.5 Table 5.
    ``cross_weight`` 0.4 -- ``lambda_2``, §4.2.
    ``pac_weight`` 0.05 -- ``lambda_3``, §4.5 Table 4.
    ``box_offset`` 0.1 -- §4.5 / Fig. 3(b): 0.05 is too close to the tight box, 0.2 and 0.25 too
    ambiguous; the text does not state the chosen value, 0.1 lies between (our choice).
    ``dice_weight`` 0.8 -- ``L_s`` of Eq. 5-6, as SAMed's and CPC-SAM's ``0.8 Dice + 0.2 CE``.
    ``vit_image_size`` 512, ``pixel_normalization`` ``unit`` -- §4.2 "resized to 512 x 512 and normalized
    within the range [0, 1]".
    """

    lora_rank: int = 4
    base_lr: float = 1e-3
    weight_decay: float = 0.1
    lr_warmup_fraction: float = 250 / PAPER_ITERATIONS
    supervised_only_fraction: float = 5_000 / PAPER_ITERATIONS
    distillation_weight: float = 1.0
    cross_weight: float = 0.4
    pac_weight: float = 0.05
    box_offset: float = 0.1
    dice_weight: float = 0.8
    vit_image_size: int = 512
    pixel_normalization: str = "unit"


@register_method()
class InteractMatch(Method):
    name = "interactmatch"
    family = "sam"
    paper = ("InteractMatch: Segment Anything Model with Interact-Consistency for Semi-Supervised Medical "
             "Image Segmentation (Chang, ICIC 2025)")
    Params = InteractMatchParams
    unlabeled_views = ("weak",)
    budget_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        # §4.2: batch 12 on ACDC, half labeled; 8,000 epochs = 40,000 iterations for one labeled patient.
        "paper": {"iterations": PAPER_ITERATIONS, "labeled_batch": 6, "unlabeled_batch": 6},
    }

    def __init__(self, params: InteractMatchParams, task: TaskSpec) -> None:
        super().__init__(params, task)
        self.sam = dual_decoder_sam(task, lora_rank=params.lora_rank, vit_image_size=params.vit_image_size,
                                    pixel_normalization=params.pixel_normalization)
        self.result_flags = type(self).result_flags + self.sam.result_flags
        self.prompt_strategies = {
            "determined": PromptRecipe(point="center", box="tight"),
            "ambiguous": PromptRecipe(point="random", box="jittered", box_offset=params.box_offset),
        }

    def supervised_only(self, progress: Progress) -> bool:
        return progress.step < round(self.params.supervised_only_fraction * progress.total_steps)

    def supervision(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``L_s`` of Eq. 5-6."""
        dice_weight = self.params.dice_weight
        return ce_dice_loss(logits, labels, ce_weight=1.0 - dice_weight, dice_weight=dice_weight)

    @staticmethod
    def distillation_loss(unprompted: list[torch.Tensor]) -> torch.Tensor:
        """``L_CKD`` (Eq. 2): branch 2 learns branch 1's per-pixel class distribution, never the reverse."""
        return pixelwise_kl_divergence(student_logits=unprompted[STUDENT], teacher_logits=unprompted[TEACHER])

    @staticmethod
    def unlabeled_losses(
        unprompted: list[torch.Tensor], prompted: list[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_cross, L_PAC)`` of Eq. 7 and 1 from branch ``k``'s unprompted logits and its prompted
        logits ``prompted[k]["determined" | "ambiguous"]`` (prompts from the other branch)."""
        ensemble_targets = [
            ensemble_pseudo_labels([prompted[k]["determined"], prompted[k]["ambiguous"]]) for k in BRANCHES
        ]
        cross_loss = sum(pseudo_label_loss(unprompted[k], ensemble_targets[other_decoder(k)]) for k in BRANCHES)
        pac_loss = sum(pseudo_label_loss(prompted[k]["ambiguous"], ensemble_targets[k]) for k in BRANCHES)
        return cross_loss, pac_loss

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        p = self.params
        labeled = slice(0, batch.labeled_images.shape[0])
        unlabeled = slice(batch.labeled_images.shape[0], None)
        supervised_only = self.supervised_only(progress)
        images = batch.labeled_images if supervised_only else torch.cat([batch.labeled_images, batch.unlabeled["weak"]])
        output_size = tuple(batch.labels.shape[-2:])

        image_embeddings = self.sam.embed(images)
        unprompted = [self.sam.decode(image_embeddings, k, output_size=output_size) for k in BRANCHES]
        unprompted_supervised = sum(self.supervision(logits[labeled], batch.labels) for logits in unprompted)
        if supervised_only:
            return StepOutput(unprompted_supervised, {"loss_sup1": float(unprompted_supervised.detach())})

        prompted = cross_prompt(self.sam, image_embeddings, unprompted, self.prompt_strategies)
        prompted_supervised = sum(
            self.supervision(prompted[k][strategy][labeled], batch.labels)
            for k in BRANCHES for strategy in self.prompt_strategies
        )
        distillation_loss = self.distillation_loss(unprompted)
        cross_loss, pac_loss = self.unlabeled_losses(
            [logits[unlabeled] for logits in unprompted],
            [{strategy: logits[unlabeled] for strategy, logits in outputs.items()} for outputs in prompted],
        )
        loss = (unprompted_supervised + prompted_supervised + p.distillation_weight * distillation_loss
                + p.cross_weight * cross_loss + p.pac_weight * pac_loss)
        return StepOutput(loss, {
            "loss_sup1": float(unprompted_supervised.detach()),
            "loss_sup2": float(prompted_supervised.detach()),
            "loss_ckd": float(distillation_loss.detach()),
            "loss_cross": float(cross_loss.detach()),
            "loss_pac": float(pac_loss.detach()),
        })

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return dual_decoder_prediction(self.sam, images)

    def optimizers(self) -> list[OptimizerSpec]:
        total = self.task.total_steps
        return [sam_optimizer(self, self.params.base_lr, self.params.weight_decay,
                              round(self.params.lr_warmup_fraction * total), total)]

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """The three parameters the paper's §4.5 sweeps (CKD weight, PAC weight, box offset) and the
        learning rate."""
        return {
            "distillation_weight": trial.suggest_float("distillation_weight", 0.1, 5.0, log=True),
            "pac_weight": trial.suggest_float("pac_weight", 0.025, 0.4, log=True),
            "box_offset": trial.suggest_float("box_offset", 0.05, 0.25),
            "base_lr": trial.suggest_float("base_lr", 1e-4, 5e-3, log=True),
        }
