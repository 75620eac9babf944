"""Instruction wording: each prompt language's wording (`TEMPLATES`), and the `template` dimension, hand-written
rewordings of the request a prompt makes (`PROMPT_TEMPLATES`), so a result can be checked against a change of wording.

A template rewords four things, in every prompt language: how the dataset's own task line is framed, the heading of
the category list, the answer rule and the reasoning rule. It keeps what the parser reads and training targets carry
(the answer marker, the uncertain word), the uncertain rule and the layout of the category list. The phrasings ask
for the same thing in other words (a question, an annotator's brief, a terse form); they are not other tasks.
`default` is the wording prompts had before templates existed, byte for byte, so its runs keep their identities.
Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

from strategies.lookup import did_you_mean


@dataclass(frozen=True)
class Template:
    """The instruction wording of one template in one language."""

    categories: str
    answer_rule: str
    uncertain_rule: str
    uncertain_word: str
    reasoning_rule: str
    answer_marker: str
    numeric_entry: str
    named_entry: str
    definition_sep: str
    task_line: str = "{task}"  # how the dataset's task line ({task}) is put

    def fingerprint(self) -> dict[str, str]:
        """The fields that identify this wording: those at their default are left out (as job identity leaves them
        out), so the default wording fingerprints as it did before `task_line` existed."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


TEMPLATES: dict[str, Template] = {
    "en": Template(
        categories="Categories:",
        answer_rule="Reply with exactly one category {what}, and nothing else.",
        uncertain_rule='If you are not confident, reply "{word}" instead.',
        uncertain_word="uncertain",
        reasoning_rule="First explain your reasoning in one or two sentences, then write a final line "
        '"{marker} <category {what}>".',
        answer_marker="Answer:",
        numeric_entry="{answer}. {name}",
        named_entry="- {name}",
        definition_sep=": ",
    ),
    "zh": Template(
        categories="类别：",
        answer_rule="只回答一个类别{what}，不要写其他内容。",
        uncertain_rule="如果你没有把握，请回答“{word}”。",
        uncertain_word="不确定",
        reasoning_rule="先用一两句话说明理由，最后一行写“{marker} <类别{what}>”。",
        answer_marker="答案：",
        numeric_entry="{answer}. {name}",
        named_entry="- {name}",
        definition_sep="：",
    ),
}


@dataclass(frozen=True)
class Rewording:
    """What a template says instead of a language's default wording ({task}: the dataset's task line; {what}: what
    an answer is called; {marker}: the answer marker)."""

    task_line: str
    categories: str
    answer_rule: str
    reasoning_rule: str


@dataclass(frozen=True)
class PromptTemplate:
    """A registered template: its doc, its rewording in each prompt language (none: the default wording), its tag."""

    doc: str
    rewordings: Mapping[str, Rewording]
    tag: str = ""

    def wording(self, language: str) -> Template:
        """The whole wording of this template in `language` (ValueError when there is none)."""
        if language not in TEMPLATES or (self.rewordings and language not in self.rewordings):
            raise ValueError(f"no prompt template for language '{language}'{did_you_mean(language, TEMPLATES)}; "
                             f"available: {', '.join(TEMPLATES)}")
        base = TEMPLATES[language]
        return replace(base, **asdict(self.rewordings[language])) if self.rewordings else base


DEFAULT_TEMPLATE = "default"

PROMPT_TEMPLATES: dict[str, PromptTemplate] = {
    DEFAULT_TEMPLATE: PromptTemplate("the dataset's task line, 'Categories:', 'Reply with exactly one category name, "
                                     "and nothing else.' (the wording before templates)", {}),
    "question": PromptTemplate(
        "the task line, then 'Which of the categories below is the right one?'; 'Answer with the category name "
        "only.'", {
            "en": Rewording("{task} Which of the categories below is the right one?", "Possible categories:",
                            "Answer with the category {what} only.",
                            'Think it through in one or two sentences, then end with the line '
                            '"{marker} <category {what}>".'),
            "zh": Rewording("{task}下面哪个类别最合适？", "可选类别：", "请只回答类别{what}。",
                            "请先用一两句话思考，最后以“{marker} <类别{what}>”这一行结尾。"),
        }, "tpl-question"),
    "expert": PromptTemplate(
        "'You are an expert annotator.' before the task line; 'Label set:'; 'Respond with a single category name "
        "from the list and no other text.'", {
            "en": Rewording("You are an expert annotator. {task}", "Label set:",
                            "Respond with a single category {what} from the list and no other text.",
                            'Justify your choice in one or two sentences, then give a final line '
                            '"{marker} <category {what}>".'),
            "zh": Rewording("你是一名专业的数据标注员。{task}", "标签集合：",
                            "从列表中选出一个类别{what}作答，不要输出其他文字。",
                            "先用一两句话说明你的判断依据，再在最后一行写“{marker} <类别{what}>”。"),
        }, "tpl-expert"),
    "terse": PromptTemplate(
        "'Task: <task line>', 'Options:', 'Output one category name.'", {
            "en": Rewording("Task: {task}", "Options:", "Output one category {what}.",
                            'Reason briefly, then write "{marker} <category {what}>" on the last line.'),
            "zh": Rewording("任务：{task}", "选项：", "输出一个类别{what}。",
                            "简要推理后，在最后一行写“{marker} <类别{what}>”。"),
        }, "tpl-terse"),
}


def registry_prompt(template: str, language: str) -> tuple[str, str]:
    """(name, text) of `template`'s wording in `language` as MLflow's prompt registry keeps it: one prompt per template
    and language, its text each part of the wording on a line of its own (`field: value`), the placeholders the
    suite fills ({task}, {what}, ...) in the registry's `{{task}}` form. A changed wording is a new text, so a new
    version of the same prompt."""
    wording = PROMPT_TEMPLATES[template].wording(language)
    parts = {f.name: _PLACEHOLDER.sub(r"{{\1}}", getattr(wording, f.name)) for f in fields(wording)}
    return f"genclsbench-template-{template}-{language}", "\n".join(f"{k}: {v}" for k, v in parts.items())


_PLACEHOLDER = re.compile(r"{(\w+)}")  # a placeholder the suite fills with str.format
