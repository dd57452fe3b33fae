"""What a run will cost on this machine, in seconds and bytes, without training it.

``bench run --dry-run`` prints this model's plan and every sweep checks its memory estimate before a
run starts (``bench.plan``, ``bench.memory``); the former estimate, timed steps of every real model
(minutes, and more memory than CPC-SAM's run on a 24 GiB machine), stays behind ``--estimate measured``.

**Work per step** (:func:`method_costs`).  One training step of the method (built for a one-step
schedule, so past BCP's pre-training and every warm-up: the steady state, an upper bound where early
phases are cheaper) is traced on a fake batch with the views the method asks for, at a tiny scale:
32 x 32 patches and the budget's own U-Net widths; SAM methods on the tiny SAM (random weights).
The trace runs at (2 labeled, 2 unlabeled) images, (4, 2) and (4, 4), so the fixed, per-labeled and
per-unlabeled shares separate (BCP needs two of each; the third adds to the second, so BCP's
``min(L, U)`` copy-paste pairs are exact at balanced batches).  It counts FLOPs (the formulas of
``torch.utils.flop_counter.FlopCounterMode``, in a dispatch mode of ours without its per-module
bookkeeping: convolutions and matrix products, forward and backward), aten operations, the bytes the
other operations write (by tensor size), the bytes autograd saves for backward (``saved_tensors_hooks``,
parameters excluded) and the most bytes alive at once.  U-Nets are fully convolutional: every count
but the number of operations scales with ``(patch / 32) ** 2``.

SAM methods spend their step in the image encoder and mask decoders, which run at the backbone's
size (LiteMedSAM 256 px, ViT ``vit_image_size``), not the patch's.  The trace records every encoder
call (a forward pre-hook: images, gradients on or off) and decoder call (``AdaptedSAM.run_decoder``:
images, prompt tokens, which inputs need gradients); each is replayed for one image on the ``meta``
device (no weights, no memory, milliseconds) on the tiny SAM and on the real one, built on ``meta``
from the run's options (backbone, ``vit_image_size``, LoRA/adapters, checkpointing), forward and, where
the call had gradients, backward.  The step's cost is the trace less the tiny calls plus the real ones
(times their images), and so are the calls of modules outside the SAM that are sized by its
embedding (their parameters differ between the tiny-SAM and the real build, e.g. KnowSAM's learnable
prompt: its inputs are mapped from the tiny embedding's shape to the real one's); the rest (losses, a
U-Net beside the SAM) scales with the patch.  A step with
encoder calls is traced twice on the same slices: what the second sight saves (SemiSAM's per-slice
embedding cache) is paid once per unlabeled slice the run draws, not per step, and the encoder
outputs the method still holds after the step (the cache's entries) count, at the real embedding's
size, in the run's memory.

**Evaluation**: ``predict`` is traced the same way on 1 and 2 images; a run predicts every validation
slice at every ``validate_every`` steps and the test slices once.

**Seconds** = conv FLOPs / conv rate + product FLOPs / product rate + bytes written by the other
operations / write rate (tensors above 32 MiB at the large-tensor rate: a fresh ``mmap`` page-faults)
+ operations x dispatch overhead + loading and augmenting the batch (timed on fake slices at the real
patch).  The rates come from a micro-benchmark (:func:`measure_throughput`: a U-Net ladder of 3 x 3
convolutions, a ViT-B linear layer and an attention product, a GELU/softmax/layer-norm mix, 4 and 40 MB
additions, a stack of tiny layers; each a millisecond or a few, the fastest of up to 24 repeats, on one
thread, times the threaded speed-up measured alike), run once per machine and cached in
``$BENCH_CACHE_DIR/throughput.json`` (default ``~/.cache/bench``) keyed by CPU model, GPU, torch threads
and torch version; delete the file to measure again.  Rates and estimates are the quiet machine's.

**Validation** on this project's 2-core Intel Xeon, torch 2.14, ACDC ``quick`` (128 px), measured by
``python benchmarks/cost_model_check.py`` (the fastest of 4 steps after a warm-up, with real data; the
peak resident set of a fresh process that trains them and validates 2 cases).  Other jobs loaded the
machine (load average 1-5 on 2 cores): with one torch thread a step's CPU time is its quiet duration
whatever the load, with two the table was taken at a quiet moment (load ~1).  est/measured:

    run (batch)                     1 thread: s/step est/meas   2 threads: s/step est/meas   peak GiB est/meas
    supervised (16+0)               0.99 / 1.08  = 0.92         0.64 / 0.58  = 1.11          2.22 / 1.65 = 1.35
    mean-teacher (8+8)              1.18 / 1.29  = 0.92                                      2.12 / 1.67 = 1.27
    unimatch (8+8)                  2.83 / 2.85  = 0.99         1.84 / 1.45  = 1.27          2.85 / 2.52 = 1.13
    cps (8+8)                       1.99 / 2.16  = 0.92         1.29 / 1.16  = 1.11          2.63 / 2.21 = 1.19
    samed, LiteMedSAM (2+0)         5.27 / 7.68  = 0.69         3.37 / 3.83  = 0.88          7.31 / 5.70 = 1.28
    cpc-sam, LiteMedSAM (2+2)       17.7 / 21.1  = 0.84         11.5 / 10.3  = 1.12          11.6 / 10.1 = 1.15
    cpc-sam, tiny SAM (8+8)         0.25 / 0.50  = 0.50                                      1.54 / 1.28 = 1.21

The tiny SAM's step is Python and prompt bookkeeping more than arithmetic, which the model sees only
as operations.  Against the 95 finished runs of ``leaderboards/acdc-quick`` (``--records``: full
1,000-step runs with test scoring, 13 methods) the peak estimate is 0.94-1.31 of the recorded peak
(``bench.memory``); their recorded training time on this CPU model (run under unknown load) is 1.4-1.9x
the estimate.  FLOPs per step at 1 + 1 images of 128 px on LiteMedSAM, ``benchmarks/method_step_time.py
--flops`` on the real models (leaderboards/acdc-quick STATUS) / this model: samed 154 / 154, cpc-sam
418 / 418, interactmatch 420 / 420, synfoc 399 / 399, knowsam 799 / 812, supervised 9 / 8.8.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import time
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._device import DeviceContext, _device_constructors
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from bench.budget import Budget
from bench.method import Method, Progress, TaskSpec

TRACE_PATCH = 32
"""Patch side of the tiny trace; a multiple of 16 so every U-Net depth in use divides it."""
TRACE_BATCHES: tuple[tuple[int, int], ...] = ((2, 2), (4, 2), (4, 4))
"""(labeled, unlabeled) images of the three traced steps: the per-image costs are their differences
(halved).  Two of each at least, since BCP pairs the two halves of a batch; the third step adds
unlabeled images to the second rather than to the first, so a cost that grows with pairs of a labeled
and an unlabeled image (BCP's copy-paste, ``min(L, U)`` pairs) is exact at the balanced batches every
budget uses."""
STEADY_STATE_PROGRESS = Progress(step=1, total_steps=1)
"""The traced step, as ``--estimate measured`` times it: past every phase switch at a fraction of training."""
THROUGHPUT_FILE = "throughput.json"
THROUGHPUT_FORMAT = 2


# -- counting ---------------------------------------------------------------------------------------------

SIZE_BUCKETS = 64
LARGE_TENSOR_BYTES = 32 * 2**20
"""Above this size a CPU tensor is a fresh ``mmap`` (glibc's largest mmap threshold on 64-bit), whose
first write page-faults: writing it costs about twice as much per byte (``Throughput``)."""


def enlarged(histogram: np.ndarray, factor: float) -> np.ndarray:
    """A histogram of bytes by ``log2`` tensor size with every tensor ``factor`` times bigger."""
    if factor <= 0:
        return np.zeros_like(histogram)
    shift = int(round(math.log2(factor)))
    moved = np.zeros_like(histogram)
    for bucket in np.nonzero(histogram)[0]:
        moved[min(SIZE_BUCKETS - 1, max(0, bucket + shift))] += histogram[bucket] * factor
    return moved


def large_share(histogram: np.ndarray | None) -> float:
    """Share of the bytes written to tensors above :data:`LARGE_TENSOR_BYTES`."""
    if histogram is None or histogram.sum() <= 0:
        return 0.0
    return float(histogram[int(math.log2(LARGE_TENSOR_BYTES)):].sum() / histogram.sum())


@dataclass
class Cost:
    """The work of a step (or of part of one).  Every field adds up over parts except ``transient_bytes``
    (the largest set of tensors alive inside one part), which takes the maximum.  ``histogram``: bytes
    written by ``log2`` of the size of the tensor written (where counted)."""

    conv_flops: float = 0.0
    matmul_flops: float = 0.0
    operations: float = 0.0
    bytes_written: float = 0.0
    saved_bytes: float = 0.0
    transient_bytes: float = 0.0
    histogram: np.ndarray | None = field(default=None, repr=False)

    ADDITIVE = ("conv_flops", "matmul_flops", "operations", "bytes_written", "saved_bytes")
    SCALED_WITH_AREA = ("conv_flops", "matmul_flops", "bytes_written", "saved_bytes", "transient_bytes")

    @property
    def flops(self) -> float:
        return self.conv_flops + self.matmul_flops

    def combine(self, other: "Cost", sign: float = 1.0) -> "Cost":
        values = {name: getattr(self, name) + sign * getattr(other, name) for name in self.ADDITIVE}
        histograms = [h for h in (self.histogram, None if other.histogram is None else sign * other.histogram)
                      if h is not None]
        return Cost(**values, transient_bytes=max(self.transient_bytes, other.transient_bytes) if sign > 0
                    else self.transient_bytes, histogram=sum(histograms) if histograms else None)

    def __add__(self, other: "Cost") -> "Cost":
        return self.combine(other)

    def __sub__(self, other: "Cost") -> "Cost":
        return self.combine(other, -1.0)

    def times(self, factor: float) -> "Cost":
        """``factor`` times as many of the same tensors."""
        return Cost(**{name: getattr(self, name) * factor for name in self.ADDITIVE},
                    transient_bytes=self.transient_bytes * factor,
                    histogram=None if self.histogram is None else self.histogram * factor)

    def area_scaled(self, factor: float) -> "Cost":
        """The same tensors, each ``factor`` times bigger (every operation but their number)."""
        return dataclasses.replace(self, **{name: getattr(self, name) * factor for name in self.SCALED_WITH_AREA},
                                   histogram=None if self.histogram is None else enlarged(self.histogram, factor))

    def clipped(self) -> "Cost":
        """Differences of traces can dip below zero by rounding; no share of a step costs less than nothing."""
        return Cost(**{name: max(0.0, getattr(self, name)) for name in self.ADDITIVE + ("transient_bytes",)},
                    histogram=None if self.histogram is None else np.maximum(self.histogram, 0.0))


def _storage_key(tensor: torch.Tensor) -> int:
    """One key per storage, on every device ``meta`` included (its data pointers are all 0)."""
    return tensor.untyped_storage()._cdata


def _storage_bytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


def is_conv(op: Any) -> bool:
    return "conv" in str(op)


class WorkCounter(TorchDispatchMode):
    """Counts, for every aten operation dispatched inside it: FLOPs (the formulas of
    ``torch.utils.flop_counter.FlopCounterMode``, without its per-module bookkeeping, which a trace of
    thousands of operations pays for in seconds), operations, and bytes of the storages operations
    create (views and in-place operations create none).  With ``live=True`` also the peak of bytes held
    by tensors created inside it and still referenced (a weak reference on every output)."""

    def __init__(self, live: bool = False) -> None:
        super().__init__()
        self.conv_flops = 0
        self.matmul_flops = 0
        self.operations = 0
        self.bytes_written = 0
        self.live = live
        self._holders: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self.histogram = np.zeros(SIZE_BUCKETS)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        self.operations += 1
        packet = func.overloadpacket
        formula = flop_registry.get(packet)
        if formula is not None:
            flops = formula(*args, **kwargs, out_val=output)
            if is_conv(packet):
                self.conv_flops += flops
            else:
                self.matmul_flops += flops
        if func._schema.is_mutable:
            return output  # an in-place operation makes no storage
        if func.is_view:  # no storage either, but it keeps its base's alive
            if self.live and isinstance(output, torch.Tensor):
                self._hold(output)
            return output
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor):
                size = tensor.numel() * tensor.element_size()
                if formula is None and size:  # a product's writes are part of its FLOP rate
                    self.bytes_written += size
                    self.histogram[min(SIZE_BUCKETS - 1, size.bit_length() - 1)] += size
                if self.live:
                    self._hold(tensor)
        return output

    def _hold(self, tensor: torch.Tensor) -> None:
        key = _storage_key(tensor)
        if key not in self._holders:
            self._holders[key] = 0
            self._sizes[key] = _storage_bytes(tensor)
            self.live_bytes += self._sizes[key]
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._holders[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self._holders[key] -= 1
        if self._holders[key] == 0:
            del self._holders[key]
            self.live_bytes -= self._sizes.pop(key)


@contextlib.contextmanager
def counting(exclude: Sequence[torch.Tensor] = (), live: bool = False,
             keep: list | None = None) -> Iterator[Cost]:
    """Everything a block of code costs: yields a :class:`Cost` filled in when the block ends.
    ``exclude``: tensors (parameters) whose storage autograd may save without it counting; ``keep``:
    a list the :class:`WorkCounter` is appended to (its live storages stay followed afterwards)."""
    cost = Cost()
    excluded = {_storage_key(tensor) for tensor in exclude}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in excluded:
            saved[key] = _storage_bytes(tensor)
        return tensor

    counter = WorkCounter(live=live)
    if keep is not None:
        keep.append(counter)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), counter:
        yield cost
    cost.conv_flops = float(counter.conv_flops)
    cost.matmul_flops = float(counter.matmul_flops)
    cost.operations = float(counter.operations)
    cost.bytes_written = float(counter.bytes_written)
    cost.saved_bytes = float(sum(saved.values()))
    cost.transient_bytes = float(counter.peak_bytes)
    cost.histogram = counter.histogram


# -- models on the meta device ----------------------------------------------------------------------------

class _MetaDevice(DeviceContext):
    """``with torch.device("meta")`` except for ``arange``/``linspace``: model constructors read values
    from those (TinyViT's drop-path rates call ``.item()``), which a meta tensor does not have; the few
    small tensors made so go to ``meta`` with the module afterwards."""

    ON_CPU = {torch.arange, torch.linspace, torch.logspace}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None and func not in self.ON_CPU:
            kwargs["device"] = self.device
        return func(*args, **kwargs)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Model constructors report what they built (``[bench.sam] ...``); a plan builds dozens."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        yield


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with every parameter and buffer on the ``meta`` device: shapes without memory."""
    with _MetaDevice(torch.device("meta")), quiet():
        module = build()
    return module.to("meta")


def sam_free_options(options: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """The run's options with SAM weights left out (random initialisation reads no file) and, with
    ``model``, another backbone."""
    options = {k: v for k, v in options.items() if k not in ("data_root", "dataset_options")}
    options.update(sam_random_init=True, sam_checkpoint=None, sam_embedding_store=None)
    if model is not None:
        options["sam_model"] = model
    return options


# -- the traced step ----------------------------------------------------------------------------------------

def _adapted_sams(method: nn.Module) -> dict[str, nn.Module]:
    from bench.sam.model import AdaptedSAM

    return {name: module for name, module in method.named_modules() if isinstance(module, AdaptedSAM)}


@dataclass(frozen=True)
class EncoderCall:
    sam: str
    images: int
    grad: bool


@dataclass(frozen=True)
class DecoderCall:
    sam: str
    decoder: int
    images: int
    sparse_batch: int
    tokens: int
    dense_batch: int
    grad: bool
    embeddings_grad: bool
    sparse_grad: bool
    dense_grad: bool


@dataclass(frozen=True)
class ModuleCall:
    """A call of a module sized by the SAM backbone (it takes SAM's embeddings, e.g. KnowSAM's
    learnable prompt): its tensor arguments' shapes at the tiny SAM's embedding size."""

    sam: str
    images: int
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    needs_grad: tuple[bool, ...]
    grad: bool
    embedding: tuple[int, int, int]
    """(channels, height, width) of the tiny SAM's embeddings, which the replay maps to the real one's."""


@dataclass(frozen=True)
class Sized:
    """A backbone-sized module to replay a :class:`ModuleCall` on, with its SAM's embedding size."""

    module: nn.Module
    embedding: tuple[int, int, int]


def embedding_size(sams: dict[str, nn.Module]) -> tuple[int, int, int]:
    """(channels, height, width) of the first SAM's image embeddings (``(0, 0, 0)`` without a SAM)."""
    for sam in sams.values():
        return (sam.prompt_encoder.embed_dim, *sam.prompt_encoder.image_embedding_size)
    return (0, 0, 0)


def backbone_sized_modules(tiny: nn.Module, real: nn.Module) -> list[str]:
    """Outermost modules outside every SAM whose parameters differ in shape between the method built on
    the tiny SAM and on the real one: they are sized by the backbone, not by the patch."""
    from bench.sam.model import AdaptedSAM

    real_modules = dict(real.named_modules())
    in_sams = {id(inner) for module in tiny.modules() if isinstance(module, AdaptedSAM) for inner in module.modules()}
    chosen: list[str] = []
    for name, module in tiny.named_modules():
        if not name or any(name.startswith(prefix + ".") for prefix in chosen) or name not in real_modules:
            continue
        if any(id(inner) in in_sams for inner in module.modules()):
            continue  # part of a SAM (under any of its names), or holds one: replayed as SAM calls
        shapes = [tuple(p.shape) for p in module.parameters()]
        if shapes != [tuple(p.shape) for p in real_modules[name].parameters()]:
            chosen.append(name)
    return chosen


class SAMCalls:
    """Records every encoder and decoder call of the SAMs in ``method``, and every call of the modules
    named in ``sized``, while active."""

    def __init__(self, method: nn.Module, sized: Sequence[str] = ()) -> None:
        self.sams = _adapted_sams(method)
        modules = dict(method.named_modules())
        self.sized = {name: modules[name] for name in sized}
        self.embedding = embedding_size(self.sams)
        self.calls: list[EncoderCall | DecoderCall] = []
        self.encoder_outputs: list[tuple[str, int, int]] = []
        """(SAM, storage of an encoder output, images in it): what a per-slice cache would keep."""
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> "SAMCalls":
        for name, sam in self.sams.items():
            def before_encoder(module, args, name=name):
                self.calls.append(EncoderCall(name, int(args[0].shape[0]), torch.is_grad_enabled()))

            def after_encoder(module, args, output, name=name):
                self.encoder_outputs.append((name, _storage_key(output), int(output.shape[0])))

            for handle in (sam.image_encoder.register_forward_pre_hook(before_encoder),
                           sam.image_encoder.register_forward_hook(after_encoder)):
                self._undo.append(handle.remove)
            original = sam.run_decoder

            def run_decoder(decoder_index, image_embeddings, sparse, dense, name=name, original=original):
                self.calls.append(DecoderCall(
                    name, int(decoder_index), int(image_embeddings.shape[0]), int(sparse.shape[0]),
                    int(sparse.shape[1]), int(dense.shape[0]), torch.is_grad_enabled(),
                    image_embeddings.requires_grad, sparse.requires_grad, dense.requires_grad,
                ))
                return original(decoder_index, image_embeddings, sparse, dense)

            sam.run_decoder = run_decoder
            self._undo.append(lambda sam=sam: sam.__dict__.pop("run_decoder", None))
        for name, module in self.sized.items():
            def before_module(module, args, name=name):
                tensors = [arg for arg in args if isinstance(arg, torch.Tensor)]
                if tensors:
                    self.calls.append(ModuleCall(
                        name, int(tensors[0].shape[0]), tuple(tuple(t.shape) for t in tensors),
                        tuple(str(t.dtype) for t in tensors), tuple(t.requires_grad for t in tensors),
                        torch.is_grad_enabled(), self.embedding,
                    ))

            self._undo.append(module.register_forward_pre_hook(before_module).remove)
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def replay(sam: nn.Module, call: EncoderCall | DecoderCall) -> Cost:
    """The cost of ``call`` on ``sam`` (a SAM on the ``meta`` device), at ``sam``'s own sizes: one image
    replayed, every count but the operations' times the call's images."""
    unit = dataclasses.replace(call, sam="", images=1)
    if isinstance(call, DecoderCall):
        unit = dataclasses.replace(unit, sparse_batch=1, dense_batch=1)
    if isinstance(call, ModuleCall):
        unit = dataclasses.replace(unit, shapes=tuple((1, *shape[1:]) if shape and shape[0] == call.images else shape
                                                      for shape in call.shapes))
    key = (_structure(sam), unit)
    if key not in _REPLAYS:
        _REPLAYS[key] = _replay_one(sam, unit)
    cost = _REPLAYS[key]
    return dataclasses.replace(cost.area_scaled(call.images), operations=cost.operations)


_REPLAYS: dict[tuple, Cost] = {}
_STRUCTURES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _structure(sam: nn.Module) -> tuple:
    """What a replay's cost depends on: input size, module types, parameter shapes and which train
    (so the equal encoders of several methods are replayed once per process)."""
    if isinstance(sam, Sized):
        return (sam.embedding, _structure(sam.module))
    if sam not in _STRUCTURES:
        _STRUCTURES[sam] = (
            getattr(sam, "image_size", None), tuple(type(module).__name__ for module in sam.modules()),
            tuple((name, tuple(p.shape), p.requires_grad) for name, p in sam.named_parameters()),
        )
    return _STRUCTURES[sam]


def _mapped(shape: tuple[int, ...], tiny: tuple[int, int, int], real: tuple[int, int, int]) -> tuple[int, ...]:
    """A tensor shape at the tiny SAM's embedding size -> at the real one's: ``[B, C, h, w]`` embeddings
    and ``[B, N, C]`` tokens."""
    channels, height, width = tiny
    if len(shape) == 4 and shape[1] == channels and shape[2:] == (height, width):
        return (shape[0], *real)
    if len(shape) == 3 and shape[2] == channels:
        return (shape[0], shape[1], real[0])
    return shape


def _replay_one(sam: nn.Module, call: EncoderCall | DecoderCall | ModuleCall) -> Cost:
    device = torch.device("meta")
    if isinstance(call, ModuleCall):
        parameters = list(sam.module.parameters())
        with torch.set_grad_enabled(call.grad):
            inputs = [torch.zeros(_mapped(shape, call.embedding, sam.embedding), dtype=getattr(torch, dtype.split(".")[-1]),
                                  device=device).requires_grad_(needs and call.grad)
                      for shape, dtype, needs in zip(call.shapes, call.dtypes, call.needs_grad)]
            with counting(parameters, live=True) as cost:
                outputs = [output for output in _flat(sam.module(*inputs)) if isinstance(output, torch.Tensor)]
                _backward(outputs)
                del outputs
        return cost
    parameters = list(sam.parameters())
    with torch.set_grad_enabled(call.grad):
        if isinstance(call, EncoderCall):
            images = torch.zeros(call.images, 3, sam.image_size, sam.image_size, device=device)
            with counting(parameters, live=True) as cost:
                outputs = [sam.image_encoder(images)]
                _backward(outputs)
                del outputs
        else:
            channels = sam.prompt_encoder.embed_dim
            height, width = sam.prompt_encoder.image_embedding_size
            embeddings = torch.zeros(call.images, channels, height, width, device=device, requires_grad=call.embeddings_grad)
            sparse = torch.zeros(call.sparse_batch, call.tokens, channels, device=device, requires_grad=call.sparse_grad)
            dense = torch.zeros(call.dense_batch, channels, height, width, device=device, requires_grad=call.dense_grad)
            with counting(parameters, live=True) as cost:
                outputs = list(sam.run_decoder(call.decoder, embeddings, sparse, dense))
                _backward(outputs)
                del outputs
    return cost


def _flat(value: Any) -> list:
    if isinstance(value, (tuple, list)):
        return [item for inner in value for item in _flat(inner)]
    return [value]


def _backward(outputs: list[torch.Tensor]) -> None:
    """Backward from every output that needs it, as a loss built on them would."""
    needing = [output for output in outputs if output.requires_grad]
    if needing:
        torch.autograd.backward(needing, [torch.ones_like(output) for output in needing])


def fake_slices(num_classes: int, size: int, count: int, seed: int = 0) -> list:
    """Grey slices (the streams' only kind) with every class as a disc or ring around a jittered centre,
    so prompts drawn from connected components find every class, on a noisy background."""
    from bench.data.adapter import TrainingSlice

    rng = np.random.default_rng(seed)
    slices = []
    yy, xx = np.mgrid[0:size, 0:size]
    for index in range(count):
        centre = size / 2 + rng.uniform(-size / 8, size / 8, 2)
        radius = np.hypot(yy - centre[0], xx - centre[1]) / (size / 2)
        label = np.zeros((size, size), dtype=np.uint8)
        for class_id in range(1, num_classes):
            label[radius < 1.0 - class_id / num_classes * 0.9] = class_id
        image = (label / max(1, num_classes - 1) + rng.normal(0, 0.1, (size, size))).astype(np.float32)
        slices.append(TrainingSlice(f"fake{index}", image, label))
    return slices


def fake_batch(method_cls: type[Method], in_channels: int, num_classes: int, labeled: int, unlabeled: int,
               size: int = TRACE_PATCH):
    """A batch with the keys and views the real streams give ``method_cls`` (``bench.data.streams``)."""
    from torch.utils.data import default_collate

    from bench.data.streams import SliceViews
    from bench.training import assemble_batch

    slices = fake_slices(num_classes, size, max(labeled, unlabeled, 1))
    labeled_views = SliceViews(slices, (size, size), ("weak",) + tuple(method_cls.labeled_views), True, 0)
    labeled_batch = default_collate([labeled_views[i] for i in range(labeled)])
    unlabeled_batch = None
    if method_cls.unlabeled_views and unlabeled:
        unlabeled_views = SliceViews(slices, (size, size), method_cls.unlabeled_views, False, 1)
        unlabeled_batch = default_collate([unlabeled_views[i] for i in range(unlabeled)])

    class Views:  # assemble_batch reads the views from the method's class attributes
        unlabeled_views = method_cls.unlabeled_views
        labeled_views = method_cls.labeled_views

    return assemble_batch(labeled_batch, unlabeled_batch, Views)


@dataclass
class TracedCost:
    """The cost of one traced call split in what scales with the patch (``residual``) and the SAM calls
    at the real backbone's size (``sam``)."""

    residual: Cost
    sam: Cost

    def times(self, factor: float) -> "TracedCost":
        return TracedCost(self.residual.times(factor), self.sam.times(factor))

    def at_patch(self, patch: int) -> Cost:
        return self.residual.area_scaled((patch / TRACE_PATCH) ** 2) + self.sam


@dataclass
class MethodCosts:
    """Per-step training cost as fixed + per labeled image + per unlabeled image, the cost of ``predict``
    per image, and the model's memory (from the real model on ``meta``)."""

    method: str
    backbone: str
    fixed: TracedCost
    per_labeled: TracedCost
    per_unlabeled: TracedCost
    predict_fixed: TracedCost
    predict_per_image: TracedCost
    transient_per_image: float
    """The most one SAM call of a training step holds beyond what autograd keeps of it (its forward's
    temporaries, its backward's gradients), at the real size, per image of the step (a call on the
    unlabeled half holds half as much per image of the step as one on the whole batch)."""
    predict_transient_per_image: float
    """The same for ``predict``'s SAM calls, per image predicted."""
    predict_live_per_image: float
    """Tensors alive at once in a tiny ``predict``, per image, at the trace patch (scaled with it)."""
    train_live_per_image: float
    """The same beyond the saved activations in the tiny training step, per image, at the trace patch."""
    model: "ModelMemory"
    trains: bool
    first_sight: TracedCost
    """What an unlabeled slice costs the first time a method sees it beyond later times (SemiSAM
    encodes a slice once and keeps its embedding): paid once per slice, not per step."""
    kept_per_first_sight: float
    """Bytes of the real encoder's output the method keeps per unlabeled slice seen (its cache)."""
    train_profile: tuple[TracedCost, int] | None = None
    """The largest traced step and its images: how its bytes spread over tensor sizes."""
    predict_profile: tuple[TracedCost, int] | None = None

    def step(self, labeled: int, unlabeled: int, patch: int) -> Cost:
        cost = (self.fixed.at_patch(patch) + self.per_labeled.at_patch(patch).times(labeled)
                + self.per_unlabeled.at_patch(patch).times(unlabeled)).clipped()
        extra = max(self.train_live_per_image * (patch / TRACE_PATCH) ** 2, self.transient_per_image)
        return dataclasses.replace(cost, transient_bytes=extra * (labeled + unlabeled),
                                   histogram=_profile(self.train_profile, labeled + unlabeled, patch, cost.bytes_written))

    def first_sight_cost(self, slices: int, patch: int) -> Cost:
        """The one-off cost of ``slices`` unlabeled slices seen for the first time."""
        return self.first_sight.at_patch(patch).times(slices).clipped()

    def prediction(self, images: int, patch: int) -> Cost:
        cost = (self.predict_fixed.at_patch(patch) + self.predict_per_image.at_patch(patch).times(images)).clipped()
        live = self.predict_live_per_image * (patch / TRACE_PATCH) ** 2 + self.predict_transient_per_image
        return dataclasses.replace(cost, transient_bytes=live * images,
                                   histogram=_profile(self.predict_profile, images, patch, cost.bytes_written))


def _profile(profile: tuple[TracedCost, int] | None, images: int, patch: int, total: float) -> np.ndarray | None:
    """The bytes of a step of ``images`` at ``patch`` spread over tensor sizes as in the traced step
    ``profile``, every tensor grown with the batch (and, outside the SAM, with the patch's area)."""
    if profile is None:
        return None
    traced, traced_images = profile
    grown = images / max(1, traced_images)
    parts = [enlarged(cost.histogram, factor) for cost, factor in
             ((traced.residual, grown * (patch / TRACE_PATCH) ** 2), (traced.sam, grown)) if cost.histogram is not None]
    if not parts or sum(part.sum() for part in parts) <= 0:
        return None
    histogram = sum(parts)
    return histogram * (total / histogram.sum())


@dataclass(frozen=True)
class ModelMemory:
    """Bytes the model holds through training: parameters and buffers, gradients of the trainable
    parameters, optimizer state, and the copy of the best state the loop keeps (on the CPU)."""

    parameters: int
    buffers: int
    trainable: int
    gradients: int
    optimizer_state: int

    @property
    def best_state(self) -> int:
        return self.parameters + self.buffers


def model_memory(method: Method) -> ModelMemory:
    """From a model on ``meta``: its optimizers are built as the run builds them (``optimizers()``), and
    each keeps the state its class keeps per parameter (SGD momentum: 1 tensor; Adam(W): 2; 3 with AMSGrad)."""
    parameters = sum(p.numel() * p.element_size() for p in method.parameters())
    buffers = sum(b.numel() * b.element_size() for b in method.buffers())
    trainable = [p for p in method.parameters() if p.requires_grad]
    gradients = sum(p.numel() * p.element_size() for p in trainable)
    state = 0
    try:
        specs = method.optimizers()
    except Exception:  # a plug-in whose optimizers cannot be built on meta: assume Adam, the largest common
        specs = []
        state = 2 * gradients
    for spec in specs:
        optimizer = spec.optimizer
        for group in optimizer.param_groups:
            per_parameter = _optimizer_states(optimizer, group)
            state += per_parameter * sum(p.numel() * p.element_size() for p in group["params"])
    return ModelMemory(parameters, buffers, sum(p.numel() for p in trainable), gradients, state)


def _optimizer_states(optimizer: torch.optim.Optimizer, group: dict) -> int:
    if isinstance(optimizer, torch.optim.SGD):
        return 1 if group.get("momentum", 0) else 0
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return 3 if group.get("amsgrad") else 2
    return 2


def _build(method_cls: type[Method], params: dict, task: TaskSpec) -> Method:
    return method_cls(method_cls.params_from_dict(params), task)


def _trace_training(method: Method, batch, parameters: list, sized: Sequence[str] = ()) -> tuple[Cost, list, int]:
    """The step's cost, its SAM calls, and how many images' encoder outputs the method still holds
    after it (a per-slice cache of embeddings)."""
    method.train()
    counters: list[WorkCounter] = []
    with SAMCalls(method, sized) as calls, counting(parameters, live=True, keep=counters) as cost:
        output = method(batch, STEADY_STATE_PROGRESS)
        output.loss.backward()
    del output
    method.zero_grad(set_to_none=True)
    kept = 0
    if calls.encoder_outputs:
        gc.collect(1)  # a young cycle may still hold an embedding the method let go of
        alive = counters[0]._holders
        kept = sum(images for _, key, images in calls.encoder_outputs if key in alive)
    return cost, calls.calls, kept


SLICE_INDEX_STRIDE = 1000
"""Each traced batch's unlabeled slices get indices of their own, so a per-slice cache (SemiSAM's
embeddings) filled by one trace does not serve the next."""


def _trace_prediction(method: Method, method_cls: type[Method], in_channels: int, num_classes: int,
                      images: int, parameters: list, sized: Sequence[str] = ()) -> tuple[Cost, list]:
    from bench.method import GROUND_TRUTH_PROMPTS

    batch = fake_batch(method_cls, in_channels, num_classes, images, 0)
    method.eval()
    with torch.no_grad(), SAMCalls(method, sized) as calls, counting(parameters, live=True) as cost:
        if GROUND_TRUTH_PROMPTS in getattr(method, "result_flags", ()):
            method.predict_inputs(batch.labeled_images, batch.labels)
        else:
            method.predict(batch.labeled_images)
    return cost, calls.calls


def _split(cost: Cost, calls: list, tiny_sams: dict, real_sams: dict) -> TracedCost:
    """``cost`` less the tiny SAM calls (the residual, scaled with the patch) and the real calls."""
    tiny = sum((replay(tiny_sams[call.sam], call) for call in calls), Cost())
    real = sum((replay(real_sams[call.sam], call) for call in calls), Cost())
    residual = (cost - tiny).clipped()
    residual.transient_bytes = 0.0
    return TracedCost(residual, real)


def _per_image_transient(calls: list, real_sams: dict, images: int) -> float:
    """The most one of ``calls`` (of a step or prediction on ``images`` images) holds beyond its saved
    tensors, per image of that step."""
    worst = 0.0
    for call in calls:
        cost = replay(real_sams[call.sam], call)
        worst = max(worst, max(0.0, cost.transient_bytes - cost.saved_bytes))
    return worst / max(1, images)


@lru_cache(maxsize=64)
def _method_costs(method: str, params_json: str, options_json: str, in_channels: int, num_classes: int,
                  widths: tuple[int, ...]) -> MethodCosts:
    from accelerate.utils import set_seed

    from bench.registry import METHODS

    method_cls = METHODS.get(method)
    params = json.loads(params_json)
    options = json.loads(options_json)
    real_options = sam_free_options(options)
    backbone = "U-Net " + "-".join(str(width) for width in widths)
    real_task = TaskSpec(in_channels, num_classes, (TRACE_PATCH, TRACE_PATCH), 1, widths, real_options)
    tiny_task = dataclasses.replace(real_task, options=sam_free_options(options, "tiny")
                                    if method_cls.family == "sam" else real_options)
    real = on_meta(lambda: _build(method_cls, params, real_task))
    tiny_meta = on_meta(lambda: _build(method_cls, params, tiny_task))
    memory = model_memory(real)
    real_sams, tiny_sams = _adapted_sams(real), _adapted_sams(tiny_meta)
    # Replayed at the real size: the SAMs' encoders and decoders, and modules sized by the backbone.
    sized = backbone_sized_modules(tiny_meta, real) if real_sams else []
    tiny_modules, real_modules = dict(tiny_meta.named_modules()), dict(real.named_modules())
    tiny_targets = {**tiny_sams, **{name: Sized(tiny_modules[name], embedding_size(tiny_sams)) for name in sized}}
    real_targets = {**real_sams, **{name: Sized(real_modules[name], embedding_size(real_sams)) for name in sized}}
    if method_cls.family == "sam":
        sizes = sorted({sam.image_size for sam in real_sams.values()})
        backbone = f"{real_options.get('sam_model') or _default_sam_model()} " + "/".join(f"{size}px" for size in sizes)

    rng_state, threads = (torch.get_rng_state(), np.random.get_state()), torch.get_num_threads()
    # Operations on 2-image, 32 px batches gain nothing from threads, and on a loaded machine every
    # parallel region waits for its slowest thread: one thread makes the trace several times faster.
    torch.set_num_threads(1)
    try:
        set_seed(0)
        with quiet():
            traced = _build(method_cls, params, tiny_task)
        parameters = list(traced.parameters())
        with quiet():
            if method_cls.trains:
                batches = TRACE_BATCHES if method_cls.unlabeled_views else TRACE_BATCHES[:2]
                steps, first_seen, kept_per_unlabeled = [], [], []
                for number, (labeled, unlabeled) in enumerate(batches):
                    batch = fake_batch(method_cls, in_channels, num_classes, labeled, unlabeled)
                    if batch.unlabeled_index is not None:
                        batch.unlabeled_index = batch.unlabeled_index + SLICE_INDEX_STRIDE * number
                    first, first_calls, kept = _trace_training(traced, batch, parameters, sized)
                    last, calls = first, first_calls
                    kept_per_unlabeled.append(kept / max(1, unlabeled))
                    if any(isinstance(call, EncoderCall) for call in first_calls):
                        # The same slices again: what a per-slice cache saves from the second sight on.
                        last, calls, _ = _trace_training(traced, batch, parameters, sized)
                    steps.append((_split(last, calls, tiny_targets, real_targets), calls + first_calls))
                    first_seen.append(_split(first, first_calls, tiny_targets, real_targets))
                (base_labeled, base_unlabeled), base = TRACE_BATCHES[0], steps[0][0]
                step_size = TRACE_BATCHES[1][0] - base_labeled
                per_labeled = _difference(steps[1][0], base).times(1 / step_size)
                per_unlabeled = (_difference(steps[2][0], steps[1][0]).times(1 / step_size) if len(steps) > 2
                                 else TracedCost(Cost(), Cost()))
                fixed = _difference(_difference(base, per_labeled.times(base_labeled)),
                                    per_unlabeled.times(base_unlabeled if len(steps) > 2 else 0))
                transient = max(_per_image_transient(calls, real_targets, sum(batch_size))
                                for (_, calls), batch_size in zip(steps, batches))
                train_profile = (steps[-1][0], sum(batches[len(steps) - 1]))
                train_live = max(0.0, last.transient_bytes - last.saved_bytes) / train_profile[1]
                first_sight = _difference(first_seen[0], steps[0][0]).times(1 / max(1, base_unlabeled))
                kept_bytes = kept_per_unlabeled[0] * _embedding_bytes(real_sams)
            else:
                fixed = per_labeled = per_unlabeled = first_sight = TracedCost(Cost(), Cost())
                transient, train_profile, train_live, kept_bytes = 0.0, None, 0.0, 0.0
            one, one_calls = _trace_prediction(traced, method_cls, in_channels, num_classes, 1, parameters, sized)
            two, two_calls = _trace_prediction(traced, method_cls, in_channels, num_classes, 2, parameters, sized)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng_state[0])
        np.random.set_state(rng_state[1])
    predict_one = _split(one, one_calls, tiny_targets, real_targets)
    predict_two = _split(two, two_calls, tiny_targets, real_targets)
    predict_per_image = _difference(predict_two, predict_one)
    predict_transient = max(_per_image_transient(one_calls, real_targets, 1),
                            _per_image_transient(two_calls, real_targets, 2))
    return MethodCosts(
        method, backbone, fixed, per_labeled, per_unlabeled,
        _difference(predict_one, predict_per_image), predict_per_image, transient, predict_transient,
        max(0.0, two.transient_bytes - _tiny_transient(two_calls, tiny_targets)) / 2, train_live, memory,
        method_cls.trains, first_sight, kept_bytes, train_profile, (predict_two, 2),
    )


def _embedding_bytes(sams: dict) -> float:
    """Bytes of one image's embedding from the largest of ``sams`` (float32, ``D x h x w``)."""
    return max((4.0 * sam.prompt_encoder.embed_dim * math.prod(sam.prompt_encoder.image_embedding_size)
                for sam in sams.values()), default=0.0)


def _tiny_transient(calls: list, tiny_sams: dict) -> float:
    return max((replay(tiny_sams[call.sam], call).transient_bytes for call in calls), default=0.0)


def _difference(a: TracedCost, b: TracedCost) -> TracedCost:
    return TracedCost((a.residual - b.residual).clipped(), (a.sam - b.sam).clipped())


def _default_sam_model() -> str:
    from bench.sam.model import DEFAULT_SAM_MODEL

    return DEFAULT_SAM_MODEL


def method_costs(spec: Any, adapter: Any, budget: Budget) -> MethodCosts:
    """The cost model of ``spec``'s method with ``spec``'s parameters and options (memoised per process:
    a sweep's runs of one method share it)."""
    options = {k: v for k, v in spec.options.items()
               if k not in ("data_root", "dataset_options", "tuning", "labeled_domain")}
    return _method_costs(spec.method, json.dumps(spec.params, sort_keys=True, default=str),
                         json.dumps(options, sort_keys=True, default=str), adapter.in_channels,
                         adapter.num_classes, tuple(budget.network_widths))


# -- this machine ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Throughput:
    """Sustained rates of this machine (best of several repeats of each micro-benchmark).  Bytes are
    bytes *written* by operations (each also reads its inputs), small tensors and large ones
    (:data:`LARGE_TENSOR_BYTES`) apart."""

    machine: str
    conv_flops_per_second: float
    matmul_flops_per_second: float
    bytes_per_second: float
    large_bytes_per_second: float
    seconds_per_operation: float
    measured_in_seconds: float

    def seconds(self, cost: Cost) -> float:
        large = cost.bytes_written * large_share(cost.histogram)
        return (cost.conv_flops / self.conv_flops_per_second + cost.matmul_flops / self.matmul_flops_per_second
                + (cost.bytes_written - large) / self.bytes_per_second + large / self.large_bytes_per_second
                + cost.operations * self.seconds_per_operation)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return f"{cpu_model()} | {gpu} | {torch.get_num_threads()} torch threads | torch {torch.__version__}"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(workloads: Sequence[Callable[[], None]], device: torch.device, rounds: int = 24,
                  budget_seconds: float = 3.0) -> list[float]:
    """The fastest timing of each workload over up to ``rounds`` rounds that take turns (each one's
    samples spread over the whole measurement, so a burst of load elsewhere spoils no workload's every
    sample), after two warm-ups (oneDNN builds its kernels on first use); rounds stop after
    ``budget_seconds`` (at least 4 rounds).  The fastest repeat is the quiet machine's speed."""
    for work in workloads:
        work()
        work()
    _synchronize(device)
    best = [math.inf] * len(workloads)
    started = time.perf_counter()
    for done in range(rounds):
        for index, work in enumerate(workloads):
            begun = time.perf_counter()
            work()
            _synchronize(device)
            best[index] = min(best[index], time.perf_counter() - begun)
        if done >= 3 and time.perf_counter() - started > budget_seconds:
            break
    return best


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


CONV_LADDER = ((16, 128), (32, 64), (64, 32), (128, 16), (256, 8))
"""(channels, side) of the SSL4MIS U-Net's levels at a 128 px patch: each level does about the same
convolution work, so the ladder's rate is the network's (one image per level: ~2 ms each on a CPU)."""


def measure_throughput(device: torch.device) -> Throughput:
    """A second or two on a 2-core CPU: the rates :meth:`Throughput.seconds` needs.

    Convolutions: a ladder of 3 x 3 convolutions at the U-Net's levels, forward and backward; products:
    a ViT-B linear layer and an attention product; memory-bound work: what networks do besides those
    (scale and shift, GELU, softmax, layer norm, forward and backward) on 4 MB tensors, and the extra
    cost per byte of a fresh tensor above :data:`LARGE_TENSOR_BYTES` (an addition writing 40 MB
    against one writing 4 MB); the dispatcher, autograd and ``nn.Module`` overhead of an operation:
    a stack of tiny layers."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    scale = 4 if device.type == "cuda" else 1
    convs = [(nn.Conv2d(width, width, 3, padding=1).to(device),
              torch.randn(scale, width, side, side, generator=generator).to(device).requires_grad_())
             for width, side in CONV_LADDER]
    linear = nn.Linear(768, 768).to(device)
    tokens = torch.randn(256 * scale, 768, generator=generator).to(device).requires_grad_()
    queries = torch.randn(3 * scale, 196, 64, generator=generator).to(device).requires_grad_()
    mix = torch.randn(2**20, generator=generator).to(device).requires_grad_()
    small = [torch.randn(2**20, generator=generator).to(device) for _ in range(2)]
    large = [torch.randn(10 * 2**20, generator=generator).to(device) for _ in range(2)]
    tiny_layers = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(20)]).to(device)
    tiny_input = torch.randn(2, 8, generator=generator).to(device)

    def backward_of(module: Callable, inputs: torch.Tensor) -> Callable[[], None]:
        return lambda: module(inputs).sum().backward()

    def memory_bound() -> None:
        hidden = F.gelu(mix.view(-1, 256) * 1.1 + 0.1)
        F.layer_norm(torch.softmax(hidden, dim=-1), (256,)).sum().backward()
        mix.grad = None

    conv_work = [backward_of(conv, images) for conv, images in convs]
    matmul_work = [backward_of(linear, tokens), backward_of(lambda q: q @ q.transpose(1, 2), queries)]
    # Each workload takes a millisecond or a few: short enough that some of its repeats run
    # uninterrupted on a machine other jobs load, so the fastest repeat is the quiet machine's speed.
    workloads = conv_work + matmul_work + [memory_bound, lambda: torch.add(*small), lambda: torch.add(*large),
                                           backward_of(tiny_layers, tiny_input)]
    costs = []
    for work in workloads:
        with counting() as cost:
            work()
        costs.append(cost)
    conv_count, matmul_count = len(conv_work), len(matmul_work)
    mix_at = conv_count + matmul_count
    threads = torch.get_num_threads()
    if device.type == "cuda" or threads == 1:
        seconds = _best_seconds(workloads, device)
    else:
        # On a loaded CPU a parallel region waits for its slowest thread, so few repeats of a threaded
        # workload run undisturbed: every workload is timed on one thread, the threaded speed-up of the
        # convolutions, products and memory-bound work apart (the overhead of an operation has none).
        with torch_threads(1):
            seconds = _best_seconds(workloads, device)
        # One short workload per kind (a ~1 ms middle rung, the linear layer, the mix) times the speed-up.
        samples = (len(CONV_LADDER) // 2, conv_count, mix_at)
        threaded = _best_seconds([workloads[index] for index in samples], device, rounds=40, budget_seconds=2.0)
        groups = (range(conv_count), range(conv_count, mix_at), range(mix_at, mix_at + 3))
        for group, sample, threaded_seconds in zip(groups, samples, threaded):
            speedup = min(float(threads), max(1.0, seconds[sample] / threaded_seconds))
            for index in group:
                seconds[index] /= speedup
    mix_cost, small_cost, large_cost, tiny_cost = costs[mix_at:]
    mix_seconds, small_seconds, large_seconds, tiny_seconds = seconds[mix_at:]
    per_operation = tiny_seconds / tiny_cost.operations
    per_byte = max(mix_seconds - mix_cost.operations * per_operation, mix_seconds / 4) / mix_cost.bytes_written
    fresh_large_penalty = max(1.0, (large_seconds / large_cost.bytes_written) / (small_seconds / small_cost.bytes_written))
    conv_flops = sum(cost.conv_flops for cost in costs[:conv_count])
    matmul_flops = sum(cost.matmul_flops for cost in costs[conv_count:mix_at])
    return Throughput(
        machine=machine_key(device),
        conv_flops_per_second=conv_flops / sum(seconds[:conv_count]),
        matmul_flops_per_second=matmul_flops / sum(seconds[conv_count:mix_at]),
        bytes_per_second=1 / per_byte,
        large_bytes_per_second=1 / (per_byte * fresh_large_penalty),
        seconds_per_operation=per_operation,
        measured_in_seconds=time.perf_counter() - started,
    )


def throughput_cache_path() -> Path:
    from bench.data.cache import cache_root

    return cache_root() / THROUGHPUT_FILE


@lru_cache(maxsize=4)
def machine_throughput(device: torch.device = torch.device("cpu")) -> Throughput:
    """This machine's rates, measured once and cached (``$BENCH_CACHE_DIR/throughput.json``)."""
    from bench.record import write_json_atomic

    key = machine_key(device)
    path = throughput_cache_path()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict) or cached.get("format") != THROUGHPUT_FORMAT:
        cached = {"format": THROUGHPUT_FORMAT, "machines": {}}
    entry = cached["machines"].get(key)
    if isinstance(entry, dict):
        try:
            return Throughput(**entry)
        except TypeError:
            pass
    throughput = measure_throughput(device)
    cached["machines"][key] = dataclasses.asdict(throughput)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, cached)
    except OSError:
        pass  # an unwritable cache costs a second per process, nothing else
    return throughput


@lru_cache(maxsize=32)
def data_seconds_per_image(patch: int, views: tuple[str, ...], with_labels: bool) -> float:
    """Seconds the streams spend on one sample with ``views`` at ``patch`` (augmentations included)."""
    from bench.data.streams import SliceViews

    slices = fake_slices(4, patch, 4, seed=1)
    dataset = SliceViews(slices, (patch, patch), views, with_labels, 0)
    dataset[0]
    samples = 6
    started = time.perf_counter()
    for index in range(1, samples + 1):
        dataset[index]
    return (time.perf_counter() - started) / samples
