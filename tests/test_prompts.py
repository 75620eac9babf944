import pytest

from bench.plan.datasets import DatasetConfig, load_dataset
from strategies.demos import bm25_tokens
from strategies.prompts import INVALID, UNCERTAIN, PromptBuilder, render_plain
from strategies.registry import Strategy


@pytest.fixture(scope="module")
def emotion():
    return load_dataset(DatasetConfig(name="emotion"))


def build(dataset, seed=0, **dims):
    return PromptBuilder(dataset.card, Strategy(**dims), dataset.pool, seed)


def demo_turns(messages):
    """The demonstration turns, the instructions stripped from the first one."""
    turns = [dict(m) for m in messages[:-1]]
    if turns:
        turns[0]["content"] = turns[0]["content"].split("\n\n")[-1]
    return turns


def test_zero_shot_is_instructions_then_input(emotion):
    example = emotion.eval_splits["test"][0]
    messages = build(emotion).messages(example)
    assert [m["role"] for m in messages] == ["user"]
    assert messages[-1]["content"].endswith(f"\n\nMessage: {example.text}")
    instructions = messages[0]["content"]
    assert "- sadness" in instructions and "- surprise" in instructions and "uncertain" not in instructions
    assert "The writer feels" not in instructions  # no definitions by default


def test_random_demos_are_seeded_per_input(emotion):
    a, b = emotion.eval_splits["test"][:2]
    builder = build(emotion, icl="random-3")
    turns = demo_turns(builder.messages(a))
    assert [m["role"] for m in turns] == ["user", "assistant"] * 3
    assert builder.messages(a) == build(emotion, icl="random-3").messages(a)
    assert demo_turns(builder.messages(a)) != demo_turns(builder.messages(b))
    assert demo_turns(build(emotion, seed=1, icl="random-3").messages(a)) != turns
    assert builder.messages(a)[0]["content"].startswith(builder.instructions)


def test_fixed_demos_are_shared_and_label_balanced(emotion):
    a, b = emotion.eval_splits["test"][:2]
    builder = build(emotion, icl="fixed-6")
    turns = demo_turns(builder.messages(a))
    assert turns == demo_turns(builder.messages(b))
    assert sorted(m["content"] for m in turns if m["role"] == "assistant") == sorted(
        c.value for c in emotion.card.categories)


def test_similar_demos_share_words_with_the_input(emotion):
    query = emotion.eval_splits["test"][0]
    turns = demo_turns(build(emotion, icl="similar-3").messages(query))
    overlap = [len(set(bm25_tokens(m["content"])) & set(bm25_tokens(query.text))) for m in turns if m["role"] == "user"]
    assert min(overlap) >= 2


def test_definitions_uncertain_numeric_and_reasoning(emotion):
    example = emotion.eval_splits["test"][0]
    system = build(emotion, definitions="on", uncertain="on", labels="numeric", reasoning="on").messages(example)[0]
    text = system["content"]
    assert "1. sadness: The writer feels unhappy" in text and "6. surprise" in text
    assert 'reply "uncertain"' in text and '"Answer: <category number>"' in text


def test_completions_and_candidates_follow_the_label_style(emotion):
    numeric = build(emotion, labels="numeric", uncertain="on")
    assert numeric.completion("joy") == "2"
    assert numeric.candidates() == ["1", "2", "3", "4", "5", "6", "uncertain"]
    assert numeric.parse("2") == "joy" and numeric.parse("Uncertain") == UNCERTAIN and numeric.parse("7") == INVALID
    reasoning = build(emotion, reasoning="on")
    assert reasoning.completion("fear", "It worries.") == "It worries.\nAnswer: fear"
    assert reasoning.parse("Sounds scary, not joy.\nAnswer: Fear") == "fear"


def test_chinese_dataset_gets_a_chinese_prompt():
    tnews = load_dataset(DatasetConfig(name="tnews"))
    builder = PromptBuilder(tnews.card, Strategy(definitions="on", uncertain="on"), tnews.pool, 0)
    system = builder.messages(tnews.eval_splits["validation"][0])[0]["content"]
    assert "类别：" in system and "- 体育：" in system and "不确定" in system
    assert builder.parse("这条新闻属于体育。") == "news_sports"


def test_plain_rendering_ends_where_the_completion_starts():
    text = render_plain([{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
                         {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}])
    assert text == "S\n\nU1\nA1\n\nU2\n"


def test_every_template_words_every_prompt_language_and_default_is_the_language_wording():
    from strategies.templates import DEFAULT_TEMPLATE, PROMPT_TEMPLATES, TEMPLATES

    assert len(PROMPT_TEMPLATES) >= 4
    for name, template in PROMPT_TEMPLATES.items():
        for language in TEMPLATES:
            wording = template.wording(language)
            assert (wording == TEMPLATES[language]) == (name == DEFAULT_TEMPLATE)
            assert "{task}" in wording.task_line and "{what}" in wording.answer_rule
    with pytest.raises(ValueError, match="no prompt template for language 'fr'"):
        PROMPT_TEMPLATES["terse"].wording("fr")


@pytest.mark.parametrize("template", ["question", "expert", "terse"])
def test_a_template_rewords_the_request_and_changes_nothing_else(emotion, template):
    from strategies.templates import PROMPT_TEMPLATES

    example = emotion.eval_splits["test"][0]
    dims = {"icl": "random-2", "uncertain": "on", "decoding": "ppl"}
    plain, reworded = build(emotion, **dims), build(emotion, template=template, **dims)
    before, after = plain.messages(example), reworded.messages(example)
    assert before != after and demo_turns(before) == demo_turns(after) and before[1:] == after[1:]
    wording = PROMPT_TEMPLATES[template].wording("en")
    changed = [line for line in after[0]["content"].splitlines() if line not in before[0]["content"].splitlines()]
    assert changed == [wording.task_line.format(task=emotion.card.task), wording.categories,
                       wording.answer_rule.format(what="name")]  # the category list and the input stay
    assert (reworded.answers, reworded.candidates()) == (plain.answers, plain.candidates())
    assert reworded.parse("Joy") == plain.parse("Joy") == "joy" and reworded.parse("uncertain") == UNCERTAIN


def test_a_chinese_template_rewords_a_chinese_prompt():
    tnews = load_dataset(DatasetConfig(name="tnews"))
    builder = PromptBuilder(tnews.card, Strategy(template="terse"), tnews.pool, 0)
    assert builder.instructions.startswith(f"任务：{tnews.card.task}\n选项：\n- ")
    assert builder.instructions.endswith("输出一个类别名称。")
