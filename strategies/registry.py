"""The strategy dimensions: every dimension and value is registered once, with a doc and its constraints.

A `Strategy` is one point in the space (a canonical string per dimension). Grids name values; `parse_value`
validates them against this registry. Every combination runs (a dimension that does not apply is `"none"`).
Pure Python: no torch here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from strategies.decoding import DECODINGS, Decoding
from strategies.demos import DEMO_SELECTORS
from strategies.lookup import did_you_mean, entry
from strategies.scoring import CALIBRATIONS, PPL_NORMS
from strategies.templates import DEFAULT_TEMPLATE, PROMPT_TEMPLATES
from strategies.verbalizers import VERBALIZERS

NOT_APPLICABLE = "none"


@dataclass(frozen=True)
class Value:
    """One allowed value of a dimension: its canonical name, a one-line doc and its tag in run names."""

    name: str
    doc: str
    tag: str = ""


@dataclass(frozen=True)
class Dimension:
    """A strategy dimension: allowed values, default, doc, and (optionally) when it applies at all. A dimension with
    a `refused_where_inapplicable` reason refuses, with that reason, a value a grid block names where it applies to
    none of the block's combinations, rather than quietly dropping it (`bench.plan.grid`)."""

    name: str
    doc: str
    values: tuple[Value, ...]
    default: str
    applies: Callable[[Strategy], bool] | None = None
    parse: Callable[[str], str] | None = None  # for parametric values such as "random-3"
    refused_where_inapplicable: str = ""

    def value(self, name: str) -> Value:
        """The registered value that `name` (already canonical) instantiates."""
        base = name.split("-")[0] if self.parse else name
        return next(v for v in self.values if v.name.split("-")[0] == base)

    def allowed(self) -> str:
        return ", ".join(v.name for v in self.values)


def _parse_icl(raw: str) -> str:
    """`zero` or `<method>-<k>` with k >= 1, e.g. `similar-3`."""
    if raw == "zero":
        return raw
    match = re.fullmatch(r"([a-z]+)-(\d+)", raw)
    if not match or match.group(1) not in DEMO_SELECTORS or match.group(1) == "zero" or int(match.group(2)) < 1:
        raise ValueError(raw)
    return f"{match.group(1)}-{int(match.group(2))}"


def _values_of(registry: Mapping[str, Any]) -> tuple[Value, ...]:
    """The values of a registry whose entries carry their own `doc` and `tag` (verbalizers, decodings, norms,
    calibrations)."""
    return tuple(Value(name, value.doc, value.tag) for name, value in registry.items())


def _scores_candidates(strategy: Strategy) -> bool:
    """Whether the dimensions that decide among candidate scores (ppl_norm, calibration) apply: only under a
    decoding that scores the candidates."""
    return strategy.decoding_method.scores


_SCORING_DECODINGS = ", ".join(name for name, decoding in DECODINGS.items() if decoding.scores)


def _on_off(on_doc: str, off_doc: str, tag: str) -> tuple[Value, ...]:
    """The values of a switch: `off`, untagged, and `on`, tagged in run names."""
    return (Value("off", off_doc), Value("on", on_doc, tag))


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension(
            "icl",
            "in-context examples shown before the input",
            tuple(
                Value(name if name == "zero" else f"{name}-K", selector.doc, "" if name == "zero" else name)
                for name, selector in DEMO_SELECTORS.items()
            ),
            default="zero",
            parse=_parse_icl,
        ),
        Dimension(
            "definitions",
            "one-sentence category definitions listed in the prompt",
            _on_off("each category is listed with its definition", "categories by name only", "defs"),
            default="off",
        ),
        Dimension(
            "uncertain",
            "an explicit 'uncertain' answer is offered; it is scored as wrong and its rate is logged",
            _on_off("the model may answer 'uncertain'", "the model must pick a category", "uncertain"),
            default="off",
        ),
        Dimension(
            "labels",
            "how categories are named in the prompt and the answer",
            _values_of(VERBALIZERS),
            default="names",
        ),
        Dimension(
            "decoding",
            "how the prediction is read from the model",
            _values_of(DECODINGS),
            default="generate",
        ),
        Dimension(
            "ppl_norm",
            "normalisation of candidate log-likelihoods under ppl decoding",
            _values_of(PPL_NORMS),
            default="mean",
            applies=_scores_candidates,
        ),
        Dimension(
            "calibration",
            "calibration of candidate scores against label bias (from reference prompts, or the run's own scores), "
            "under a decoding that scores the candidates",
            _values_of(CALIBRATIONS),
            default="none",
            applies=_scores_candidates,
            refused_where_inapplicable=f"calibrates candidate scores, which only a decoding that scores the candidates "
            f"has ({_SCORING_DECODINGS}); add one to the block's decoding",
        ),
        Dimension(
            "reasoning",
            "the model writes a short reasoning before the label",
            _on_off("reasoning first, then a final 'Answer:' line (with ppl: the reasoning is "
                    "generated, then each 'Answer: <label>' is scored after it)", "label only", "reason"),
            default="off",
        ),
        Dimension(
            "template",
            "the wording of the request: how the task line is put, the category heading, the answer rule (several "
            "templates show how much a result depends on the wording)",
            _values_of(PROMPT_TEMPLATES),
            default=DEFAULT_TEMPLATE,
        ),
    )
}


