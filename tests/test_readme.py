"""The README's promises: its method example works as written, its commands use real options."""
from __future__ import annotations

import json
import re
from pathlib import Path

from bench.cli import build_parser, main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_method_example_runs_as_written(tmp_path, monkeypatch):
    source = re.search(r"```python\n# my_methods/entropy_min.py\n(.*?)```", README, re.S).group(1)
    package = tmp_path / "my_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "entropy_min.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "runs"
    assert main(["--plugin", "my_methods.entropy_min", "run", "--methods", "entropy-min", "--labels", "2",
                 "--budget", "smoke", "--no-progress", "--no-estimate", "--out", str(out)]) == 0
    summary = json.loads(next(out.rglob("summary.json")).read_text())
    assert summary["method"] == "entropy-min" and summary["params"] == {"entropy_weight": 0.1}


def test_quick_start_commands_parse():
    for marker in ("main-command", "test-command"):
        block = re.search(rf"<!-- {marker} -->\n```bash\n(.*?)\n```", README, re.S).group(1)
        assert "pip install -e" in block
    main_command = re.search(r"<!-- main-command -->\n```bash\n(.*?)\n```", README, re.S).group(1)
    bench_args = main_command.split("&& bench ", 1)[1].split()
    build_parser().parse_args(bench_args)


def test_quick_start_main_command_scores_every_registered_method(tmp_path, capsys):
    """The README's main command as written, shrunk only by later options (smoke budget, one seed): every
    registered method must come back with a scored row in the printed table."""
    from bench.registry import METHODS

    main_command = re.search(r"<!-- main-command -->\n```bash\n(.*?)\n```", README, re.S).group(1)
    bench_args = main_command.split("&& bench ", 1)[1].split()
    assert main(bench_args + ["--budget", "smoke", "--seeds", "1", "--no-progress", "--no-estimate",
                              "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out.split("Dice on synthetic test split", 1)[1].split("\nRuns: ", 1)[0]
    rows = re.findall(r"^ +\d+\. (\S+) .*\d +n=1$", table, re.M)  # "  3. samed [random-init-sam]   5.34  n=1"
    assert sorted(rows) == sorted(METHODS.names())
    assert len(list(tmp_path.rglob("per_case.csv"))) == len(METHODS.names())
