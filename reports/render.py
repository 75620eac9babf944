"""Writing a report: `report.md` and one self-contained `report.html` (inline CSS, inline SVG charts, a few lines of
inline JavaScript to sort tables; nothing fetched when it is opened)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from reports.analysis import Board, Effect, ReferenceDelta, board_frame
from reports.charts import heatmap, pareto
from reports.pages import frame_table, render, trusted
from reports.seeds import SeedSummary
from reports.stats import B_DEFAULT
from reports.templates import TemplateSummary, by_sensitivity, top_rankings

METHOD = (f"Intervals: 95% percentile bootstrap over the evaluation examples ({B_DEFAULT} resamples, shared by every "
          "row of a board, so differences are paired). p acc: exact McNemar test against the board's baseline row; "
          "p F1: paired approximate randomization test (exact, or Monte Carlo until 100 permutations reach the "
          "observed difference, with the normal approximation of the randomization distribution in the far tail, so "
          "no p-value is floored by a permutation count); both Holm-corrected across the rows of the board. "
          "Macro-F1 averages over the classes that occur as gold or as a prediction.")


@dataclass
class Report:
    experiment: str
    store: str
    boards: list[Board]
    effects: list[Effect]
    references: list[ReferenceDelta]
    unfinished: list[str]
    never_started: int = 0
    reasonings: pl.DataFrame | None = None  # see reports.store: written training reasonings, per training run
    seeds: list[SeedSummary] = field(default_factory=list)  # strategies over seeds, where a board has several
    templates: list[TemplateSummary] = field(default_factory=list)  # strategies run under several prompt templates


SEEDS_NOTE = ("Each strategy over its seeds: the mean, the standard deviation across seeds, and a 95% interval "
              "that resamples the seeds and the examples together; Δ is the mean paired accuracy difference from "
              "the board's baseline strategy (seed with seed; a run nothing random touches stands for every seed), "
              "and 'same sign' counts the seeds in which the difference points the way of the mean.")


def seeds_frame(summaries: list[SeedSummary]) -> pl.DataFrame:
    return pl.DataFrame([{
        "board": s.board, "strategy": s.label, "seeds": ",".join(s.seeds),
        "accuracy [95% CI, examples+seeds]": s.accuracy.text(), "sd": f"{s.accuracy_sd:.3f}",
        "macro-F1 [95% CI]": s.macro_f1.text(), "F1 sd": f"{s.macro_f1_sd:.3f}",
        "Δ acc vs baseline [95% CI]": s.vs_baseline.text(signed=True) if s.vs_baseline else "baseline",
        "same sign": (f"{s.same_sign}/{s.pairs}" + (" (every seed)" if s.holds_in_every_seed else ""))
        if s.vs_baseline else "-",
    } for s in summaries])


TEMPLATES_NOTE = ("Each strategy run under several prompt templates (wordings of its instructions): the mean over "
                  "the templates, the lowest and highest with their template, the standard deviation across "
                  "templates, and a 95% interval that resamples the templates and the examples together; Δ is the "
                  "mean paired accuracy difference from the board's baseline strategy, template with template, "
                  "and 'gain flips sign' marks a strategy whose gain is positive under one wording and negative "
                  "under another.")
SENSITIVITY_NOTE = ("Strategies ranked by how much their accuracy moves with the wording (standard deviation across "
                    "templates, largest first), and whether the top strategies keep their order under each template.")


def _by_template(values: dict[str, float], form: str) -> str:
    return ", ".join(f"{t} {v:{form}}" for t, v in values.items())


def _flips(summary: TemplateSummary) -> str:
    return ("yes" if summary.flips else "no") if summary.gains else "-"


def templates_frame(summaries: list[TemplateSummary]) -> pl.DataFrame:
    return pl.DataFrame([{
        "board": s.board, "strategy": s.label, "templates": len(s.accuracy_by_template),
        "accuracy [95% CI, examples+templates]": s.accuracy.text(),
        "lowest": f"{s.lowest[1]:.3f} ({s.lowest[0]})", "highest": f"{s.highest[1]:.3f} ({s.highest[0]})",
        "sd": f"{s.accuracy_sd:.3f}", "macro-F1 [95% CI]": s.macro_f1.text(), "F1 sd": f"{s.macro_f1_sd:.3f}",
        "Δ acc vs baseline [95% CI]": s.vs_baseline.text(signed=True) if s.vs_baseline else "baseline",
        "Δ by template": _by_template(s.gains, "+.3f") if s.gains else "-", "gain flips sign": _flips(s),
    } for s in summaries])


def sensitivity_frame(summaries: list[TemplateSummary]) -> pl.DataFrame:
    return pl.DataFrame([{
        "board": s.board, "strategy": s.label, "sd": f"{s.accuracy_sd:.3f}",
        "range": f"{s.highest[1] - s.lowest[1]:.3f}",
        "accuracy by template": _by_template(s.accuracy_by_template, ".3f"), "gain flips sign": _flips(s),
    } for s in by_sensitivity(summaries)])


def ranking_lines(summaries: list[TemplateSummary]) -> list[str]:
    """Per board: its top strategies by mean accuracy, and under how many templates they lead in that order."""
    lines = []
    for ranking in top_rankings(summaries):
        others = "; ".join(f"{t}: {' > '.join(top)}" for t, top in ranking.by_template.items() if t not in ranking.kept)
        lines.append(f"{ranking.board}: top {len(ranking.by_mean)} by mean accuracy {' > '.join(ranking.by_mean)}; "
                     f"the same order under {len(ranking.kept)} of {len(ranking.by_template)} templates"
                     + (f" ({', '.join(ranking.kept)})" if ranking.kept else "") + (f"; {others}" if others else ""))
    return lines


def effects_frame(effects: list[Effect]) -> pl.DataFrame:
    return pl.DataFrame([{
        "dimension": e.dimension, "value": e.value, "vs reference": e.reference, "pairs": e.pairs,
        "Δ accuracy [95% CI]": e.accuracy.text(signed=True), "Δ macro-F1 [95% CI]": e.macro_f1.text(signed=True),
    } for e in effects], schema=["dimension", "value", "vs reference", "pairs", "Δ accuracy [95% CI]",
                                 "Δ macro-F1 [95% CI]"])


def references_frame(references: list[ReferenceDelta]) -> pl.DataFrame:
    return pl.DataFrame([{
        "claim": r.reference.claim, "paper": f"{r.reference.source}: {r.reference.setting}",
        "paper Δ (points)": "-" if r.reference.delta_points is None else f"{r.reference.delta_points:+.2f}",
        "measured Δ (points) [95% CI]": r.measured.text(signed=True, digits=1),
        "p (McNemar, Holm)": f"{r.p_value:.3g}",
        "comparison": f"{r.treatment} vs {r.control}",
        "board": r.board,
    } for r in references], schema=["claim", "paper", "paper Δ (points)", "measured Δ (points) [95% CI]",
                                    "p (McNemar, Holm)", "comparison", "board"])


REASONINGS_NOTE = ("Reasonings written for the training examples (two-stage reasoning): length in words, the share "
                   "that came out empty, and leakage = the share that names the gold label verbatim.")


def reasonings_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("n").cast(pl.Int64), pl.col("empty_rate", "leakage_rate").round(3)).rename(
        {"n": "examples", "words_p50": "words median", "words_p90": "words p90", "words_max": "words max",
         "empty_rate": "empty", "leakage_rate": "leakage"})


def leaderboard(board: Board) -> pl.DataFrame:
    """The board's frame as the report shows it: without a column no row says anything in (`training` all `none`
    and `train s` all `-` when nothing was trained)."""
    frame = board_frame(board)
    return frame.select([c for c in frame.columns if not frame[c].is_in(["none", "-"]).all()])


def markdown_table(frame: pl.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def _intro(report: Report) -> list[str]:
    runs = sum(len(b.rows) for b in report.boards)
    lines = [f"Experiment `{report.experiment}` in `{report.store}`: {runs} finished evaluation runs on "
             f"{len(report.boards)} board(s); generated {time.strftime('%Y-%m-%d %H:%M')}."]
    if report.unfinished:
        lines.append(f"Not finished (not reported): {len(report.unfinished)} run(s): "
                     f"{', '.join(report.unfinished[:10])}{' ...' if len(report.unfinished) > 10 else ''}. "
                     "Re-run `bench run` on the grid to finish them.")
    if report.never_started:
        lines.append(f"The latest `bench run` of this experiment planned {report.never_started} more run(s) that "
                     "never started (interrupted?); re-run the grid to do them.")
    return lines


def to_markdown(report: Report) -> str:
    parts = [f"# genclsbench report: {report.experiment}", "", *_intro(report), "", METHOD, ""]
    for board in report.boards:
        baseline = board.baseline.label if board.baseline else "none"
        parts += [f"## {board.title}", "", f"Baseline row: `{baseline}`.", "", markdown_table(leaderboard(board)), ""]
        parts += [f"- {note}" for note in board.notes] + ([""] if board.notes else [])
    parts += ["## Strategy effects", "", "Mean paired gain of each value over the dimension's reference value, "
              "all other dimensions equal (where they apply).", ""]
    parts += [markdown_table(effects_frame(report.effects)) if report.effects else "No pairs of runs differ in "
              "exactly one dimension.", ""]
    if report.seeds:
        parts += ["## Across seeds", "", SEEDS_NOTE, "", markdown_table(seeds_frame(report.seeds)), ""]
    if report.templates:
        parts += ["## Across templates", "", TEMPLATES_NOTE, "", markdown_table(templates_frame(report.templates)), "",
                  "## Prompt sensitivity", "", SENSITIVITY_NOTE, "",
                  markdown_table(sensitivity_frame(report.templates)), "",
                  *[f"- {line}" for line in ranking_lines(report.templates)], ""]
    if report.references:
        parts += ["## Reference deltas from the papers", "", "The papers' numbers come from other models and data "
                  "sizes; they are context, not targets.", "", markdown_table(references_frame(report.references)), ""]
    if report.reasonings is not None:
        parts += ["## Training reasonings", "", REASONINGS_NOTE, "",
                  markdown_table(reasonings_frame(report.reasonings)), ""]
    return "\n".join(parts)


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genclsbench report: {{ r.experiment }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;white-space:nowrap}
th{background:#f2f2f2;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" ▲"} th.sorted-desc::after{content:" ▼"}
tr.baseline td{background:#fff7d6} .charts{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.charts svg{max-width:100%;height:auto} .note{color:#666}
</style></head><body data-rows="{{ rows }}">
<h1>genclsbench report: {{ r.experiment }}</h1>
{% for line in intro %}<p>{{ line }}</p>{% endfor %}
<p class="note">{{ method }}</p>
{% for b in boards %}
<h2>{{ b.title }}</h2><p>Baseline row: <code>{{ b.baseline }}</code>. Click a column to sort.</p>
{{ b.table }}
{% for note in b.notes %}<p class="note">{{ note }}</p>{% endfor %}
<div class="charts">{{ b.pareto }}{{ b.heatmap }}</div>
{% endfor %}
<h2>Strategy effects</h2><p>Mean paired gain of each value over the dimension's reference value, all other
dimensions equal (where they apply).</p>{{ effects }}
{% if seeds %}<h2>Across seeds</h2><p>{{ seeds_note }}</p>{{ seeds }}{% endif %}
{% if templates %}<h2>Across templates</h2><p>{{ templates_note }}</p>{{ templates }}
<h2>Prompt sensitivity</h2><p>{{ sensitivity_note }}</p>{{ sensitivity }}
<ul>{% for line in rankings %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% if references %}<h2>Reference deltas from the papers</h2><p>The papers' numbers come from other models and data
sizes; they are context, not targets.</p>{{ references }}{% endif %}
{% if reasonings %}<h2>Training reasonings</h2><p>{{ reasonings_note }}</p>{{ reasonings }}{% endif %}
<script>
window.addEventListener("error", e => {
  document.body.dataset.errors = (document.body.dataset.errors || "") + e.message;
});
function key(text) { const n = parseFloat(text); return isNaN(n) ? text : n; }
document.querySelectorAll("table.sortable").forEach(table => {
  table.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const descending = !th.classList.contains("sorted-desc");
    table.querySelectorAll("th").forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
    th.classList.add(descending ? "sorted-desc" : "sorted-asc");
    rows.sort((a, b) => {
      const x = key(a.cells[column].textContent), y = key(b.cells[column].textContent);
      return (x > y ? 1 : x < y ? -1 : 0) * (descending ? -1 : 1);
    });
    rows.forEach(row => body.appendChild(row));
  }));
});
document.body.dataset.ready = "yes";
</script></body></html>
"""


