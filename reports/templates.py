"""Results across prompt templates: a strategy run under several wordings of its instructions (the `template`
dimension) is read like a strategy over seeds: its mean over the templates, its spread (lowest, highest, standard
deviation), an interval over examples and templates, and its paired accuracy gain over the board's baseline
strategy template by template, flagged when the gain changes sign from one wording to another. The sensitivity
ranking orders strategies by how much they move with the wording; each board says whether its top strategies keep
their order under every template.

A template's result is the mean of its runs (one per seed where the seed changes the run); the interval is the
two-level bootstrap of `reports.stats.two_level` with the templates as the repeats. Strategies run under a single
template are left to the leaderboard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reports.analysis import Board, Row
from reports.stats import Interval, spread, two_level
from strategies.templates import PROMPT_TEMPLATES

TOP = 3  # how many of the best strategies a ranking follows across templates


@dataclass(frozen=True)
class TemplateSummary:
    """One strategy (a row label, its template left out) on one board, over its templates."""

    board: str
    label: str
    accuracy_by_template: dict[str, float]  # template -> accuracy (mean over its seeds)
    accuracy: Interval  # mean over templates; interval over examples and templates
    accuracy_sd: float  # standard deviation across templates
    macro_f1: Interval
    macro_f1_sd: float
    gains: dict[str, float]  # template -> paired accuracy difference from the baseline strategy under it
    vs_baseline: Interval | None  # the mean gain, interval over examples and templates (None: it is the baseline)

    @property
    def lowest(self) -> tuple[str, float]:
        return min(self.accuracy_by_template.items(), key=lambda item: item[1])

    @property
    def highest(self) -> tuple[str, float]:
        return max(self.accuracy_by_template.items(), key=lambda item: item[1])

    @property
    def flips(self) -> bool:
        """Whether the gain over the baseline is positive under one template and negative under another."""
        return any(g > 0 for g in self.gains.values()) and any(g < 0 for g in self.gains.values())


@dataclass(frozen=True)
class _Wording:
    """A strategy's result under one template: its runs' accuracy and macro-F1 and their replicates, averaged over
    its seeds."""

    accuracy: float
    macro_f1: float
    acc_replicates: np.ndarray
    f1_replicates: np.ndarray

    @classmethod
    def of(cls, rows: list[Row]) -> _Wording:
        return cls(float(np.mean([r.accuracy.value for r in rows])), float(np.mean([r.macro_f1.value for r in rows])),
                   np.mean([r.acc_replicates for r in rows], axis=0), np.mean([r.f1_replicates for r in rows], axis=0))


def _by_template(board: Board) -> dict[str, dict[str, _Wording]]:
    """Each LLM strategy of the board (its template left out) -> template -> its result under that template."""
    rows: dict[str, dict[str, list[Row]]] = {}
    for row in board.rows:
        if row.kind == "llm":
            rows.setdefault(row.base_label, {}).setdefault(row.template, []).append(row)
    return {label: {t: _Wording.of(templates[t]) for t in sorted(templates, key=_registration_order)}
            for label, templates in rows.items()}


def _registration_order(template: str) -> tuple[int, str]:
    """Templates in the order they are registered (one no longer registered after them, by name)."""
    order = list(PROMPT_TEMPLATES)
    return (order.index(template), "") if template in order else (len(order), template)


def template_summaries(boards: list[Board], seed: int = 0) -> list[TemplateSummary]:
    """A summary per strategy run under more than one template, on every board that has one."""
    rng = np.random.default_rng(seed)
    found = []
    for board in boards:
        strategies = _by_template(board)
        reference = board.baseline.base_label if board.baseline and board.baseline.kind == "llm" else None
        control = strategies.get(reference, {})
        for label, templates in strategies.items():
            if len(templates) < 2:
                continue
            paired = [t for t in templates if t in control] if label != reference else []
            gains = {t: templates[t].accuracy - control[t].accuracy for t in paired}
            acc = [w.accuracy for w in templates.values()]
            f1 = [w.macro_f1 for w in templates.values()]
            found.append(TemplateSummary(
                board.title, label, {t: w.accuracy for t, w in templates.items()},
                two_level(float(np.mean(acc)), [w.acc_replicates for w in templates.values()], rng), spread(acc),
                two_level(float(np.mean(f1)), [w.f1_replicates for w in templates.values()], rng), spread(f1), gains,
                two_level(float(np.mean(list(gains.values()))),
                          [templates[t].acc_replicates - control[t].acc_replicates for t in paired], rng)
                if paired else None,
            ))
    return sorted(found, key=lambda s: (s.board, -s.accuracy.value, s.label))


def by_sensitivity(summaries: list[TemplateSummary]) -> list[TemplateSummary]:
    """The summaries ordered by how much each strategy moves with the wording (standard deviation of accuracy
    across templates, largest first), board by board."""
    return sorted(summaries, key=lambda s: (s.board, -s.accuracy_sd, s.label))


@dataclass(frozen=True)
class TopRanking:
    """A board's best strategies by mean accuracy over templates, and the best under each template alone."""

    board: str
    by_mean: tuple[str, ...]
    by_template: dict[str, tuple[str, ...]]

    @property
    def kept(self) -> list[str]:
        """The templates under which the same strategies lead in the same order."""
        return [t for t, top in self.by_template.items() if top == self.by_mean]


def top_rankings(summaries: list[TemplateSummary], n: int = TOP) -> list[TopRanking]:
    """Per board, the top `n` strategies by mean accuracy and under each template (among the strategies run under
    it; ties keep the order by mean)."""
    rankings = []
    for board in dict.fromkeys(s.board for s in summaries):
        ranked = sorted((s for s in summaries if s.board == board), key=lambda s: -s.accuracy.value)
        templates = dict.fromkeys(t for s in ranked for t in s.accuracy_by_template)
        by_template = {t: tuple(s.label for s in sorted((s for s in ranked if t in s.accuracy_by_template),
                                                        key=lambda s: -s.accuracy_by_template[t])[:n])
                       for t in templates}
        rankings.append(TopRanking(board, tuple(s.label for s in ranked[:n]), by_template))
    return rankings
