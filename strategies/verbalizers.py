"""Label verbalizers: how categories are named in prompts and answers. One registration per style, carrying all
it needs: the answer strings, how the instructions call an answer in each prompt language, and whether the
category list pairs each answer with its category (an answer such as "3" says nothing by itself)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from strategies.example import Category


@dataclass(frozen=True)
class Verbalizer:
    """Maps the categories (in dataset order) to the answer strings the model is asked to write."""

    doc: str
    answers: Callable[[Sequence[Category]], list[str]]
    what: Mapping[str, str]  # prompt language -> what an answer is called: "Reply with exactly one category {what}"
    listed_with_answer: bool = False  # the category list reads "<answer>. <name>" rather than "- <name>"
    tag: str = ""  # in run names; empty for the default

    def wording(self, language: str) -> str:
        """What an answer is called in `language` (ValueError when this verbalizer has no wording for it)."""
        if language not in self.what:
            raise ValueError(f"the '{self.doc}' labels have no wording for language '{language}' "
                             f"(only {', '.join(self.what)}); add it to the verbalizer's registration")
        return self.what[language]


VERBALIZERS: dict[str, Verbalizer] = {
    "names": Verbalizer("the category names", lambda cats: [c.name for c in cats], {"en": "name", "zh": "名称"}),
    "numeric": Verbalizer(
        "semantically neutral numbers 1..K (the prompt lists which number is which category)",
        lambda cats: [str(i) for i in range(1, len(cats) + 1)], {"en": "number", "zh": "编号"},
        listed_with_answer=True, tag="numeric",
    ),
}
