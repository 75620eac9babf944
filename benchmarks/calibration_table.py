"""The calibration table of an experiment: on every board, each calibrator against a reference calibrator (`none` by
default) with every other dimension equal: accuracy and macro-F1 with their 95% bootstrap intervals, the paired
differences with theirs, McNemar's exact test for accuracy and the paired randomization test for macro-F1, both
Holm-corrected over the calibrators compared within each (board, strategy). The board's own significance column
tests every row against one baseline row; this pairs each calibrated run with its own uncalibrated twin.

    python benchmarks/calibration_table.py --tracking-uri sqlite:///mlflow.db --experiment calibration_robustness \\
        [--reference none] [--template default]

Prints one markdown table (the figures of docs/performance.md).
"""

from __future__ import annotations

import argparse
import os

import polars as pl

from bench.run.workspace import Workspace, default_cache
from reports.analysis import Board, Row, build_boards
from reports.render import markdown_table
from reports.stats import holm, interval, mcnemar, permutation_ps
from reports.store import read_store
from reports.vocabulary import INFER_PREFIX
from strategies.scoring import CALIBRATIONS

CALIBRATION = INFER_PREFIX + "calibration"


def twins(board: Board, template: str) -> dict[tuple, dict[str, Row]]:
    """The board's LLM rows under `template`, grouped by every inference param but the calibration (calibrators in
    registry order)."""
    groups: dict[tuple, dict[str, Row]] = {}
    for row in board.rows:
        if row.kind == "llm" and row.template == template:
            key = tuple(sorted((k, v) for k, v in row.params.items()
                               if k.startswith(INFER_PREFIX) and k != CALIBRATION))
            groups.setdefault(key, {})[row.params[CALIBRATION]] = row
    return {key: {c: rows[c] for c in CALIBRATIONS if c in rows} for key, rows in groups.items()}


def table(boards: list[Board], reference: str, template: str) -> list[dict[str, str]]:
    lines = []
    for board in boards:
        for by_calibration in twins(board, template).values():
            control = by_calibration.get(reference)
            treated = [(name, row) for name, row in by_calibration.items() if name != reference]
            if control is None or not treated:
                continue
            p_acc = holm([mcnemar(row.correct, control.correct) for _, row in treated])
            p_f1 = holm(permutation_ps(board.gold, [row.predicted for _, row in treated], control.predicted,
                                       board.n_classes))
            demos = control.params[INFER_PREFIX + "icl"]
            lines.append({"dataset": board.dataset, "icl": demos, "calibration": reference,
                          "accuracy [95% CI]": control.accuracy.text(), f"Δ acc vs {reference}": "-", "p acc": "-",
                          "macro-F1 [95% CI]": control.macro_f1.text(), f"Δ F1 vs {reference}": "-", "p F1": "-"})
            for (name, row), pa, pf in zip(treated, p_acc, p_f1):
                lines.append({
                    "dataset": board.dataset, "icl": demos, "calibration": name,
                    "accuracy [95% CI]": row.accuracy.text(),
                    f"Δ acc vs {reference}": interval(row.accuracy.value - control.accuracy.value,
                                                      row.acc_replicates - control.acc_replicates).text(signed=True),
                    "p acc": f"{pa:.2g}", "macro-F1 [95% CI]": row.macro_f1.text(),
                    f"Δ F1 vs {reference}": interval(row.macro_f1.value - control.macro_f1.value,
                                                     row.f1_replicates - control.f1_replicates).text(signed=True),
                    "p F1": f"{pf:.2g}"})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="calibration_robustness")
    parser.add_argument("--reference", default="none", help="the calibrator every other is paired with")
    parser.add_argument("--template", default="default", help="the prompt template of the runs compared")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    data = read_store(args.tracking_uri, args.experiment, Workspace(default_cache(dict(os.environ))).report)
    print(markdown_table(pl.DataFrame(table(build_boards(data), args.reference, args.template))))


if __name__ == "__main__":
    main()
