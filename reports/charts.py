"""Report charts, drawn by matplotlib and embedded as inline SVG (the HTML needs no network and no files)."""

from __future__ import annotations

import io
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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
    """Accuracy of every (training, inference strategy) cell; None unless the board crosses both."""
    trainings = list(dict.fromkeys(r.training for r in board.rows))
    strategies = list(dict.fromkeys(r.strategy for r in board.rows))
    if len(trainings) < 2 or len(strategies) < 2:
        return None
    cells = {(r.training, r.strategy): r.accuracy.value for r in board.rows}
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


def pareto(board: Board) -> str:
    """Accuracy against evaluation throughput (examples/s, log scale); the Pareto front (no row both faster and
    more accurate) is joined by a line."""
    points = [(r.metrics.get("examples_per_s", 0.0), r.accuracy.value, r.label) for r in board.rows]
    front, best = [], -1.0
    for speed, acc, label in sorted(points, key=lambda p: (-p[0], -p[1])):
        if acc > best:
            front.append((speed, acc))
            best = acc
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    axes.scatter([p[0] for p in points], [p[1] for p in points], s=18, color="tab:blue")
    axes.plot([p[0] for p in front], [p[1] for p in front], color="tab:orange", label="Pareto front")
    for speed, acc, label in points:
        if (speed, acc) in front:
            axes.annotate(label, (speed, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if all(p[0] > 0 for p in points):
        axes.set_xscale("log")
    axes.set_xlabel("evaluation examples / s (higher is cheaper)")
    axes.set_ylabel("accuracy")
    axes.set_title(board.title, fontsize=9)
    axes.legend(fontsize=8)
    return _svg(figure)
