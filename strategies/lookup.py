"""Looking names up in a registry: an unknown name is an error that lists what is registered, never a silent
fallback to a default; and reaching the code a registered value names, imported only when it runs."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import reduce
from importlib import import_module
from typing import Any, TypeVar

T = TypeVar("T")


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """` (did you mean 'X'?)`, naming the one of `choices` closest to a mistyped `name` (difflib's similarity, 0.6 or
    more), or "" when none is close: what every message that lists the allowed values for a bad one adds."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def registered(names: list[str], registry: Mapping[str, object], what: str) -> list[str]:
    """`names` when every one is in `registry`; otherwise the first that is not, named, with the registered ones."""
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown {what} '{unknown[0]}'{did_you_mean(unknown[0], registry)}; registered: "
                         f"{', '.join(registry)}")
    return names


def entry(registry: Mapping[str, T], name: str, what: str) -> T:
    """The registered entry `name` (ValueError naming the registered ones when there is none)."""
    return registry[registered([name], registry, what)[0]]


@dataclass(frozen=True)
class Implementation:
    """The code that does what a registered value says, named `"module:attribute"` (the attribute may be dotted,
    `Class.method`), like an entry point: a registration here stays pure Python and names code in runners/ without
    importing torch, so planning and `bench list` never load it; the module is imported on the first `resolve()`."""

    target: str

    def resolve(self) -> Callable[..., Any]:
        """The named callable (importing its module if it is not yet)."""
        module, _, attribute = self.target.partition(":")
        return reduce(getattr, attribute.split("."), import_module(module))
