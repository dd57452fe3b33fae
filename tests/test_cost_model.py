"""The cost model behind ``bench run --dry-run`` and the memory check before every run
(``bench.cost_model``, ``bench.memory``, ``bench.plan``).

Expected values come from independent counts: the SSL4MIS U-Net's convolutions written out layer by
layer, and ``torch.utils.flop_counter.FlopCounterMode`` on a real-size SAM built on the ``meta`` device.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.cli import main
from bench.cost_model import EncoderCall, method_costs, on_meta, replay
from bench.execute import budget_for, dataset_for, validate_spec
from bench.memory import REFUSED_REASON, REFUSED_TYPE
from bench.method import TaskSpec
from bench.plan import SweepPlan
from bench.registry import METHODS
from bench.runs import FAILURE_FILE, SUMMARY_FILE, RunSpec

WIDTHS = (16, 32, 64, 128, 256)


def unet_training_flops(side: int, widths=WIDTHS, in_channels: int = 1, classes: int = 4) -> int:
    """FLOPs (2 per multiply-add) of one image through the SSL4MIS U-Net, forward and backward.

    Forward: every convolution ``2 * C_in * C_out * k^2 * H * W``.  Backward: the weight gradient costs
    a forward again and the input gradient another, except for the first convolution, whose input (the
    image) needs no gradient."""

    def conv(c_in: int, c_out: int, kernel: int, size: int) -> int:
        return 2 * c_in * c_out * kernel * kernel * size * size

    forward = conv(in_channels, widths[0], 3, side) + conv(widths[0], widths[0], 3, side)  # in_conv
    for level in range(1, len(widths)):  # MaxPool + ConvBlock
        size = side // 2**level
        forward += conv(widths[level - 1], widths[level], 3, size) + conv(widths[level], widths[level], 3, size)
    for level in range(len(widths) - 1, 0, -1):  # 1x1 conv at the deeper level, up-sample, ConvBlock(2C -> C)
        deeper, size = side // 2**level, side // 2 ** (level - 1)
        forward += conv(widths[level], widths[level - 1], 1, deeper)
        forward += conv(2 * widths[level - 1], widths[level - 1], 3, size) + conv(widths[level - 1], widths[level - 1], 3, size)
    forward += conv(widths[0], classes, 3, side)  # out_conv
    first = conv(in_channels, widths[0], 3, side)
    return 3 * forward - first


def spec_for(method: str, budget: str = "smoke", **options) -> RunSpec:
    labels = "all" if METHODS.get(method).trains_on_all_labels else "1"
    return RunSpec(dataset="synthetic", method=method, labels=labels, seed=0, budget=budget,
                   options={"data_root": None, "dataset_options": {}, **options})


def costs_of(spec: RunSpec):
    adapter = dataset_for(spec)
    return method_costs(spec, adapter, budget_for(spec, adapter, METHODS.get(spec.method)))


@pytest.mark.parametrize("side", [64, 128])
def test_unet_step_flops_match_the_layer_by_layer_count(side):
    """Traced at 32 px and scaled to ``side``: ``supervised`` with 5 images does 5 U-Net passes."""
    costs = costs_of(spec_for("supervised", budget="quick"))
    step = costs.step(5, 0, side)
    assert step.conv_flops == pytest.approx(5 * unet_training_flops(side), rel=1e-9)
    assert step.matmul_flops == 0


def test_saved_activations_scale_to_a_step_counted_at_full_size():
    """Mean Teacher at 64 px with 3 + 3 images: the bytes autograd saves, counted directly on that step,
    are what the 32 px traces scaled predict; the plan's memory estimate holds them."""
    from bench.cost_model import STEADY_STATE_PROGRESS, fake_batch

    spec = spec_for("mean-teacher", budget="quick")
    adapter = dataset_for(spec)
    method_cls = METHODS.get("mean-teacher")
    task = TaskSpec(adapter.in_channels, adapter.num_classes, (64, 64), 1, WIDTHS)
    method = method_cls(method_cls.default_params(), task)
    parameters = {p.untyped_storage()._cdata for p in method.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        key = tensor.untyped_storage()._cdata
        if key not in parameters:
            saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    batch = fake_batch(method_cls, adapter.in_channels, adapter.num_classes, 3, 3, size=64)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        method(batch, STEADY_STATE_PROGRESS)
    step = costs_of(spec).step(3, 3, 64)
    assert step.saved_bytes == pytest.approx(sum(saved.values()), rel=0.02)
    validate_spec(spec)
    plan = SweepPlan([spec], timed=False)[spec]
    full = costs_of(spec).step(plan.labeled_batch, plan.unlabeled_batch, plan.patch)
    assert plan.memory.activations >= full.saved_bytes > 0
    assert plan.memory.peak > plan.memory.process + full.saved_bytes


def _sam_task(model: str) -> TaskSpec:
    return TaskSpec(in_channels=1, num_classes=4, patch_size=(32, 32), total_steps=1,
                    options={"sam_model": model, "sam_random_init": True})


def _forward_flops(module, *inputs) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops()


def test_sam_encoder_replay_counts_the_real_encoder():
    """One image through LiteMedSAM's encoder, at its own 256 px, whatever the traced patch."""
    from bench.sam.model import sam_for

    sam = on_meta(lambda: sam_for(_sam_task("lite-medsam"), report=False))
    expected = _forward_flops(sam.image_encoder, torch.zeros(1, 3, 256, 256, device="meta"))
    assert expected > 50e9  # LiteMedSAM's encoder: ~75 GFLOP per image
    assert replay(sam, EncoderCall("", 1, False)).flops == pytest.approx(expected, rel=1e-9)
    assert replay(sam, EncoderCall("", 3, False)).flops == pytest.approx(3 * expected, rel=1e-9)


def test_sam_substitution_puts_the_real_backbone_in_place_of_the_tiny_one():
    """SAMed's prediction with LiteMedSAM costs its tiny-SAM prediction plus the difference of the two
    whole models' forwards counted directly (encoder, LoRA and decoder): the model traced the tiny SAM
    only and replaced its encoder and decoder calls by the real ones."""
    samed = METHODS.get("samed")

    def direct(model: str) -> int:
        method = on_meta(lambda: samed(samed.default_params(), _sam_task(model)))
        return _forward_flops(method.predict, torch.zeros(1, 1, 32, 32, device="meta"))

    real = costs_of(spec_for("samed", sam_model="lite-medsam", sam_random_init=True)).prediction(1, 32)
    tiny = costs_of(spec_for("samed", sam_model="tiny", sam_random_init=True)).prediction(1, 32)
    assert real.flops - tiny.flops == pytest.approx(direct("lite-medsam") - direct("tiny"), rel=1e-6)
    assert real.flops > 50e9


def test_a_module_sized_by_the_backbone_is_replayed_at_the_real_size():
    """KnowSAM's learnable prompt (conv blocks on SAM's embedding) is as wide as the backbone's
    embedding: its traced calls on the tiny SAM's 32 x 8 x 8 embedding are replayed on LiteMedSAM's
    256 x 64 x 64, which a direct count of that module's forward on ``meta`` gives."""
    from bench.cost_model import ModuleCall, Sized, backbone_sized_modules, embedding_size, _adapted_sams

    knowsam = METHODS.get("knowsam")
    real = on_meta(lambda: knowsam(knowsam.default_params(), _sam_task("lite-medsam")))
    tiny = on_meta(lambda: knowsam(knowsam.default_params(), _sam_task("tiny")))
    assert backbone_sized_modules(tiny, real) == ["learnable_prompt"]
    assert embedding_size(_adapted_sams(real)) == (256, 64, 64)
    expected = _forward_flops(real.learnable_prompt, torch.zeros(1, 256, 64, 64, device="meta"))
    call = ModuleCall("learnable_prompt", 3, ((3, 32, 8, 8),), ("torch.float32",), (False,), False, (32, 8, 8))
    cost = replay(Sized(real.learnable_prompt, (256, 64, 64)), call)
    assert cost.flops == pytest.approx(3 * expected, rel=1e-9)
    # The whole step against benchmarks/method_step_time.py --flops, which ran the real LiteMedSAM
    # KnowSAM at 1 + 1 images of 128 px (leaderboards/acdc-quick/STATUS.md: 799 GFLOP).
    costs = costs_of(spec_for("knowsam", budget="quick", sam_model="lite-medsam", sam_random_init=True))
    assert costs.step(1, 1, 128).flops == pytest.approx(799e9, rel=0.03)


def test_a_slice_cache_is_paid_once_per_slice_not_per_step():
    """SemiSAM keeps each unlabeled slice's embedding (keyed by its index): the first sight of a slice
    costs one frozen LiteMedSAM encoder pass, counted directly; a step on slices seen before costs none."""
    from bench.sam.model import sam_for

    costs = costs_of(spec_for("semisam", sam_model="lite-medsam", sam_random_init=True))
    sam = on_meta(lambda: sam_for(_sam_task("lite-medsam"), class_tokens=False, adaptation="frozen", report=False))
    encoder = _forward_flops(sam.image_encoder, torch.zeros(1, 3, 256, 256, device="meta"))
    assert costs.first_sight.sam.flops == pytest.approx(encoder, rel=1e-6)
    assert costs.first_sight_cost(10, 128).flops == pytest.approx(10 * encoder, rel=1e-6)
    assert costs.per_unlabeled.sam.flops < encoder / 2  # per slice seen before: the prompted decoder passes only


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["run", "--methods", "supervised,mean-teacher", "--dataset", "synthetic", "--labels", "1",
                 "--seeds", "2", "--budget", "smoke", "--no-progress", "--dry-run", "--out", str(out)])
    assert code == 0
    lines = capsys.readouterr().err.splitlines()
    runs = [line for line in lines if "seed" in line and " it, batch " in line]
    assert len(runs) == 4, lines  # 2 methods x 2 seeds
    for line in runs:
        assert "4 it, batch" in line and "ms/step" in line and "GiB" in line and "~" in line
    assert any(line.startswith("total: ") for line in lines)
    trained = [path for path in out.rglob("*") if path.name in (SUMMARY_FILE, "checkpoint.pt", "best.pt", "train_log.csv")]
    assert trained == []


