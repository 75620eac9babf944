"""Whether two runs of the same grid predicted the same: every finished evaluation run of an experiment in store A is
matched to the run of the same name in store B, and their predictions are compared example by example (the check
behind "0 predictions changed" after a refactor or a speed-up: run the grid before and after into two stores).

    python benchmarks/compare_predictions.py sqlite:///before.db sqlite:///after.db [--experiment quick]

Prints one line per run that differs (with how many examples), then the totals; exits 1 when any prediction differs
or a run is missing on one side.
"""

from __future__ import annotations

import argparse
import sys

from mlflow.tracking import MlflowClient

from reports.store import read_predictions
from reports.vocabulary import EVAL_KIND, KIND_TAG


def predictions_by_run(uri: str, experiment: str) -> dict[str, dict[str, str]]:
    """Run name -> {example id: prediction} of the experiment's newest finished evaluation run of each name."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        sys.exit(f"{uri}: no experiment '{experiment}'")
    runs = client.search_runs([found.experiment_id], f"tags.`{KIND_TAG}` = '{EVAL_KIND}' and "
                              "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"],
                              max_results=50000)
    by_name = {}
    for run in runs:
        rows = read_predictions(client, run.info.run_id) or []
        by_name[run.info.run_name] = {str(r["id"]): str(r["prediction"]) for r in rows}
    return by_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--experiment", default="quick")
    args = parser.parse_args()
    before, after = (predictions_by_run(uri, args.experiment) for uri in (args.before, args.after))
    differing = examples = changed = 0
    for name in sorted(before.keys() | after.keys()):
        if name not in before or name not in after:
            print(f"{name}: only in {'before' if name in before else 'after'}")
            differing += 1
            continue
        a, b = before[name], after[name]
        diff = sum(a.get(i) != b.get(i) for i in a.keys() | b.keys())
        examples += len(a)
        changed += diff
        if diff:
            differing += 1
            print(f"{name}: {diff} of {len(a)} predictions differ")
    print(f"{len(before)} runs before, {len(after)} after; {examples} predictions compared, {changed} differ; "
          f"{differing} run(s) differ or are missing")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
