"""Shared test fixtures: real-data location and a fast, quiet smoke configuration."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# The test models are tiny: one thread is faster than two (no synchronisation), and far faster on a
# busy machine; subprocesses started by tests inherit the setting.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
# One Arrow cache per test session: shared by its tests (ACDC's costs ~15 s to build), never the user's.
os.environ.setdefault("BENCH_CACHE_DIR", tempfile.mkdtemp(prefix="bench-test-cache-"))


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


@pytest.fixture
def cross_prompt_outputs(monkeypatch):
    """``record(module)`` replaces ``module.cross_prompt`` (CPC-SAM, InteractMatch) with a pass-through
    that keeps the step's unprompted and prompted decoder logits, detached, in the returned dict."""

    def record(module) -> dict:
        captured: dict = {}
        real_cross_prompt = module.cross_prompt

        def spy(sam, embeddings, unprompted, recipes, *args, **kwargs):
            prompted = real_cross_prompt(sam, embeddings, unprompted, recipes, *args, **kwargs)
            captured["unprompted"] = [logits.detach() for logits in unprompted]
            captured["prompted"] = [{kind: logits.detach() for kind, logits in outputs.items()} for outputs in prompted]
            return prompted

        monkeypatch.setattr(module, "cross_prompt", spy)
        return captured

    return record
