"""Report charts, drawn by matplotlib and embedded as inline SVG (the HTML needs no network and no files)."""

from __future__ import annotations

import io
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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
    for number, (speed, acc) in enumerate(points, start=1):
        axes.annotate(str(number), (speed, acc), fontsize=7, xytext=(4, 3), textcoords="offset points", zorder=4)
    speeds = [p[0] for p in points if p[0] > 0]
    if len(speeds) == len(points) and speeds:
        axes.set_xscale("log")
        _readable_log_ticks(axes, min(speeds), max(speeds))
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
