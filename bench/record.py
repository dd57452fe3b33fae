"""Writing results so that a crash never leaves a file that looks complete, and recording where a
result came from (versions, commit, device)."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

RESULT_FORMAT_VERSION = 1
RECORDED_PACKAGES = ("torch", "accelerate", "medpy", "numpy", "scipy", "datasets", "optuna", "segment-anything", "peft", "timm")


def write_atomic(path: Path, text: str) -> None:
    """Write beside the target and rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_csv_atomic(path: Path, rows: Iterable[dict]) -> None:
    rows = list(rows)
    fields: list[str] = []
    for row in rows:
        fields.extend(key for key in row if key not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("bench-ssl",) + RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


GIT_COMMIT_VARIABLE = "BENCH_GIT_COMMIT"
"""Names the commit when the source is a copy without git metadata (a tree sent to a remote GPU machine)."""


def git_commit() -> str | None:
    """The commit of the harness source, with ``+dirty`` when the tree has uncommitted changes.

    Where the source is not a git checkout, ``$BENCH_GIT_COMMIT`` (set by whoever copied the tree) is
    recorded, marked ``(declared)`` so a reader knows git did not confirm it."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=source, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        declared = os.environ.get(GIT_COMMIT_VARIABLE, "").strip()
        return f"{declared} (declared)" if declared else None
    return commit + ("+dirty" if dirty else "")


def check_writable(directory: Path) -> None:
    """Fail before any training if results could not be saved."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as error:
        raise ValueError(f"--out {directory}: not writable ({error.strerror or error})") from error
