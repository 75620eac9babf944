"""A search's page: one self-contained `search.html` (inline CSS and inline SVG charts from
`optuna.visualization.matplotlib`; nothing fetched when it is opened): the optimisation history (the Pareto front
with several objectives), the parameter importances, the parallel coordinates, the best trials and every trial."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reports.pages import html_table, render, trusted  # noqa: E402


@dataclass(frozen=True)
class TrialRow:
    """One trial: its state (COMPLETE, PRUNED, FAIL or cached), objective values (finished ones), accuracy over the
    examples it evaluated before it was pruned, why it failed, the evaluation examples it computed, and its
    seconds."""

    number: int
    state: str
    values: list[float] | None
    spec: str
    params: dict[str, object]
    examples: int
    seconds: float
    partial: float | None = None
    error: str | None = None


@dataclass
class SearchPage:
    """What the page shows (the study itself draws the charts; `lower`: objective i as lower-is-better, the way
    PED-ANOVA reads it)."""

    study: object
    title: str
    setting: str  # space file, storage, objectives, sampler, pruner
    objectives: list[str]
    trials: list[TrialRow]
    best: list[int]
    importances: dict[str, dict[str, float]]
    lower: list[Callable]


def _svg(axes) -> str:
    figure = axes[0].figure if hasattr(axes, "__len__") else axes.figure
    figure.set_size_inches(max(figure.get_size_inches()[0], 7.5), max(figure.get_size_inches()[1], 4.5))
    buffer = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def charts(page: SearchPage) -> list[tuple[str, str]]:
    """(title, inline SVG) of each chart the study can draw now (a chart that needs more trials is left out)."""
    import optuna
    from optuna.visualization import matplotlib as plots

    drawn = []
    objectives = page.objectives
    wanted = []
    if len(objectives) == 1:
        wanted.append(("Optimisation history", lambda: plots.plot_optimization_history(
            page.study, target_name=objectives[0])))
    else:
        wanted.append(("Pareto front", lambda: plots.plot_pareto_front(page.study, target_names=objectives)))
    for objective, lower in zip(objectives, page.lower):
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        wanted.append((f"Parameter importance for {objective} (PED-ANOVA)", lambda o=objective, e=evaluator, f=lower:
                       plots.plot_param_importances(page.study, evaluator=e, target=f, target_name=o)))
    wanted.append(("Parallel coordinates", lambda: plots.plot_parallel_coordinate(
        page.study, target=(lambda t: t.values[0]) if len(objectives) > 1 else None, target_name=objectives[0])))
    for title, draw in wanted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's matplotlib plots are marked experimental
            try:
                drawn.append((title, _svg(draw())))
            except (ValueError, RuntimeError, IndexError, ZeroDivisionError):
                plt.close("all")  # too few finished trials for this chart yet
    return drawn


def _values(values: list[float] | None) -> str:
    return ", ".join(f"{v:.4g}" for v in values) if values else "-"


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ page.title }}</title><style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1300px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left}th{background:#f2f2f2}svg{max-width:100%;height:auto}
</style></head><body>
<h1>{{ page.title }}</h1><p>{{ page.setting }}</p>
<p>Trials: {{ counts or "none yet" }}. A cached trial's spec had finished earlier (a grid or another trial): it cost
nothing. A pruned trial was stopped after some examples, clearly worse than the best trial on the same examples
(Wilcoxon).</p>
<h2>{{ "Pareto front" if page.objectives|length > 1 else "Best trial" }}</h2>{{ best }}
{% for objective, table in importances %}<h2>Parameter importance for {{ objective }} (PED-ANOVA)</h2>{{ table }}
{% endfor %}
{% for title, svg in charts %}<div class="chart"><h2>{{ title }}</h2>{{ svg }}</div>{% endfor %}
<h2>Every trial</h2>{{ trials }}
<script>document.body.dataset.ready = "yes";</script></body></html>
"""


def to_html(page: SearchPage) -> str:
    counts: dict[str, int] = {}
    for trial in page.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    best = [t for t in page.trials if t.number in page.best]
    objectives = ", ".join(page.objectives)
    return render(
        TEMPLATE, page=page, counts=", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        best=html_table(["trial", objectives, "spec", "params"],
                        [[t.number, _values(t.values), t.spec, ", ".join(f"{k}={v}" for k, v in t.params.items())]
                         for t in best]),
        importances=[(objective, html_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in i.items()]))
                     for objective, i in page.importances.items()],
        charts=[(title, trusted(svg)) for title, svg in charts(page)],
        trials=html_table(["trial", "state", objectives, "accuracy when pruned", "examples evaluated", "seconds",
                           "spec"],
                          [[t.number, f"{t.state}: {t.error}" if t.error else t.state, _values(t.values),
                            "-" if t.partial is None else f"{t.partial:.3f}",
                            t.examples, f"{t.seconds:.0f}", t.spec] for t in page.trials]))


def write_search_page(page: SearchPage, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "search.html"
    path.write_text(to_html(page), encoding="utf-8")
    return path
