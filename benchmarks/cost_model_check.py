"""The cost model's estimates (``bench.cost_model``, ``bench.memory``) against measured steps and memory.

For each configuration a fresh process builds the run as ``bench run`` does (data, labeled subset,
method, streams), times ``--steps`` training steps after one warm-up (data, forward, backward,
optimizer, ``on_step_end``; the fastest and the median step are kept), then validates on
``--val-cases`` validation cases, and reports its peak resident set (``ru_maxrss``, what a run's
summary records as ``peak_memory_mb``).  The estimate is the plan ``bench run --dry-run`` prints for
the same run.  The ratio est/measured uses the fastest step, as the throughput the model divides by is
the fastest of its repeats: both are the machine's speed when nothing else runs on it.

    BENCH_DATA_ROOT=../shared/data python benchmarks/cost_model_check.py                 # the default set
    python benchmarks/cost_model_check.py --runs supervised,unimatch --dataset synthetic --budget quick
    python benchmarks/cost_model_check.py --runs "cpc-sam@2+2" --sam-model lite-medsam   # real LiteMedSAM

A run is ``METHOD`` or ``METHOD@L+U`` (a ``--batch``) or ``METHOD@L+U@SAM_MODEL``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

DEFAULT_RUNS = "supervised,mean-teacher,unimatch,samed@2+2,cpc-sam@2+2,cpc-sam@8+8@tiny"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated METHOD[@L+U[@SAM_MODEL]] (default: {DEFAULT_RUNS})")
    parser.add_argument("--dataset", default="acdc")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--labels", default="3")
    parser.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up (default: 4)")
    parser.add_argument("--val-cases", type=int, default=2, help="validation cases scored after training (default: 2)")
    parser.add_argument("--sam-model", default="lite-medsam", help="SAM backbone when a run names none")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the measured runs (default: torch's); with 1 the CPU time of a step "
                             "is its quiet-machine duration whatever else runs, a loaded machine's fair comparison")
    parser.add_argument("--records", type=Path, default=None, metavar="RUNS",
                        help="instead: compare the plan of every finished run under RUNS (e.g. "
                             "leaderboards/acdc-quick/runs) with its summary's peak memory and training time")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def spec_for(run: str, args: argparse.Namespace):
    from bench.registry import METHODS
    from bench.runs import RunSpec

    method, _, rest = run.partition("@")
    batch, _, sam_model = rest.partition("@")
    method_cls = METHODS.get(method)
    data_root = os.environ.get("BENCH_DATA_ROOT")
    options = {"data_root": f"{data_root}/{args.dataset}" if data_root and args.dataset != "synthetic" else None,
               "dataset_options": {}, "labeled_domain": None}
    if method_cls.family == "sam":
        model = sam_model or args.sam_model
        options.update(sam_model=model, sam_random_init=model != "lite-medsam", sam_checkpoint=None)
    labels = "all" if method_cls.trains_on_all_labels else args.labels
    return RunSpec(dataset=args.dataset, method=method, labels=labels, seed=0, budget=args.budget,
                   batch=batch or None, options=options)


def measure(run: str, args: argparse.Namespace) -> dict:
    """In this (fresh) process: step times and peak resident memory of ``run``."""
    from accelerate.utils import set_seed

    from bench.evaluation import evaluation_subset, validation_dice
    from bench.execute import (
        budget_for,
        build_method,
        build_streams,
        dataset_for,
        labeled_case_ids,
        make_accelerator,
        test_predictor,
        validate_spec,
    )
    from bench.method import Progress
    from bench.registry import METHODS
    from bench.training import assemble_batch

    import torch

    from bench.plan import SweepPlan

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = spec_for(run, args)
    validate_spec(spec)
    plan = SweepPlan([spec])[spec]  # before the run allocates: the estimate counts this process as it is
    method_cls = METHODS.get(spec.method)
    adapter = dataset_for(spec)
    budget = budget_for(spec, adapter, method_cls)
    set_seed(0)
    method = build_method(spec, adapter, method_cls, budget)
    labeled, unlabeled = build_streams(adapter, labeled_case_ids(spec, adapter, method_cls), method_cls, budget, 0)
    accelerator = make_accelerator("no")
    specs = method.optimizers()
    model = accelerator.prepare(method)
    labeled_batches = labeled.start(0)
    unlabeled_batches = unlabeled.start(0) if unlabeled is not None else None
    durations, cpu_durations = [], []
    for step in range(args.steps + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        batch = assemble_batch(next(labeled_batches), next(unlabeled_batches) if unlabeled_batches is not None else None,
                               method)
        progress = Progress(1, 1)  # the steady state the model costs (past every phase switch)
        output = model(batch.to(accelerator.device), progress)
        accelerator.backward(output.loss)
        for optimizer_spec in specs:
            optimizer_spec.optimizer.step()
            optimizer_spec.optimizer.zero_grad(set_to_none=True)
        method.on_step_end(progress)
        if step:
            durations.append(time.perf_counter() - started)
            cpu_durations.append((time.process_time() - cpu_started) / torch.get_num_threads())
    method.eval()
    cases = list(evaluation_subset(adapter.eval_cases("val"), args.val_cases, None))
    patch = (budget.patch_size, budget.patch_size)
    validation_dice(test_predictor(method), cases, adapter.num_classes, patch, budget.eval_batch, accelerator.device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"fastest": min(durations), "median": statistics.median(durations), "cpu": min(cpu_durations),
            "peak_bytes": peak,
            "estimate": plan.step_seconds, "estimate_peak_bytes": plan.memory.peak,
            "batch": f"{plan.labeled_batch}+{plan.unlabeled_batch}", "backbone": plan.backbone}


def against_records(args: argparse.Namespace) -> int:
    """Plans of finished runs (their recorded config, this machine's rates at the run's thread count)
    against what their summaries recorded: peak resident memory, and training time (the loop's, with
    its validations) where the run's CPU is this machine's."""
    import torch

    from bench.cost_model import cpu_model
    from bench.execute import validate_spec
    from bench.plan import SweepPlan
    from bench.runs import RunSpec

    data_root = os.environ.get("BENCH_DATA_ROOT")
    groups: dict[tuple, list[dict]] = {}
    for path in sorted(args.records.rglob("summary.json")):
        summary = json.loads(path.read_text())
        threads = int(summary["hardware"].split(" torch threads")[0].rsplit(" ", 1)[-1])
        groups.setdefault((summary["method"], summary["labels"], threads), []).append(summary)
    print(f"{'method':<17} {'labels':>6} {'thr':>3} {'est GiB':>7} {'rec GiB':>7} {'ratio':>5} {'est train s':>11} "
          f"{'rec train s (this CPU)':>24} {'ratio':>5}")
    for (method, labels, threads), summaries in groups.items():
        torch.set_num_threads(threads)
        config = summaries[0]["config"]
        options = {**config["options"], "dataset_options": {},
                   "data_root": f"{data_root}/{summaries[0]['dataset']}" if data_root else None}
        spec = RunSpec(dataset=summaries[0]["dataset"], method=method, labels=labels, seed=0, budget=config["budget"],
                       params=config["params"], options=options, iterations=config["iterations"], batch=config["batch"])
        validate_spec(spec)
        plan = SweepPlan([spec])[spec]
        peak = max(summary["peak_memory_mb"] for summary in summaries) * 2**20
        here = [summary["training"]["train_seconds"] for summary in summaries
                if summary["hardware"].startswith(cpu_model()) and summary["training"]["train_seconds"]]
        estimate = plan.train_seconds + plan.validation_seconds
        ratio = f"{estimate / statistics.median(here):>5.2f}" if here else f"{'-':>5}"
        print(f"{method:<17} {labels:>6} {threads:>3} {plan.memory.peak / 2**30:>7.2f} {peak / 2**30:>7.2f} "
              f"{plan.memory.peak / peak:>5.2f} {estimate:>11.0f} {str([round(s) for s in here]):>24} {ratio}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.records:
        return against_records(args)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return 0
    rows = []
    for run in [item.strip() for item in args.runs.split(",") if item.strip()]:
        child = subprocess.run([sys.executable, __file__, "--child", run, *sys.argv[1:]], capture_output=True, text=True)
        if child.returncode:
            print(f"{run}: measurement failed\n{child.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append((run, result))
        print(f"  {run}: {result}", file=sys.stderr, flush=True)
    print(f"\n{'run':<22} {'batch':>5} {'backbone':<34} {'est ms':>7} {'wall ms':>8} {'ratio':>5} {'cpu ms':>7} "
          f"{'ratio':>5} {'est GiB':>7} {'meas GiB':>8} {'ratio':>5}")
    for run, r in rows:
        print(f"{run:<22} {r['batch']:>5} {r['backbone']:<34} {r['estimate'] * 1000:>7.0f} {r['fastest'] * 1000:>8.0f} "
              f"{r['estimate'] / r['fastest']:>5.2f} {r['cpu'] * 1000:>7.0f} {r['estimate'] / r['cpu']:>5.2f} "
              f"{r['estimate_peak_bytes'] / 2**30:>7.2f} {r['peak_bytes'] / 2**30:>8.2f} "
              f"{r['estimate_peak_bytes'] / r['peak_bytes']:>5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
