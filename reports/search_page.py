"""A search's page: one self-contained `search.html` (inline CSS and inline SVG charts, from
`optuna.visualization.matplotlib` and `reports.charts`; nothing fetched when it is opened): the best trials, the
optimisation history (the Pareto front with several objectives), the parameter importances, the parallel
coordinates and every trial. What the page explains (cached, pruned trials) is said only where it happened."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reports.charts import parallel_coordinates  # noqa: E402
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


@dataclass
class Charts:
    """The page's charts, as inline SVG, each None when the study cannot draw it yet (too few finished trials): the
    optimisation history (the Pareto front with several objectives), each objective's parameter importances, and
    the parallel coordinates."""

    history: str | None
    importances: dict[str, str | None]
    parallel: str | None


def _drawn(draw: Callable) -> str | None:
    """An Optuna chart as SVG (None: it cannot be drawn yet); the style it sets for itself stays with it."""
    with warnings.catch_warnings(), plt.style.context("default"):
        warnings.simplefilter("ignore")  # optuna's matplotlib plots are marked experimental
        try:
            return _svg(draw())
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError):
            plt.close("all")  # too few finished trials for this chart yet
            return None


def charts(page: SearchPage) -> Charts:
    """What the study can draw now (see `Charts`); the parallel coordinates from the finished trials (several
    objectives: coloured by the first)."""
    import optuna
    from optuna.visualization import matplotlib as plots

    objectives = page.objectives
    history = _drawn(lambda: plots.plot_optimization_history(page.study, target_name=objectives[0])) \
        if len(objectives) == 1 else _drawn(lambda: plots.plot_pareto_front(page.study, target_names=objectives))
    importances = {objective: _drawn(lambda o=objective, f=lower: plots.plot_param_importances(
        page.study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=f, target_name=o))
        for objective, lower in zip(objectives, page.lower)}
    finished = [t for t in page.trials if t.values]
    return Charts(history, importances, parallel_coordinates([t.params for t in finished],
                                                             [t.values[0] for t in finished], objectives[0]))


def _trusted(svg: str | None):
    """A chart drawn here, put in the page as it is (None: not drawn)."""
    return None if svg is None else trusted(svg)


def _values(values: list[float] | None) -> str:
    return ", ".join(f"{v:.4g}" for v in values) if values else "-"


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ page.title }}</title><style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1300px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left}th{background:#f2f2f2}svg{max-width:100%;height:auto}
</style></head><body>
<h1>{{ page.title }}</h1><p>{{ page.setting }}</p>
<p>Trials: {{ counts or "none yet" }}.{% if "cached" in states %} A cached trial's spec had finished earlier (a grid
or another trial): it cost nothing.{% endif %}{% if "PRUNED" in states %} A pruned trial was stopped after some
examples, clearly worse than the best trial on the same examples (Wilcoxon).{% endif %}</p>
<h2>{{ "Pareto front" if page.objectives|length > 1 else "Best trial" }}</h2>{{ best }}
{% if history %}<div class="chart"><h2>{{ "Pareto front, every trial" if page.objectives|length > 1
else "Optimisation history" }}</h2>{{ history }}</div>{% endif %}
{% for objective, table, svg in importances %}<h2>Parameter importance for {{ objective }} (PED-ANOVA)</h2>{{ table }}
{% if svg %}<div class="chart">{{ svg }}</div>{% endif %}{% endfor %}
{% if parallel %}<div class="chart"><h2>Parallel coordinates</h2><p>One line per finished trial, coloured by
{{ page.objectives[0] }}; "not asked": a parameter that trial's other choices left out.</p>{{ parallel }}</div>
{% endif %}
<h2>Every trial</h2>{{ trials }}
<script>document.body.dataset.ready = "yes";</script></body></html>
"""


def to_html(page: SearchPage) -> str:
    counts: dict[str, int] = {}
    for trial in page.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    best = [t for t in page.trials if t.number in page.best]
    objectives = ", ".join(page.objectives)
    drawn = charts(page)
    return render(
        TEMPLATE, page=page, counts=", ".join(f"{n} {s}" for s, n in sorted(counts.items())), states=set(counts),
        best=html_table(["trial", objectives, "spec", "params"],
                        [[t.number, _values(t.values), t.spec, ", ".join(f"{k}={v}" for k, v in t.params.items())]
                         for t in best]),
        history=_trusted(drawn.history), parallel=_trusted(drawn.parallel),
        importances=[(objective, html_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in i.items()]),
                      _trusted(drawn.importances.get(objective))) for objective, i in page.importances.items()],
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
