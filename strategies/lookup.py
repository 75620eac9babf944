"""Looking names up in a registry: an unknown name is an error that lists what is registered, never a silent
fallback to a default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def registered(names: list[str], registry: Mapping[str, object], what: str) -> list[str]:
    """`names` when every one is in `registry`; otherwise the first that is not, named, with the registered ones."""
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown {what} '{unknown[0]}'; registered: {', '.join(registry)}")
    return names


def entry(registry: Mapping[str, T], name: str, what: str) -> T:
    """The registered entry `name` (ValueError naming the registered ones when there is none)."""
    return registry[registered([name], registry, what)[0]]
