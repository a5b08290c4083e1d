"""Named registries (backbones, datasets, metrics, ...) with errors a user can act on.

One mechanism for every "pick a name from a list" so that an unknown name always fails the same
way: one line naming the bad value, close matches, and how to list every choice.
"""

from __future__ import annotations

import difflib
from typing import Dict, Generic, Iterator, List, Tuple, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not in a registry; the message is a complete one-line explanation."""


def unknown_name_message(kind: str, name: str, choices: List[str], list_hint: str = "") -> str:
    """One line: the bad value, its closest valid choices, and where the full list is."""
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    message = f"unknown {kind} {name!r}"
    if close:
        message += f"; did you mean: {', '.join(close)}?"
    elif len(choices) <= 12:
        message += f"; valid choices: {', '.join(choices)}"
    if list_hint:
        message += f" ({list_hint})"
    return message


class Registry(Generic[T]):
    """An ordered name -> spec mapping whose lookups fail with close matches."""

    def __init__(self, kind: str, list_hint: str = ""):
        self.kind = kind
        self.list_hint = list_hint
        self._entries: Dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def replace(self, name: str, entry: T) -> T:
        """Register `entry` under `name`, in place of any entry of that name."""
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                unknown_name_message(self.kind, name, self.names(), self.list_hint)
            ) from None

    def names(self) -> List[str]:
        return list(self._entries)

    def items(self) -> Iterator[Tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
