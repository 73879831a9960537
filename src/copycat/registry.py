"""Scheme registries: one per ``scheme:`` family (oracles, pools, models, defences).

A registry maps a scheme name to a builder given as ``"module:function"`` and a one-line usage.
Builders are imported only when used, so the parser, ``--help`` and every error message can list
the schemes without importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from copycat.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Entry:
    """One scheme: its builder (``"module:function"``) and how a user writes it."""

    name: str
    target: str
    usage: str

    def load(self) -> Callable[..., Any]:
        module, _, attr = self.target.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return fn


class Registry:
    """Named builders of one family; ``kind`` names the family in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: str, *, usage: str | None = None) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} scheme {name!r} is registered twice")
        self._entries[name] = Entry(name, target, usage or name)

    def register(self, name: str, *, usage: str | None = None) -> Callable[[Any], Any]:
        """Decorator form of :meth:`add` for builders defined where they are registered."""

        def deco(fn: Any) -> Any:
            self.add(name, f"{fn.__module__}:{fn.__qualname__}", usage=usage)
            return fn

        return deco

    def names(self) -> list[str]:
        return list(self._entries)

    def usages(self) -> str:
        """``a, b or c``: the schemes as a user writes them, for help and error texts."""
        items = [e.usage for e in self._entries.values()]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def entry(self, name: str, *, also: str = "") -> Entry:
        """The entry of ``name``, its builder not loaded (so no heavy import); an unknown name
        is refused with the list of known ones, followed by ``also`` (other accepted forms)."""
        entry = self._entries.get(name)
        if entry is None:
            raise ConfigError(f"unknown {self.kind} {name!r}; use {self.usages()}{also}")
        return entry

    def get(self, name: str) -> Callable[..., Any]:
        """The builder of ``name``; an unknown name is refused with the list of known ones."""
        return self.entry(name).load()
