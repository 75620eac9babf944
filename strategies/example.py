"""The unit of data every strategy works on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One labelled text. `id` is stable across runs (split name + row number) so caches and pairs line up."""

    id: str
    text: str
    label: str


@dataclass(frozen=True)
class Category:
    """A class of a dataset: the stored label `value`, its `name` in prompts, and a one-sentence `definition`."""

    value: str
    name: str
    definition: str = ""


@dataclass(frozen=True)
class TaskCard:
    """What a prompt needs to know about a dataset."""

    language: str
    task: str
    input_name: str
    categories: tuple[Category, ...]

    @property
    def has_definitions(self) -> bool:
        return all(c.definition for c in self.categories)
