"""Method hyper-parameters from outside the code: a ``--params`` YAML (what ``bench tune`` writes) and
``--set METHOD.PARAM=VALUE`` overrides.  Kept apart from ``bench.tune`` so that ``bench run`` never
imports Optuna."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_params_file(path: Path, method: str | None = None) -> dict[str, dict[str, Any]]:
    """``method -> params`` from a ``bench tune`` YAML (one method) or a mapping of several methods."""
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"--params {path}: cannot read ({error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"--params {path}: expected a mapping")
    if "method" in content and "params" in content:
        return {content["method"]: dict(content["params"] or {})}
    if all(isinstance(value, dict) for value in content.values()):
        return {name: dict(values) for name, values in content.items()}
    raise ValueError(f"--params {path}: expected 'method:' and 'params:' keys, or method -> params mappings")


def load_tuning_provenance(path: Path) -> dict[str, dict[str, Any]]:
    """``method -> {study, trials, objective, ..., params}`` when ``path`` is a ``bench tune`` YAML, else ``{}``.

    Runs record it so that a leaderboard can say which rows were tuned and with how many trials (an
    unequal search budget is an unequal comparison); ``params`` are the tuned values, so that a later
    ``--set`` on top of them stays visible as an override."""
    content = yaml.safe_load(path.read_text())
    if not (isinstance(content, dict) and isinstance(content.get("tuning"), dict) and "method" in content):
        return {}
    return {content["method"]: {**content["tuning"], "params": dict(content.get("params") or {})}}


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--set method.param=value``; values parsed as YAML scalars (``0.5``, ``true``, ``[1, 2]``)."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        method, dot, param = target.partition(".")
        if not (sep and dot and method and param):
            raise ValueError(f"--set {item!r}: expected METHOD.PARAM=VALUE")
        overrides.setdefault(method, {})[param] = yaml.safe_load(value)
    return overrides