def test_a_run_over_the_memory_limit_is_refused_and_recorded_while_a_small_one_runs(tmp_path, capsys):
    """SAMed on LiteMedSAM (planned on ``meta``: no weights read) needs gigabytes to evaluate 8 slices
    at once, the smoke U-Net a few hundred megabytes: a limit between the two refuses one, runs the
    other, and a second sweep plans the refused one again instead of calling it failed."""
    small, large = spec_for("supervised"), spec_for("samed", sam_model="lite-medsam", sam_random_init=False)
    for spec in (small, large):
        validate_spec(spec)
    plan = SweepPlan([small, large], timed=False)
    small_peak, large_peak = plan[small].memory.peak, plan[large].memory.peak
    assert large_peak > small_peak + 2**30
    limit_gb = (small_peak + large_peak) / 2 / 0.9 / 2**30  # usable = limit less the 10 % margin
    out = tmp_path / "runs"
    args = ["run", "--methods", "supervised,samed", "--dataset", "synthetic", "--labels", "1", "--budget", "smoke",
            "--no-progress", "--no-estimate", "--sam-model", "lite-medsam", "--memory-limit", f"{limit_gb:.3f}",
            "--out", str(out)]
    assert main(args) == 1  # a refused run, like a failed one, leaves the sweep incomplete
    err = capsys.readouterr().err
    assert (small.directory(out) / SUMMARY_FILE).exists()
    refused_dir = large.directory(out)
    assert not (refused_dir / SUMMARY_FILE).exists() and not (refused_dir / "config.json").exists()
    record = json.loads((refused_dir / FAILURE_FILE).read_text())
    assert record["type"] == REFUSED_TYPE and record["config"] == large.config()
    message = record["reason"]
    assert message.startswith(f"{REFUSED_REASON}: samed needs ~")
    assert f"--memory-limit {float(f'{limit_gb:.3f}'):g} GB" in message
    assert "--batch" in message or "GPU" in message
    assert "REFUSED samed" in err
    # A second sweep with room enough runs it: a refusal is no failure to be retried by hand.
    plan_again = SweepPlan([large], memory_limit_gb=1000, timed=False)
    assert plan_again.refusal(large) is None
    from bench.sweep import pending_runs

    outcome, pending = pending_runs([small, large], out)
    assert [spec.method for spec in pending] == ["samed"] and not outcome.failed
