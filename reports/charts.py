"""Report charts, drawn by matplotlib and embedded as inline SVG (the HTML needs no network and no files)."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import ListedColormap, Normalize  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from reports.analysis import Board  # noqa: E402


def _svg(figure) -> str:
    buffer = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing CJK glyphs in the default font
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prologue and doctype: the SVG sits inside HTML


def heatmap(board: Board) -> str | None:
    """Accuracy of every (training, inference strategy) cell of the board's LLM rows; None unless they cross both."""
    llm = [r for r in board.rows if r.kind == "llm"]
    trainings = list(dict.fromkeys(r.training for r in llm))
    strategies = list(dict.fromkeys(r.strategy for r in llm))
    if len(trainings) < 2 or len(strategies) < 2:
        return None
    cells = {(r.training, r.strategy): r.accuracy.value for r in llm}
    grid = [[cells.get((t, s), float("nan")) for s in strategies] for t in trainings]
    figure, axes = plt.subplots(figsize=(1.2 + 0.9 * len(strategies), 0.9 + 0.4 * len(trainings)))
    image = axes.imshow(grid, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(strategies)), strategies, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(trainings)), trainings, fontsize=8)
    axes.set_xlabel("inference strategy")
    axes.set_ylabel("training")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white")
    figure.colorbar(image, ax=axes, label="accuracy")
    axes.set_title(board.title, fontsize=9)
    return _svg(figure)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on both), fastest first."""
    front, best = [], float("-inf")
    for i in sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _readable_log_ticks(axes, low: float, high: float) -> None:
    """Major ticks at 1-2-5 steps inside the data's range, written plainly (0.5, 1, 2, ...), no minor labels."""
    from math import floor, log10

    ticks = [m * 10.0 ** e for e in range(floor(log10(low)) - 1, floor(log10(high)) + 2) for m in (1, 2, 5)]
    inside = [t for t in ticks if low / 1.3 <= t <= high * 1.3]
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticks(inside, [f"{t:g}" for t in inside])


def _label_groups(axes, points: list[tuple[float, float]], apart_px: float = 12.0) -> dict[tuple, list[int]]:
    """The points' numbers (from 1), gathered under the first of each group of points drawn closer than `apart_px`
    to it: one label "15,16" where two labels would print over each other."""
    axes.autoscale_view()
    where = axes.transData.transform(points) if points else []
    groups: dict[tuple, list[int]] = {}
    anchors: list[tuple[tuple, tuple[float, float]]] = []
    for number, (point, (x, y)) in enumerate(zip(points, where), start=1):
        near = next((a for a, (ax, ay) in anchors if abs(ax - x) < apart_px and abs(ay - y) < apart_px / 2), None)
        if near is None:
            anchors.append((point, (x, y)))
            groups[point] = [number]
        else:
            groups[near].append(number)
    return groups


def pareto(board: Board) -> str:
    """Accuracy against evaluation throughput (examples/s, log scale). Every point is numbered, and the key beside
    the plot says which row each number is; the Pareto front (no row both faster and more accurate) is drawn as
    larger orange points joined by a line."""
    rows = board.rows
    points = [(r.metrics.get("examples_per_s", 0.0), r.accuracy.value) for r in rows]
    front = pareto_front(points)
    figure, (axes, key) = plt.subplots(1, 2, figsize=(10, max(4.2, 0.17 * len(rows) + 1)),
                                       gridspec_kw={"width_ratios": [3, 2]})
    axes.scatter([p[0] for p in points], [p[1] for p in points], s=22, color="tab:blue", zorder=2, label="run")
    axes.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:orange", lw=1.5, zorder=3,
              marker="o", markersize=8, label="Pareto front")
    speeds = [p[0] for p in points if p[0] > 0]
    if len(speeds) == len(points) and speeds:
        axes.set_xscale("log")
        _readable_log_ticks(axes, min(speeds), max(speeds))
    for (speed, acc), numbers in _label_groups(axes, points).items():
        axes.annotate(",".join(map(str, numbers)), (speed, acc), fontsize=7, xytext=(4, 3),
                      textcoords="offset points", zorder=4)
    axes.set_xlabel("evaluation examples / s (higher is cheaper)")
    axes.set_ylabel("accuracy")
    axes.grid(alpha=0.3)
    axes.set_title(board.title, fontsize=9)
    key.axis("off")
    key.legend(*axes.get_legend_handles_labels(), fontsize=8, loc="lower left")  # beside the points: no search
    lines = [f"{n:>2}  {'* ' if n - 1 in front else '  '}{r.label}" for n, r in enumerate(rows, start=1)]
    key.text(0, 1, "\n".join(lines + ["", "* on the Pareto front"]), va="top", ha="left", family="monospace",
             fontsize=7, transform=key.transAxes)
    return _svg(figure)


