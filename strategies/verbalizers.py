"""Label verbalizers: how categories are named in prompts and answers. One registration per style."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from strategies.example import Category


@dataclass(frozen=True)
class Verbalizer:
    """Maps the categories (in dataset order) to the answer strings the model is asked to write."""

    doc: str
    answers: Callable[[Sequence[Category]], list[str]]


VERBALIZERS: dict[str, Verbalizer] = {
    "names": Verbalizer("the category names", lambda cats: [c.name for c in cats]),
    "numeric": Verbalizer(
        "semantically neutral numbers 1..K (the prompt lists which number is which category)",
        lambda cats: [str(i) for i in range(1, len(cats) + 1)],
    ),
}