def to_html(report: Report) -> str:
    boards = []
    for board in report.boards:
        index = board.rows.index(board.baseline) if board.baseline else None
        boards.append({"title": board.title, "baseline": board.baseline.label if board.baseline else "none",
                       "table": frame_table(leaderboard(board), index), "notes": board.notes,
                       "pareto": trusted(pareto(board)), "heatmap": trusted(heatmap(board) or "")})
    return render(
        TEMPLATE, r=report, intro=_intro(report), method=METHOD, boards=boards,
        rows=sum(len(b.rows) for b in report.boards), effects=frame_table(effects_frame(report.effects)),
        references=frame_table(references_frame(report.references)) if report.references else "",
        reasonings=frame_table(reasonings_frame(report.reasonings)) if report.reasonings is not None else "",
        reasonings_note=REASONINGS_NOTE, seeds=frame_table(seeds_frame(report.seeds)) if report.seeds else "",
        seeds_note=SEEDS_NOTE,
        templates=frame_table(templates_frame(report.templates)) if report.templates else "",
        templates_note=TEMPLATES_NOTE, sensitivity_note=SENSITIVITY_NOTE,
        sensitivity=frame_table(sensitivity_frame(report.templates)) if report.templates else "",
        rankings=ranking_lines(report.templates),
    )


def write_report(report: Report, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(report), encoding="utf-8")
    page.write_text(to_html(report), encoding="utf-8")
    return md, page