NOT_ASKED = "not asked"  # a conditional parameter in a trial that did not ask it (ppl_norm under generate)
_NOT_ASKED_AT = -0.18  # its place on an axis: under the axis's values, apart from them
_LINES = ListedColormap(plt.get_cmap("viridis")(np.linspace(0.0, 0.88, 256)))  # no pale end: every line shows


def _axis(values: Sequence[object]) -> tuple[Callable[[object], float], list[tuple[float, str]]]:
    """Where a value sits on one axis of a parallel-coordinates chart (0 to 1), and the axis's ticks (place,
    label): a number axis is linear (log when it spans more than 100x), with each value as a tick when there are few
    (integers), else its ends and middle; a category axis spreads its values evenly, in sorted order."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if not numbers:
        order = sorted({str(v) for v in values})
        step = 1 / (len(order) - 1) if len(order) > 1 else 0.0
        return (lambda v: order.index(str(v)) * step if len(order) > 1 else 0.5), \
            [(i * step if len(order) > 1 else 0.5, label) for i, label in enumerate(order)]
    low, high = min(values), max(values)
    scale = math.log10 if low > 0 and high > 100 * low else float
    span = scale(high) - scale(low)

    def place(v: object) -> float:
        return (scale(v) - scale(low)) / span if span else 0.5

    distinct = sorted(set(values))
    shown = distinct if len(distinct) <= 6 else [low, (10 ** ((scale(low) + scale(high)) / 2) if scale is math.log10
                                                        else (low + high) / 2), high]
    return place, [(place(v), f"{v:.3g}") for v in shown]


def parallel_coordinates(params: Sequence[Mapping[str, object]], values: Sequence[float], objective: str) -> str | None:
    """One line per trial through its objective value and each parameter (`params`: each trial's, `values`: its
    objective), coloured by the objective (dark low, bright high, on white), the best drawn last; a parameter a trial
    did not ask is drawn at `not asked`, under that axis's values. None with fewer than two trials."""
    if len(values) < 2:
        return None
    names = sorted({name for point in params for name in point})
    columns = [(objective, list(values)), *((name, [point.get(name) for point in params]) for name in names)]
    with plt.style.context("default"):  # whatever style a library left set (Optuna's plots set ggplot's grey)
        return _parallel(columns, values, objective)


def _parallel(columns: list[tuple[str, list]], values: Sequence[float], objective: str) -> str:
    figure, axes = plt.subplots(figsize=(max(6.5, 1.5 * len(columns)), 4.2))
    norm = Normalize(min(values), max(values))
    placed = []
    for x, (name, column) in enumerate(columns):
        place, ticks = _axis([v for v in column if v is not None])
        placed.append([_NOT_ASKED_AT if v is None else place(v) for v in column])
        if any(v is None for v in column):
            ticks.append((_NOT_ASKED_AT, NOT_ASKED))
            axes.plot([x, x], [_NOT_ASKED_AT, 0], color="#999", lw=0.8, ls=":", zorder=1)
        axes.plot([x, x], [0, 1], color="#444", lw=0.8, zorder=1)
        for y, label in ticks:
            axes.text(x + 0.05, y, label, fontsize=7, va="center", ha="left", zorder=4,
                      color="#777" if label == NOT_ASKED else "#222", style="italic" if label == NOT_ASKED else None,
                      bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    for i in sorted(range(len(values)), key=lambda i: values[i]):  # the best on top
        axes.plot(range(len(columns)), [column[i] for column in placed], color=_LINES(norm(values[i])), lw=1.3,
                  alpha=0.85, zorder=2)
    axes.set_xticks(range(len(columns)), [name for name, _ in columns], rotation=20, ha="right", fontsize=8)
    axes.set_yticks([])
    axes.set_xlim(-0.1, len(columns) - 0.4)
    axes.set_ylim(_NOT_ASKED_AT - 0.06, 1.06)
    for side in axes.spines.values():
        side.set_visible(False)
    figure.colorbar(ScalarMappable(norm, _LINES), ax=axes, label=objective, fraction=0.03, pad=0.01)
    return _svg(figure)
