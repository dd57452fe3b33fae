"""The README's promise: its main command, in the pinned environment (``constraints.txt``) on the hardware
the published runs name, gives the published 1-labeled-case numbers exactly.  A subset of the runs is
repeated as the main command runs it (same options, same torch thread count) and its per-case results are
compared byte for byte with the committed records.  Elsewhere (another CPU, thread count or package
version) the numbers may differ by about a seed's spread, which the README says; the test then skips,
naming what differs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.execute import hardware_description
from bench.leaderboard.environment import pinned_versions
from bench.record import package_versions

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "leaderboards" / "synthetic" / "runs"
REPEATED = ("supervised", "mean-teacher", "fixmatch", "cpc-sam")
"""One method of each kind of randomness (none beyond the data, teacher noise, strong views, a SAM)."""


def main_command_options() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"<!-- main-command -->\n```bash\n(.*?)\n```", readme, re.S).group(1)
    return command.split("&& bench ", 1)[1].split()


def published_summary(method: str) -> dict:
    (path,) = PUBLISHED.glob(f"synthetic/quick/{method}/1/seed0/summary.json")
    return json.loads(path.read_text())


def test_the_main_command_reproduces_the_published_runs(tmp_path):
    import torch

    threads = int(published_summary("supervised")["hardware"].split(" torch threads")[0].rsplit(" ", 1)[1])
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        here = hardware_description(torch.device("cpu"))
    finally:
        torch.set_num_threads(torch_threads)
    versions = package_versions()
    differences = [f"{name} {versions.get(name)} (pinned {version})" for name, version in pinned_versions().items()
                   if versions.get(name) != version]
    published = {published_summary(method)["hardware"] for method in REPEATED}
    if published != {here} or differences:
        pytest.skip(f"published on {sorted(published)}; here {here}{'; ' if differences else ''}{', '.join(differences)}")

    out = tmp_path / "runs"
    options = main_command_options()
    methods = options.index("--methods")
    options[methods + 1] = ",".join(REPEATED)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, "-m", "bench.cli", *options, "--seeds", "1", "--no-progress",
                             "--no-estimate", "--out", str(out)], env=environment, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for method in REPEATED:
        folder = Path("synthetic/quick") / method / "1" / "seed0"
        assert (out / folder / "per_case.csv").read_bytes() == (PUBLISHED / folder / "per_case.csv").read_bytes(), method
        assert json.loads((out / folder / "summary.json").read_text())["metrics"] == published_summary(method)["metrics"]
