"""``bench run --config``: a sweep file sets the defaults, the command line narrows or overrides them."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from bench.cli import main


def write_sweep(folder: Path, **content) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def run_configs(out: Path) -> dict[tuple[str, int], dict]:
    configs = {}
    for path in out.rglob("config.json"):
        config = json.loads(path.read_text())["config"]
        configs[(config["method"], config["seed"])] = config
    return configs


def test_the_sweep_file_sets_defaults_and_the_command_line_wins(tmp_path, smoke_args):
    sweep = write_sweep(tmp_path, methods=["supervised", "mean-teacher"], dataset="synthetic", labels=[1], seeds=2,
                        budget="smoke", params={"mean-teacher": {"ema_decay": 0.9}})
    out = tmp_path / "runs"
    assert main(["run", "--config", str(sweep), "--seeds", "1", "--iters", "2", "--out", str(out), *smoke_args]) == 0
    configs = run_configs(out)
    assert set(configs) == {("supervised", 0), ("mean-teacher", 0)}  # --seeds 1 beat the file's 2
    assert configs[("mean-teacher", 0)]["params"] == {"ema_decay": 0.9}
    assert configs[("supervised", 0)]["params"] == {}


def test_one_row_of_a_sweep_runs_although_the_file_tunes_other_methods(tmp_path, smoke_args):
    sweep = write_sweep(tmp_path, methods="all", dataset="synthetic", labels=[1], budget="smoke",
                        params={"mean-teacher": {"ema_decay": 0.9}, "bcp": {"unlabeled_weight": 0.25}})
    out = tmp_path / "runs"
    assert main(["run", "--config", str(sweep), "--methods", "supervised", "--iters", "2", "--out", str(out),
                 *smoke_args]) == 0
    assert set(run_configs(out)) == {("supervised", 0)}


def test_a_typo_in_the_sweep_file_fails_even_for_a_method_not_run(tmp_path, capsys, smoke_args):
    sweep = write_sweep(tmp_path, methods="all", dataset="synthetic", params={"bcp": {"unlabelled_weight": 0.25}})
    out = tmp_path / "runs"
    assert main(["run", "--config", str(sweep), "--methods", "supervised", "--out", str(out), *smoke_args]) == 2
    assert "method 'bcp': unknown hyper-parameter(s) ['unlabelled_weight']" in capsys.readouterr().err
    unknown_key = write_sweep(tmp_path, methods="all", seed=3)
    assert main(["run", "--config", str(unknown_key), "--out", str(out), *smoke_args]) == 2
    assert "unknown key(s) ['seed']" in capsys.readouterr().err
    assert not out.exists()


def test_set_for_a_method_that_is_not_run_is_an_error(tmp_path, capsys, smoke_args):
    out = tmp_path / "runs"
    assert main(["run", "--methods", "supervised", "--set", "bcp.unlabeled_weight=0.25", "--out", str(out),
                 *smoke_args]) == 2
    assert "hyper-parameters given for 'bcp', which is not in --methods supervised" in capsys.readouterr().err
    assert not out.exists()


def test_a_unet_run_is_the_same_experiment_with_or_without_a_sam_method_beside_it(tmp_path, capsys, smoke_args):
    """SAM options belong to SAM runs: a classic row run on its own is found complete by the whole sweep."""
    out = tmp_path / "runs"
    common = ["--labels", "1", "--iters", "2", "--out", str(out), *smoke_args]
    assert main(["run", "--methods", "supervised", *common]) == 0
    capsys.readouterr()
    assert main(["run", "--methods", "supervised,sam-box", "--sam-model", "tiny", "--sam-random-init", *common]) == 0
    assert "1 already complete, 0 failed before, 1 to run" in capsys.readouterr().err
    configs = run_configs(out)
    assert configs[("supervised", 0)]["options"] == {}
    assert configs[("sam-box", 0)]["options"] == {"sam_model": "tiny", "sam_random_init": True}
