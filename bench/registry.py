"""Registries of methods and datasets, filled by decorators and by installed entry points.

Built-in methods register through the same entry-point groups a third-party package uses
(``bench.methods`` and ``bench.datasets`` in its ``pyproject.toml``), so the plug-in path is the
path every run takes.
"""
from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, TypeVar

METHOD_ENTRY_POINT_GROUP = "bench.methods"
DATASET_ENTRY_POINT_GROUP = "bench.datasets"

T = TypeVar("T")


class Registry:
    """Name -> class, with entry-point discovery on first use and helpful unknown-name errors."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Any] = {}
        self._discovered = False
        self.load_errors: dict[str, str] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "name", None)
            if not key:
                raise ValueError(f"{self.kind} {obj!r} has no name: set `name` or pass one to the decorator")
            existing = self._entries.get(key)
            if existing is not None and existing is not obj and _qualname(existing) != _qualname(obj):
                raise ValueError(f"{self.kind} name {key!r} is taken by {_qualname(existing)}")
            self._entries[key] = obj
            return obj

        return decorator

    def discover(self) -> None:
        """Import every installed plug-in once; a broken plug-in is reported, not fatal to the others."""
        if self._discovered:
            return
        self._discovered = True
        for entry_point in entry_points(group=self.entry_point_group):
            try:
                loaded = entry_point.load()
            except Exception as error:  # a third-party import failure must not hide the built-ins
                self.load_errors[entry_point.name] = f"{type(error).__name__}: {error}"
                continue
            if isinstance(loaded, type) and getattr(loaded, "name", None) and loaded.name not in self._entries:
                self.register()(loaded)

    def load(self, name: str) -> Any:
        """One entry by name, importing only its own entry point: a plug-in that builds on another
        method (SemiSAM composes a baseline) may call this at import time, even while ``discover`` is
        importing that very plug-in."""
        if name in self._entries:
            return self._entries[name]
        for entry_point in entry_points(group=self.entry_point_group, name=name):
            loaded = entry_point.load()
            if isinstance(loaded, type) and getattr(loaded, "name", None) and loaded.name not in self._entries:
                self.register()(loaded)
            return self._entries.get(name, loaded)
        return self.get(name)

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def installed_names(self) -> list[str]:
        """Names registered so far and those of installed entry points, without importing any plug-in
        (for ``--help``, which must not pay for torch)."""
        return sorted(set(self._entries) | {entry_point.name for entry_point in entry_points(group=self.entry_point_group)})

    def get(self, name: str) -> Any:
        """``outer:inner`` composes two registered entries: ``outer.compose(inner)`` must return the
        composed class (SemiSAM wraps any baseline: ``semisam:unimatch``).  The result is registered
        under the composed name so every later lookup returns the same class."""
        self.discover()
        if name in self._entries:
            return self._entries[name]
        outer_name, sep, inner_name = name.partition(":")
        if sep and outer_name in self._entries:
            outer = self._entries[outer_name]
            if not hasattr(outer, "compose"):
                raise KeyError(f"{self.kind} {outer_name!r} does not compose with others ('{name}')")
            composed = outer.compose(self.get(inner_name))
            composed.name = name
            self._entries[name] = composed
            return composed
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        broken = f" Plug-ins that failed to load: {self.load_errors}." if self.load_errors else ""
        raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(known)}.{broken}")

    def items(self) -> list[tuple[str, Any]]:
        return [(name, self._entries[name]) for name in self.names()]


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


METHODS = Registry("method", METHOD_ENTRY_POINT_GROUP)
DATASETS = Registry("dataset", DATASET_ENTRY_POINT_GROUP)

register_method = METHODS.register
register_dataset = DATASETS.register


def load_plugin_module(module_name: str) -> None:
    """The explicit ``--plugin module`` path: importing the module runs its register decorators."""
    try:
        importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"--plugin {module_name!r} could not be imported: {error}") from error