def value_tags(point, dimensions: dict[str, Dimension], skip: tuple[str, ...] = ()) -> list[str]:
    """The non-empty tags of `point`'s values (a dataclass with one field per dimension), in registry order."""
    tags = []
    for name, dim in dimensions.items():
        value = getattr(point, name)
        if name not in skip and value != NOT_APPLICABLE and dim.value(value).tag:
            tags.append(dim.value(value).tag)
    return tags


@dataclass(frozen=True)
class Strategy:
    """One combination of dimension values (canonical strings; `"none"` where a dimension does not apply)."""

    icl: str = "zero"
    definitions: str = "off"
    uncertain: str = "off"
    labels: str = "names"
    decoding: str = "generate"
    ppl_norm: str = "mean"
    calibration: str = "none"
    reasoning: str = "off"
    template: str = DEFAULT_TEMPLATE

    @property
    def icl_method(self) -> str:
        return self.icl.split("-")[0]

    @property
    def shots(self) -> int:
        return 0 if self.icl == "zero" else int(self.icl.split("-")[1])

    @property
    def decoding_method(self) -> Decoding:
        """The registered decoding value: what it does, and the code that does it."""
        return entry(DECODINGS, self.decoding, "decoding")

    @property
    def seeded(self) -> bool:
        """Whether the run's seed changes what an untrained model predicts: the demo draws of `random-K` and
        `fixed-K`, the random in-domain texts of `domain` calibration."""
        return DEMO_SELECTORS[self.icl_method].seeded or entry(CALIBRATIONS, self.calibration, "calibration").seeded

    @property
    def generates_text(self) -> bool:
        """Whether predicting generates new tokens (a generated answer, or a reasoning before scored candidates)."""
        return self.decoding_method.writes_text(self.reasoning == "on")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @staticmethod
    def extra_params(strategy: Strategy | None) -> dict[str, object]:
        """Params derived from the fields, for the MLflow compare view (see bench.plan.identity.params)."""
        return {"icl_method": strategy and strategy.icl_method, "shots": strategy and strategy.shots}

    def tag(self) -> str:
        """Readable name such as `similar-3+defs+numeric+ppl` (defaults are left out)."""
        return "+".join([self.icl, *value_tags(self, DIMENSIONS, skip=("icl",))])


assert [f.name for f in fields(Strategy)] == list(DIMENSIONS), "Strategy fields must mirror DIMENSIONS"


def parse_value(dimension: str, raw: object, dimensions: dict[str, Dimension] = DIMENSIONS) -> str:
    """Canonical value of `raw` for `dimension`; ValueError with the allowed values otherwise."""
    if dimension not in dimensions:
        raise KeyError(f"unknown strategy dimension '{dimension}'{did_you_mean(dimension, dimensions)}; allowed: "
                       f"{', '.join(dimensions)}")
    dim = dimensions[dimension]
    text = {True: "on", False: "off"}.get(raw, raw) if isinstance(raw, bool) else str(raw).strip().lower()
    try:
        if dim.parse:
            return dim.parse(text)
        if text in {v.name for v in dim.values}:
            return text
    except ValueError:
        pass
    k = re.search(r"-(\d+)$", text)  # a K-shot value is suggested with the K written (simlar-3: similar-3)
    names = [v.name.replace("-K", f"-{k.group(1)}") if k else v.name for v in dim.values]
    raise ValueError(f"'{raw}' is not a value of '{dimension}'{did_you_mean(text, names)}; allowed: {dim.allowed()}")


def normalise(strategy, dimensions: dict[str, Dimension] = DIMENSIONS):
    """Set dimensions that do not apply to `"none"`, so equal behaviour means equal identity."""
    changes = {n: NOT_APPLICABLE for n, d in dimensions.items() if d.applies and not d.applies(strategy)}
    return replace(strategy, **changes)
