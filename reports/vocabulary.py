"""The names shared by the writers and the readers of the tracking store: tag names, job kinds, artifact names, and the
params a report reads.
It lives with the readers; `bench`, the writer, imports it (arrows point one way). No heavy imports.

Params themselves are derived from the job records (`bench.plan.identity.params`); a test checks that every name listed
here is one they produce.
"""

from __future__ import annotations

HASH_TAG = "genclsbench.hash"  # every job's run: its job key
ATTEMPT_TAG = "genclsbench.attempt"  # every job's run: the job store's attempt that started it (1, 2, ...)
KIND_TAG = "genclsbench.kind"  # one of the job kinds below, or TRIAL_KIND
GRID_TAG = "genclsbench.grid"  # a grid's (or study's) parent run
ERROR_TAG = "genclsbench.error"  # a failed job's reason, one line (the traceback is the artifact error.txt)
ERROR_ARTIFACT = "error.txt"
PREDICTIONS_ARTIFACT = "predictions.json"  # an evaluation's per-example table: id, gold, prediction, raw output...
PRUNED_TAG = "genclsbench.pruned"  # an evaluation a search stopped early: the reason (its run is KILLED)
STUDY_TAG, TRIAL_TAG = "genclsbench.study", "genclsbench.trial"  # a search trial's run: its study and number
TRIAL_STATE_TAG = "genclsbench.trial_state"  # COMPLETE | PRUNED | FAIL | cached
PROMPT_TAG = "genclsbench.prompt"  # an evaluation's run: prompts:/<name>/<version> of its template's wording
OUTPUT_ARTIFACT = "output"  # a job's output folder (trained adapter, reasonings, confidences)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's UI opens an experiment of this kind on its runs
EXPERIMENT_KIND = "custom_model_development"
ENV_TAG_PREFIX = "genclsbench.env."  # + python, torch, ..., commit, device, device_name: what produced the run
RESULT_ENVIRONMENT = ("torch", "transformers", "tokenizers", "trl", "peft", "device")  # those that move results
RUNS_PLANNED = "runs_planned"  # a parent run's metric: the evaluations its latest invocation planned

# job kinds (`bench.plan.specs`: each job record's KIND), and the kind of a search trial's run
EVAL_KIND, TRAIN_KIND, RGEN_KIND = "eval", "train", "rgen"
REASONINGS_KIND, RELABEL_KIND = "reasonings", "relabel"
TRIAL_KIND = "trial"
TRAINED_KINDS = (TRAIN_KIND, RGEN_KIND)  # the kinds that train a model
TRAIN_SECONDS = "train_wall_time_s"  # a trained run's metric; an evaluation's is the sum of its stages'

# params a report reads (all runs of a kind carry the same keys; NONE where a value does not apply)
NONE = "none"
DATASET, MODEL, SEED, DTYPE, BASELINE = "dataset", "model", "seed", "dtype", "baseline"
EVAL_SPLIT, EVAL_LIMIT, EVAL_SAMPLE_SEED = "eval.split", "eval.limit", "eval.sample_seed"
INFER_PREFIX, TRAIN_PREFIX = "infer.", "train."
TRAIN_METHOD, TRAIN_HASH, TRAIN_WARMUP_HASH = "train.method", "train.hash", "train.warmup_hash"
TRAIN_RGEN_HASH, TRAIN_REASONING_SOURCE = "train.reasoner.rgen_hash", "train.reasoning_source"
TRAIN_MASK_LABELS = "train.mask_labels"
INFER_REASONING, TRAIN_REASONING = INFER_PREFIX + "reasoning", TRAIN_PREFIX + "reasoning"
INFER_TEMPLATE = INFER_PREFIX + "template"
REPORT_PARAMS = (DATASET, MODEL, SEED, DTYPE, BASELINE, EVAL_SPLIT, EVAL_LIMIT, EVAL_SAMPLE_SEED, TRAIN_METHOD,
                 TRAIN_HASH, TRAIN_WARMUP_HASH, TRAIN_RGEN_HASH, TRAIN_REASONING_SOURCE, TRAIN_MASK_LABELS,
                 INFER_REASONING, TRAIN_REASONING, INFER_TEMPLATE)
