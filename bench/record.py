"""Writing results so that a crash never leaves a file that looks complete, and recording where a
result came from (versions, commit, device)."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

RESULT_FORMAT_VERSION = 1
RECORDED_PACKAGES = ("torch", "accelerate", "medpy", "numpy", "scipy", "datasets", "optuna", "segment-anything", "peft", "timm")


class ArtefactWriteError(OSError):
    """A result file that could not be written, named with the free space where it was going."""

    def __init__(self, path: Path, error: OSError) -> None:
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free on {path.parent}"
        except OSError:
            free = f"free space on {path.parent} unknown"
        super().__init__(error.errno, f"{path}: cannot write ({error.strerror or error}); {free}")
        self.path = path


def file_mode() -> int:
    """The mode ``open()`` would give a new file under this process's umask (a temporary file from
    ``tempfile`` is 0600, which would hide results from colleagues on a shared cluster folder)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it becomes ``path`` in one rename.

    Readers see the old file or the whole new one; on any failure the temporary file is removed (a
    half-written file must not keep a full disk full), and an ``OSError`` becomes an
    ``ArtefactWriteError`` naming the file and the free space."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
    except OSError as error:
        raise ArtefactWriteError(path, error) from error
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, file_mode())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        os_error = _os_error_in_chain(error)
        if os_error is not None and not isinstance(error, ArtefactWriteError):
            raise ArtefactWriteError(path, os_error) from error
        raise


def _os_error_in_chain(error: BaseException | None) -> OSError | None:
    """The ``OSError`` behind ``error``: writers in C (torch's zip writer) wrap it in a ``RuntimeError``."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def write_atomic(path: Path, text: str) -> None:
    """Write beside the target and rename: readers see the old file or the whole new one."""
    with atomic_file(path) as temporary:
        with open(temporary, "w", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())


def torch_save_atomic(payload: Any, path: Path) -> None:
    import torch

    # Through a Python file object, so that a failed write keeps its OSError (errno, "No space left").
    with atomic_file(path) as temporary, open(temporary, "wb") as stream:
        torch.save(payload, stream)


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
