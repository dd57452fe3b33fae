"""Shared test fixtures: real-data location and a fast, quiet smoke configuration."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def real_data_root(name: str) -> Path:
    """``$BENCH_DATA_ROOT/<name>``: skip when the variable is unset, fail when it is set and the data is missing."""
    root = os.environ.get("BENCH_DATA_ROOT")
    if not root:
        pytest.skip("BENCH_DATA_ROOT is not set")
    path = Path(root).resolve() / name
    if not path.exists():
        pytest.fail(f"BENCH_DATA_ROOT={root} is set but {path} does not exist")
    return path


@pytest.fixture
def smoke_args():
    """Arguments for an in-process ``bench run`` that finishes in seconds."""
    return ["--budget", "smoke", "--no-progress", "--no-estimate"]
