import pytest

from strategies.parsing import parse_answer, reasoning_part

EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


@pytest.mark.parametrize(
    ("output", "expected"),
    [("joy", "joy"), ("Joy", "joy"), (" JOY.\n", "joy"), ('"joy"', "joy"), ("**Sadness**", "sadness"),
     ("The emotion is fear.", "fear"), ("Label: 'anger'", "anger"), ("Joy, not sadness.", "joy"),
     ("I think it is sadness or fear", None), ("happiness", None), ("", None), ("enjoyment", None)],
)
def test_names(output, expected):
    assert parse_answer(output, EMOTIONS) == expected


@pytest.mark.parametrize(("output", "expected"), [("3", "3"), ("10", "10"), ("Category 1.", "1"), ("13", None)])
def test_numbers_match_whole_tokens(output, expected):
    assert parse_answer(output, [str(i) for i in range(1, 11)]) == expected


def test_reasoning_reads_after_the_last_marker_even_if_other_labels_are_mentioned():
    output = "It mentions losing a friend, so sadness or maybe anger... but the tone is calm.\nAnswer: sadness"
    assert parse_answer(output, EMOTIONS, "Answer:") == "sadness"
    assert parse_answer("joy is possible\nanswer - no: FEAR", EMOTIONS, "Answer:") == "fear"
    assert parse_answer("It is about anger.\nanger", EMOTIONS, "Answer:") == "anger"  # no marker: last line


def test_chinese_substrings_prefer_the_longer_label():
    labels = ["体育", "体育竞技", "财经"]
    assert parse_answer("这是体育竞技类应用", labels) == "体育竞技"
    assert parse_answer("答案：财经。", labels, "答案：") == "财经"
    assert parse_answer("类别：体育", labels) == "体育"


def test_uncertain_is_an_answer_like_any_other():
    assert parse_answer("Uncertain.", EMOTIONS + ["uncertain"]) == "uncertain"


def test_reasoning_part_is_the_text_before_the_last_marker():
    assert reasoning_part("Sad words.\nAnswer: joy? no.\nanswer: sadness", "Answer:") == "Sad words.\nAnswer: joy? no."
    assert reasoning_part("  no marker at all ", "Answer:") == "no marker at all"
    assert reasoning_part("理由。\n答案：体育", "答案：") == "理由。"
