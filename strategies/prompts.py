"""One prompt builder for every strategy combination: chat messages in, answer strings and labels out.

Layout of a prompt (chat roles; `render_plain` flattens them for models without a chat template):
- the instructions: the task, the categories (numbered when labels are numeric; with definitions when on), the
  answer rule, the "uncertain" rule when on, the reasoning rule when on. They open the *first user turn* rather
  than a system message: SmolLM2-135M answered 0% of emotion zero-shot with a label when they were a system
  message, 69% when they were in the user turn (32 test examples, greedy);
- one user/assistant turn per demonstration (the assistant turn is exactly the completion the model should write);
- user: the input.
Everything before the input is the same for every input under zero-shot and fixed demos (a shareable prefix).
Instruction wording is a per-language data record, reworded by the strategy's `template` (strategies/templates.py),
so a Chinese dataset gets a Chinese prompt and a result can be checked under several wordings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from strategies.demos import PoolEmbeddings, demo_selector
from strategies.example import Example, TaskCard
from strategies.lookup import entry
from strategies.parsing import parse_answer, reasoning_part
from strategies.registry import Strategy
from strategies.templates import DEFAULT_TEMPLATE, PROMPT_TEMPLATES
from strategies.verbalizers import VERBALIZERS

UNCERTAIN = "uncertain"  # the prediction recorded when the model answers with the uncertain option
INVALID = "invalid"  # the prediction recorded when no answer can be read from the output

Message = dict[str, str]

PROMPT_REVISION = 1  # bump when the way a prompt is assembled changes (its wording is fingerprinted by itself)


def prompt_format(language: str, template: str = DEFAULT_TEMPLATE) -> str:
    """A fingerprint of how prompts in `language` under `template` are worded and assembled: part of the identity of
    every run whose prompts it renders, so a changed wording is a new run, never a stale one."""
    answers = {name: v.what[language] for name, v in VERBALIZERS.items() if language in v.what}
    wording = [PROMPT_REVISION, entry(PROMPT_TEMPLATES, template, "template").wording(language).fingerprint(), answers]
    return hashlib.sha256(json.dumps(wording, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


def render_plain(messages: Sequence[Message]) -> str:
    """A plain-text rendering for models without a chat template; the completion follows the last line."""
    return "".join(f"{m['content']}\n\n" if m["role"] != "user" else f"{m['content']}\n" for m in messages)


class PromptBuilder:
    """Renders prompts and completions for one (task, strategy, demo pool, seed), and reads answers back."""

    def __init__(self, card: TaskCard, strategy: Strategy, pool: Sequence[Example], seed: int,
                 embeddings: PoolEmbeddings | None = None) -> None:
        self.card, self.strategy, self.pool, self.seed = card, strategy, pool, seed
        self.template = entry(PROMPT_TEMPLATES, strategy.template, "template").wording(card.language)
        self.verbalizer = entry(VERBALIZERS, strategy.labels, "labels value")
        self.label_answers = self.verbalizer.answers(card.categories)
        self._label_of = {a: c.value for a, c in zip(self.label_answers, card.categories)}
        self._answer_of = {c.value: a for a, c in zip(self.label_answers, card.categories)}
        if strategy.uncertain == "on":
            self._label_of[self.template.uncertain_word] = UNCERTAIN
            self._answer_of[UNCERTAIN] = self.template.uncertain_word
        self.answers = list(self._label_of)
        self.select_demos = demo_selector(strategy.icl, pool, seed, embeddings)
        self.instructions = self._instructions()

    def _instructions(self) -> str:
        t, s = self.template, self.strategy
        what = self.verbalizer.wording(self.card.language)
        line_format = t.numeric_entry if self.verbalizer.listed_with_answer else t.named_entry
        lines = [t.task_line.format(task=self.card.task), t.categories]
        for answer, category in zip(self.label_answers, self.card.categories):
            line = line_format.format(answer=answer, name=category.name)
            lines.append(line + (t.definition_sep + category.definition if s.definitions == "on" else ""))
        rule = t.reasoning_rule if s.reasoning == "on" else t.answer_rule
        lines.append(rule.format(what=what, marker=t.answer_marker))
        if s.uncertain == "on":
            lines.append(t.uncertain_rule.format(word=t.uncertain_word))
        return "\n".join(lines)

    def _user(self, example: Example) -> Message:
        return {"role": "user", "content": f"{self.card.input_name}: {example.text}"}

    def completion(self, label: str, reasoning: str | None = None) -> str:
        """What the model should write for `label` (a stored label value or UNCERTAIN)."""
        answer = self._answer_of[label]
        if self.strategy.reasoning == "off":
            return answer
        final = f"{self.template.answer_marker} {answer}"
        return f"{reasoning.strip()}\n{final}" if reasoning else final

    def messages(self, example: Example, demos: Sequence[Example] | None = None) -> list[Message]:
        """The chat messages that ask for `example`'s label under this strategy; `demos`: its demonstrations, when
        the caller selected them already (`select_demos`), else selected here."""
        turns: list[Message] = []
        for demo in self.select_demos([example])[0] if demos is None else demos:
            turns += [self._user(demo), {"role": "assistant", "content": self.completion(demo.label)}]
        turns.append(self._user(example))
        turns[0] = {"role": "user", "content": f"{self.instructions}\n\n{turns[0]['content']}"}
        return turns

    def reasoning_of(self, output: str) -> str:
        """The reasoning part of a generated `output`: the text before its last answer marker (all of it if none)."""
        return reasoning_part(output, self.template.answer_marker)

    def candidates(self) -> list[str]:
        """Every possible completion, in `answers` order, for perplexity decoding."""
        return [self.completion(self._label_of[a]) for a in self.answers]

    def label_of_answer(self, answer: str) -> str:
        return self._label_of[answer]

    def parse(self, output: str, strict: bool = False) -> str:
        """The label value, UNCERTAIN or INVALID that a generated `output` gives (`strict`: see parse_answer)."""
        marker = self.template.answer_marker if self.strategy.reasoning == "on" else None
        answer = parse_answer(output, self.answers, marker, strict)
        return INVALID if answer is None else self._label_of[answer]
