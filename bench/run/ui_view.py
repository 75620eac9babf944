"""The first view of a grid in MLflow 3.17's UI: a *shared view* of its experiment (an experiment tag the UI reads when
its address names the view's key) that opens the runs table with the metrics and the params that vary among the
grid's evaluations as columns, and the run names wide enough to read; and the address that opens it.

Without it the UI opens on one collapsed parent row with no metric column (and, at the experiment's bare address, on
the GenAI overview). The parent opens expanded by another rule of the UI: it expands the parent of every run tagged
`mlflow.runType=evaluation`, which each evaluation's run carries (`bench.run.recorder`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from bench.plan.specs import RunSpec

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # + key: the UI's shared view of an experiment
RUN_NAME_COLUMN = "attributes.`Run Name`"  # the UI's id of its run name column
RUN_NAME_WIDTH = 300  # pixels: a job's name (dataset/model/training/strategy) reads whole
METRIC_COLUMNS = ("accuracy", "macro_f1")
MAX_PARAM_COLUMNS = 8


def view_key(grid: str) -> str:
    """The key of `grid`'s view (URL-safe, one per grid: grids sharing an experiment vary different params)."""
    return "grid-" + hashlib.sha256(grid.encode()).hexdigest()[:8]


def varying_params(specs: Sequence[RunSpec]) -> list[str]:
    """The params that tell the grid's model evaluations apart (its baselines differ in every strategy param), in
    the order of the params' vocabulary, each telling something the earlier ones do not (`infer.shots` groups the
    runs as `infer.icl` does, so it is left out); hashes left out, they differ wherever anything does."""
    rows = [s.run_params() for s in specs if not s.baseline] or [s.run_params() for s in specs]
    columns, seen = [], set()
    for key in rows[0] if rows else ():
        values = [row[key] for row in rows]
        first = {v: i for i, v in reversed(list(enumerate(values)))}
        grouping = tuple(first[v] for v in values)  # which runs share a value
        if len(first) > 1 and not key.endswith("hash") and grouping not in seen:
            columns.append(key)
            seen.add(grouping)
    return columns[:MAX_PARAM_COLUMNS]


def view_state(params: Sequence[str]) -> str:
    """The view, as the UI stores it: the columns shown (these metrics and `params`) and the run names' width."""
    columns = [f"metrics.`{m}`" for m in METRIC_COLUMNS] + [f"params.`{p}`" for p in params]
    return json.dumps({"selectedColumns": columns, "columnOrder": [RUN_NAME_COLUMN],
                       "columnWidths": {RUN_NAME_COLUMN: RUN_NAME_WIDTH}})


def runs_route(experiment_id: str, grid: str) -> str:
    """The part of the UI's address after the server's that opens the experiment's runs (not the GenAI overview) in
    `grid`'s view."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={view_key(grid)}"
