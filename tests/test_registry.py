from dataclasses import fields, is_dataclass

import pytest

from strategies.decoding import DECODINGS
from strategies.lookup import Implementation
from strategies.registry import DIMENSIONS, Strategy, normalise, parse_value
from strategies.training import RL_ALGOS


@pytest.mark.parametrize(
    ("dimension", "raw", "expected"),
    [("icl", "zero", "zero"), ("icl", "Random-3", "random-3"), ("icl", "similar-05", "similar-5"),
     ("definitions", True, "on"), ("definitions", False, "off"), ("uncertain", "ON", "on"),
     ("labels", "numeric", "numeric"), ("decoding", "ppl", "ppl"), ("ppl_norm", "sum", "sum")],
)
def test_parse_value_canonicalises(dimension, raw, expected):
    assert parse_value(dimension, raw) == expected


@pytest.mark.parametrize(("dimension", "raw"), [("icl", "random"), ("icl", "random-0"), ("icl", "nearest-3"),
                                                ("icl", "zero-3"), ("labels", "letters"), ("decoding", "beam")])
def test_parse_value_rejects_with_allowed_values(dimension, raw):
    with pytest.raises(ValueError, match="allowed: "):
        parse_value(dimension, raw)


def test_unknown_dimension_names_the_dimensions():
    with pytest.raises(KeyError, match="icl, definitions"):
        parse_value("temperature", 0.7)


def test_ppl_norm_is_none_unless_ppl():
    assert normalise(Strategy(decoding="generate", ppl_norm="sum")).ppl_norm == "none"
    assert normalise(Strategy(decoding="ppl", ppl_norm="sum")).ppl_norm == "sum"


def test_reasoning_combines_with_either_decoding():
    assert normalise(Strategy(decoding="ppl", reasoning="on")).tag() == "zero+ppl+reason"
    assert normalise(Strategy(reasoning="on")).tag() == "zero+reason"


def test_tag_names_non_defaults_only():
    assert normalise(Strategy()).tag() == "zero"
    strategy = normalise(Strategy(icl="similar-3", definitions="on", labels="numeric", decoding="ppl"))
    assert strategy.tag() == "similar-3+defs+numeric+ppl"
    assert (strategy.icl_method, strategy.shots) == ("similar", 3)


def test_planning_asks_the_decoding_whether_it_generates_or_scores():
    assert [(s.generates_text, s.decoding_method.scores) for s in (
        Strategy(), Strategy(decoding="ppl"), Strategy(decoding="ppl", reasoning="on"))] == \
        [(True, False), (False, True), (True, True)]


def test_an_unknown_decoding_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown decoding 'beam'; registered: generate, ppl"):
        Strategy(decoding="beam").decoding_method


def test_defaults_are_registered_values():
    for dim in DIMENSIONS.values():
        assert parse_value(dim.name, dim.default) == dim.default
        assert getattr(Strategy(), dim.name) == dim.default


def _implementations(value: object) -> list[Implementation]:
    """The implementations a registered entry names (inside nested entries too)."""
    if isinstance(value, Implementation):
        return [value]
    return [i for f in fields(value) for i in _implementations(getattr(value, f.name))] if is_dataclass(value) else []


@pytest.mark.parametrize("implementation", [i for registry in (DECODINGS, RL_ALGOS) for value in registry.values()
                                            for i in _implementations(value)], ids=lambda i: i.target)
def test_every_registered_implementation_resolves_to_a_callable(implementation):
    assert callable(implementation.resolve())  # a misspelt target fails here, not in the middle of a run
