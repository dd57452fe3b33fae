"""End-to-end behaviour of the harness: plug-ins, sweeps, skipping, determinism, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.data.label_budget import LabelBudget, select_labeled_cases
from bench.method import Method
from bench.registry import METHODS
from bench.training import assemble_batch

PLUGIN_SOURCE = textwrap.dedent(
    '''
    from dataclasses import dataclass
    from bench import Method, StepOutput, ce_dice_loss, register_method, unet_for

    @dataclass
    class ThrowawayParams:
        """Only here to show a plug-in's defaults in `bench list methods`."""
        loss_scale: float = 1.0

    @register_method()
    class Throwaway(Method):
        name = "throwaway"
        paper = "A plug-in written by a test"
        Params = ThrowawayParams

        def __init__(self, params, task):
            super().__init__(params, task)
            self.network = unet_for(task)

        def training_step(self, batch, progress):
            loss = self.params.loss_scale * ce_dice_loss(self.network(batch.labeled_images), batch.labels)
            return StepOutput(loss)
    '''
)


def write_plugin_distribution(root: Path) -> None:
    """A throw-away installed distribution: a module plus a ``.dist-info`` declaring the entry point."""
    (root / "throwaway_plugin.py").write_text(PLUGIN_SOURCE)
    info = root / "throwaway_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench.methods]\nthrowaway = throwaway_plugin:Throwaway\n")


def run_cli(args: list[str], extra_path: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{extra_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_entry_point_plugin_is_listed_and_runs(tmp_path):
    write_plugin_distribution(tmp_path)
    listing = run_cli(["list", "methods"], tmp_path, tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "throwaway" in listing.stdout and "loss_scale=1.0" in listing.stdout
    result = run_cli(["run", "--methods", "throwaway", "--dataset", "synthetic", "--seeds", "1", "--labels", "1",
                      "--budget", "smoke", "--no-progress", "--out", str(tmp_path / "runs")], tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "runs/synthetic/smoke/throwaway/1/seed0/summary.json").read_text())
    assert summary["method"] == "throwaway" and 0.0 <= summary["metrics"]["dice"] <= 1.0


def test_plugin_flag_imports_a_module(tmp_path, capsys, monkeypatch):
    (tmp_path / "flag_plugin.py").write_text(PLUGIN_SOURCE.replace('"throwaway"', '"flagged"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--plugin", "flag_plugin", "list", "methods"]) == 0
    assert "flagged" in capsys.readouterr().out


def read_summaries(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob("summary.json"))}


def test_second_sweep_skips_everything_and_prints_the_same_table(tmp_path, capsys, smoke_args):
    args = ["run", "--methods", "supervised,fully-supervised", "--labels", "1,2", "--seeds", "2", "--out", str(tmp_path), *smoke_args]
    assert main(args) == 0
    first = capsys.readouterr()
    summaries = read_summaries(tmp_path)
    assert len(summaries) == 6  # supervised 2 labels x 2 seeds + fully-supervised once per seed
    modified = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert main(args) == 0
    second = capsys.readouterr()
    assert "6 already complete, 0 failed before, 0 to run" in second.err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == modified
    table = lambda text: text[text.index("Dice on"):]
    assert table(first.out) == table(second.out)


def test_same_seed_twice_gives_identical_metrics(tmp_path, smoke_args):
    for name in ("a", "b"):
        assert main(["run", "--methods", "supervised", "--labels", "2", "--seeds", "1", "--iters", "6", "--out", str(tmp_path / name), *smoke_args]) == 0
    first, second = (read_summaries(tmp_path / name) for name in ("a", "b"))
    assert [s["metrics"] for s in first.values()] == [s["metrics"] for s in second.values()]
    per_case = [(tmp_path / name / "synthetic/smoke/supervised/2/seed0/per_case.csv").read_text() for name in ("a", "b")]
    assert per_case[0] == per_case[1]


def test_every_method_sees_the_same_labeled_cases(tmp_path, smoke_args):
    assert main(["run", "--methods", "supervised,throwaway_missing", "--out", str(tmp_path), *smoke_args]) == 2
    case_ids = [f"phantom_{i:03d}" for i in range(40)]
    budget = LabelBudget.parse("4")
    chosen = select_labeled_cases(case_ids, budget, seed=1, selection="random")
    assert chosen == select_labeled_cases(case_ids, budget, seed=1, selection="random")
    assert chosen != select_labeled_cases(case_ids, budget, seed=2, selection="random")
    assert select_labeled_cases(case_ids, budget, seed=5, selection="first") == case_ids[:4]


def test_labeled_ids_are_written_and_shared_across_methods(tmp_path, smoke_args):
    assert main(["run", "--methods", "supervised", "--labels", "3", "--seeds", "1", "--out", str(tmp_path / "x"), *smoke_args]) == 0
    written = json.loads((tmp_path / "x/synthetic/smoke/supervised/3/seed0/labeled_cases.json").read_text())
    summary = json.loads((tmp_path / "x/synthetic/smoke/supervised/3/seed0/summary.json").read_text())
    assert len(written["case_ids"]) == 3 and summary["labeled_case_ids"] == written["case_ids"]
    for key in ("versions", "git_commit", "wall_seconds", "peak_memory_mb", "device", "empty_policy", "budget"):
        assert key in summary
    assert summary["hardware"].endswith("torch threads x 1 process(es)") and summary["unlabeled_views"] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "supervisd"], "Did you mean 'supervised'"),
        (["--dataset", "acdcc"], "unknown dataset 'acdcc'"),
        (["--labels", "0"], "must be positive"),
        (["--labels", "41"], "only 40 training cases"),
        (["--labels", "abc"], "expected a count"),
        (["--seeds", "0"], "need at least one seed"),
    ],
)
def test_bad_input_fails_clearly_and_leaves_results_intact(tmp_path, capsys, smoke_args, args, message):
    out = tmp_path / "runs"
    assert main(["run", "--methods", "supervised", "--labels", "1", "--seeds", "1", "--out", str(out), *smoke_args]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    base = {"--methods": "supervised", "--labels": "1", "--seeds": "1", "--dataset": "synthetic"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    flat = [item for pair in base.items() for item in pair]
    assert main(["run", *flat, "--out", str(out), *smoke_args]) == 2
    assert message in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_unwritable_output_fails_before_training(tmp_path, capsys, smoke_args):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", "--methods", "supervised", "--labels", "1", "--out", str(blocker / "runs"), *smoke_args]) == 2
    assert "not writable" in capsys.readouterr().err


def test_unlabeled_stream_never_carries_labels():
    import torch

    class Needy(Method):
        unlabeled_views = ("weak", "strong")

    labeled = {"weak": torch.zeros(2, 1, 8, 8), "label": torch.zeros(2, 8, 8, dtype=torch.long)}
    unlabeled = {"weak": torch.ones(2, 1, 8, 8), "strong": torch.ones(2, 1, 8, 8), "label": torch.ones(2, 8, 8)}
    batch = assemble_batch(labeled, unlabeled, Needy.__new__(Needy))
    assert set(batch.unlabeled) == {"weak", "strong"}


def test_label_budget_parsing():
    assert LabelBudget.parse("5%").resolve(40) == 2
    assert LabelBudget.parse("1/8").resolve(40) == 5
    assert LabelBudget.parse("1/8").slug == "1of8"
    with pytest.raises(ValueError):
        LabelBudget.parse("150%")


def test_builtin_methods_register_through_entry_points():
    names = METHODS.names()
    assert {"supervised", "fully-supervised"} <= set(names)


def test_labeled_domain_draws_labeled_cases_from_that_domain_only(tmp_path, capsys, smoke_args):
    from bench.data.synthetic import SyntheticDataset

    out = tmp_path / "runs"
    # quick, shortened: it scores the whole test split (smoke scores 2 cases, too few for every domain)
    assert main(["run", "--methods", "supervised", "--labels", "3", "--labeled-domain", "vendor_b", "--out", str(out),
                 *smoke_args, "--budget", "quick", "--iters", "2"]) == 0
    summary = json.loads((out / "synthetic/quick/supervised/3@vendor_b/seed0/summary.json").read_text())
    domains = SyntheticDataset().case_domains()
    assert len(summary["labeled_case_ids"]) == 3
    assert {domains[case] for case in summary["labeled_case_ids"]} == {"vendor_b"}
    assert set(summary["metrics_per_domain"]) == {"vendor_a", "vendor_b", "vendor_c"}
    assert main(["run", "--methods", "supervised", "--labels", "3", "--labeled-domain", "vendor_z", "--out", str(out),
                 *smoke_args]) == 2
    assert "vendor_z" in capsys.readouterr().err


def test_supervised_lower_bound_fills_the_whole_batch_with_labeled_images(tmp_path, smoke_args):
    """SSL4MIS's supervised script uses batch 24 where its SSL scripts use 12 labeled + 12 unlabeled; the
    lower bound must see as many images per step as the methods it bounds, the SSL methods keep the split."""
    assert main(["run", "--methods", "supervised,mean-teacher", "--labels", "3", "--seeds", "1",
                 "--out", str(tmp_path), *smoke_args]) == 0
    budgets = {method: json.loads((tmp_path / f"synthetic/smoke/{method}/3/seed0/summary.json").read_text())["budget"]
               for method in ("supervised", "mean-teacher")}
    assert budgets["mean-teacher"]["labeled_batch"] == 2 and budgets["mean-teacher"]["unlabeled_batch"] == 2
    assert budgets["supervised"]["labeled_batch"] == 4


def test_a_copied_source_without_git_records_the_declared_commit(tmp_path, monkeypatch):
    """A tree sent to a remote machine has no .git: git cannot name its commit, the sender can."""
    import importlib.util
    import shutil

    import bench.record

    copy = tmp_path / "copy" / "bench"
    copy.mkdir(parents=True)
    shutil.copy(bench.record.__file__, copy / "record.py")
    spec = importlib.util.spec_from_file_location("copied_record", copy / "record.py")
    copied = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copied)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repository above the copy
    monkeypatch.delenv(copied.GIT_COMMIT_VARIABLE, raising=False)
    assert copied.git_commit() is None
    monkeypatch.setenv(copied.GIT_COMMIT_VARIABLE, "af6ec90")
    assert copied.git_commit() == "af6ec90 (declared)"
    assert bench.record.git_commit() != "af6ec90 (declared)"  # a real checkout asks git, not the variable


def test_bench_run_does_not_need_optuna(tmp_path):
    """Only ``bench tune`` needs Optuna: a machine without it (a bare GPU image) can still run sweeps."""
    script = textwrap.dedent(f"""
        import sys
        from bench.cli import main
        code = main(["run", "--methods", "supervised", "--labels", "2", "--out", {str(tmp_path)!r},
                     "--budget", "smoke", "--no-progress", "--no-estimate", "--set", "supervised.ce_weight=0.4"])
        assert code == 0, code
        assert "optuna" not in sys.modules, "bench run imported optuna"
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_run_records_the_commit_it_started_from(tmp_path, monkeypatch, smoke_args):
    """A run can train for hours while the checkout moves on; its summary names the source it loaded."""
    import bench.execute

    checkout = {"commit": "commit-at-start"}
    monkeypatch.setattr(bench.execute, "git_commit", lambda: checkout["commit"])
    train_method = bench.execute.train_method

    def training_while_the_checkout_moves_on(*args, **kwargs):
        result = train_method(*args, **kwargs)
        checkout["commit"] = "a-later-commit"
        return result

    monkeypatch.setattr(bench.execute, "train_method", training_while_the_checkout_moves_on)
    assert main(["run", "--methods", "supervised", "--labels", "2", "--out", str(tmp_path), *smoke_args]) == 0
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["git_commit"] == "commit-at-start"
