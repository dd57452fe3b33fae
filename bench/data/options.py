"""Dataset options as they arrive from ``--dataset-option KEY=VALUE`` (strings), checked and typed once
for every adapter."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence


def check_options(dataset: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
    """A misspelt option silently ignored would change an experiment without a trace: refuse it."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"dataset {dataset!r}: unknown option(s) {unknown}; known: {sorted(known)}")


def option_list(value: str | Sequence[Any] | None) -> list[str] | None:
    """``"0,128,255"`` (as the CLI passes it) or a sequence -> list of stripped strings."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def option_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"option {name}={value!r}: expected true or false")


def option_int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name}={value!r}: expected an integer") from None
