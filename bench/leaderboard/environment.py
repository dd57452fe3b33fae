"""The environment the published numbers were made with, and the runs that were not made in it.

``constraints.txt`` at the repository root pins every package (the README's commands install with it).
Results depend on the versions of the numerical packages (torch, numpy): a leaderboard row holding a run
made with other versions is marked, and the note under the table names the versions, so a reader does
not take a version difference for a method difference.  Without a constraints file (an installed
package, not a checkout) nothing is marked.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CONSTRAINTS_FILE = Path(__file__).resolve().parents[2] / "constraints.txt"
COMPARED_PACKAGES = ("torch", "numpy")
OTHER_ENVIRONMENT_MARK = "§"


@lru_cache(maxsize=4)
def pinned_versions(path: Path = CONSTRAINTS_FILE) -> dict[str, str]:
    """``package -> version`` of the compared packages in ``path`` (``name==version`` lines)."""
    if not path.exists():
        return {}
    pins = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep and name.strip().lower() in COMPARED_PACKAGES:
            pins[name.strip().lower()] = version.strip()
    return pins


def environment_differences(summary: dict, pins: dict[str, str] | None = None) -> tuple[str, ...]:
    """``("torch 2.15.0",)``: the compared packages whose recorded version is not the pinned one (a run
    that recorded no version is not marked: nothing says it differs)."""
    pins = pinned_versions() if pins is None else pins
    recorded = summary.get("versions") or {}
    return tuple(f"{package} {recorded[package]}" for package, version in sorted(pins.items())
                 if recorded.get(package) not in (None, version))


def environment_note(differences_by_row: dict[str, set[str]], pins: dict[str, str] | None = None) -> str:
    """The note under a table whose rows hold runs made in another environment ("" when none does)."""
    pins = pinned_versions() if pins is None else pins
    marked = {row: versions for row, versions in differences_by_row.items() if versions}
    if not marked:
        return ""
    pinned = ", ".join(f"{package} {version}" for package, version in sorted(pins.items()))
    rows = "; ".join(f"{row}: {', '.join(sorted(versions))}" for row, versions in sorted(marked.items()))
    return (f"{OTHER_ENVIRONMENT_MARK} holds runs made with other package versions than `constraints.txt` pins "
            f"({pinned}): {rows}. Such differences move results about as much as a seed does.\n")
