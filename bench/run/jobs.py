"""What each kind of job does: call the runners that compute, and turn what they return into a `JobResult` for the
recorder. A kind is one registration in `KINDS` (its record type, how to perform it, whether it leaves an output
folder, what its progress counts, how many evaluation examples it predicts); the executor knows nothing else about
it.

A job reads what its dependencies produced through `JobContext.output_of` (the local cache, or the dependency's
MLflow run on another machine), and writes its own output into the staging folder it is given.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bench.plan.cost import Cost, estimate
from bench.plan.datasets import Dataset, DatasetCache
from bench.plan.identity import identity_hash
from bench.plan.reasoning_corpora import load_corpus, rgen_mixture
from bench.plan.specs import Job, ReasoningsSpec, RelabelSpec, RGenSpec, RunSpec, TrainSpec
from bench.run.executor import JobCallbacks, JobProgress, OnLog, OnPartial
from bench.run.metrics import classification_report, metric_key
from bench.run.recorder import DatasetLog, JobResult, TrainedModel
from bench.run.workspace import Workspace, cached_array, per_example
from reports.vocabulary import PREDICTIONS_ARTIFACT
from runners.batching import Batching
from strategies.demos import PoolEmbeddings
from strategies.example import Example
from strategies.prompts import UNCERTAIN, PromptBuilder
from strategies.reasoning import category_name, classification_question, mask_label_words, reasoning_stats
from strategies.templates import registry_prompt

if TYPE_CHECKING:
    from runners.embeddings import SentenceEncoder
    from runners.inference import OnProgress

REASONINGS, CONFIDENCES = "reasonings.json", "confidences.json"
ROUND = 50  # evaluation examples per round: after each, an observer (a search's pruner) sees the results so far;
# with no observer, a run is one round (its batches then split by tokens alone)


class ModelPool:
    """Loaded models for inference, keyed by (folder, dtype, trained stages): the last one stays loaded, so the
    evaluations of one trained model, which the graph orders back to back, load it once."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model = None

    def get(self, folder: Path, dtype: str, stages: list[Path]):
        from runners.models import load_model

        key = (folder, dtype, tuple(stages))
        if key != self._key:
            self.clear()  # free the previous model before loading the next
            self._model, self._key = load_model(folder, dtype, stages), key
        return self._model

    def clear(self) -> None:
        self._key = self._model = None


@dataclass
class JobContext:
    """What a running job may use: the cache, the datasets and models of this worker, how to batch forward passes,
    its dependencies' outputs, and its progress and curve sinks."""

    workspace: Workspace
    datasets: DatasetCache
    models: ModelPool
    batching: Batching
    output_of: Callable[[Job], Path]
    on_progress: JobProgress = lambda done, total: None
    on_log: OnLog = lambda metrics, step: None
    on_partial: OnPartial | None = None
    encoders: dict[Path, SentenceEncoder] = field(default_factory=dict)  # sentence encoders this worker loaded

    def dataset(self, job: RunSpec | TrainSpec | ReasoningsSpec | RelabelSpec) -> Dataset:
        return self.datasets.get(job.dataset.config)

    def pool_embeddings(self, spec: RunSpec, dataset: Dataset) -> PoolEmbeddings | None:
        """The demo pool's embeddings under the spec's retriever (dense-K; None for other strategies): computed once
        per (retriever, pool contents) on this machine and cached on disk, the encoder loaded once per worker."""
        if spec.retriever is None:
            return None
        from runners.embeddings import SentenceEncoder
        from runners.model_registry import EMBEDDING

        folder = self.workspace.model(spec.retriever, EMBEDDING)
        if folder not in self.encoders:
            self.encoders[folder] = SentenceEncoder(folder)
        encoder = self.encoders[folder]
        identity = json.dumps([spec.retriever, spec.retriever_revision, spec.dataset.content])
        key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        vectors = cached_array(self.workspace.embeddings(key),
                               lambda: encoder.documents([e.text for e in dataset.pool]))
        return PoolEmbeddings(vectors, encoder.queries)


def stages(train: TrainSpec | None) -> list[TrainSpec]:
    """The training stages to apply, in order: the warm-up (if any), then the stage itself."""
    if train is None:
        return []
    return [*stages(train.warmup()), train]


def _stage_folders(train: TrainSpec | None, ctx: JobContext) -> list[Path]:
    return [ctx.output_of(t) for t in stages(train)]


def _training_examples(job: TrainSpec | ReasoningsSpec | RelabelSpec, ctx: JobContext) -> list[Example]:
    from runners.train_common import training_examples

    return training_examples(ctx.dataset(job).pool, job.n_train, job.seed)


def counted(progress: JobProgress, total: int) -> OnProgress:
    """A runner's progress (so many more units done) as the job's (done, total) of `total` units."""
    done = 0.0

    def advance(n: float) -> None:
        nonlocal done
        done = round(done + n, 6)  # fractions of a generating batch add up to its rows
        progress(done, total)

    return advance


def evaluation_examples(spec: RunSpec, datasets: DatasetCache) -> list[Example]:
    """The examples an evaluation predicts: its split, cut to its limit by its seeded sample."""
    return datasets.get(spec.dataset.config).evaluation(spec.eval.split, spec.eval.limit, spec.eval.sample_seed)


def round_order(n: int, sample_seed: int) -> list[int]:
    """The order an evaluation goes through its `n` examples: seeded and shuffled, so every prefix is a fair
    sample (what a pruner judges a trial on), and the same for every run on the same examples."""
    return random.Random(f"rounds:{sample_seed}").sample(range(n), n)


def evaluate(spec: RunSpec, ctx: JobContext, out: Path | None) -> JobResult:
    """Predict the evaluation examples under the spec's strategy (or its classical baseline) and score them; the
    run's phases (`runners/phases.py`) are among its metrics."""
    from runners.baselines import BASELINES
    from runners.phases import Phases
    from runners.predict import DecodeSettings, Predictor

    phases, started = Phases(), time.perf_counter()
    with phases("load"):
        dataset = ctx.dataset(spec)
        examples = evaluation_examples(spec, ctx.datasets)
    if spec.baseline:
        with phases("score"):
            predictions = BASELINES[spec.baseline].predict(dataset.card, dataset.pool, examples, spec.seed)
        ctx.on_progress(len(examples), len(examples))
    else:
        with phases("load"):
            lm = ctx.models.get(ctx.workspace.model(spec.model), spec.dtype, _stage_folders(spec.train, ctx))
            builder = PromptBuilder(dataset.card, spec.strategy, dataset.pool, spec.seed,
                                    ctx.pool_embeddings(spec, dataset))
        predict = Predictor(lm, builder, DecodeSettings(ctx.batching, spec.max_new_tokens, spec.seed), phases)
        progress = counted(ctx.on_progress, len(examples))
        predictions: list = [None] * len(examples)
        order = round_order(len(examples), spec.eval.sample_seed)
        size = ROUND if ctx.on_partial is not None else len(order)  # rounds only where an observer reads them
        for start in range(0, len(order), size):  # a seeded shuffled order, so every prefix is a fair sample
            chunk = order[start:start + size]
            predict([examples[i] for i in chunk], progress)
            for i, prediction in zip(order, predict.so_far()):  # batch calibration decides all again each round
                predictions[i] = prediction
            if ctx.on_partial is not None:
                ctx.on_partial([predictions[i].label == examples[i].label for i in order[:start + len(chunk)]])
    with phases("metrics"):
        report = classification_report([e.label for e in examples], [p.label for p in predictions],
                                        [c.value for c in dataset.card.categories])
        table = pd.DataFrame({
            "id": [e.id for e in examples], "text": [e.text for e in examples], "gold": [e.label for e in examples],
            "prediction": [p.label for p in predictions], "raw_output": [p.raw_output for p in predictions],
            "candidate_scores": [p.candidate_scores for p in predictions],
            "calibrated_scores": [p.calibrated_scores for p in predictions],
        })
        figure = _confusion_figure(report, spec.name)
    wall = time.perf_counter() - started
    metrics = report.metrics | phases.metrics() | {
        "wall_time_s": wall, "examples_per_s": len(examples) / wall if wall else 0.0,
        "prompt_tokens_mean": sum(p.prompt_tokens for p in predictions) / len(examples),
        "data_skipped_rows": float(dataset.skipped_rows),
    }
    for label, scores in report.per_class.items():
        metrics |= {f"{name}.{metric_key(label)}": value for name, value in scores.items() if name != "support"}
    evaluation = DatasetLog(pd.DataFrame({"text": table["text"], "label": table["gold"]}), spec.dataset.content,
                            f"{spec.dataset.name}:{spec.eval.split}", "evaluation")
    return JobResult(metrics, tables={PREDICTIONS_ARTIFACT: table}, documents={"per_class.json": report.per_class},
                     figures={"confusion_matrix.png": figure}, datasets=[evaluation],
                     uses_model=spec.train.key if spec.train else None,
                     prompt=None if spec.baseline else registry_prompt(spec.strategy.template, dataset.card.language),
                     summary=f"accuracy {metrics['accuracy']:.3f}, macro_f1 {metrics['macro_f1']:.3f} "
                             f"({wall:.1f} s)")


def _confusion_figure(report, title: str):
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.45 * len(report.matrix_labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing CJK glyphs in the default font
        ConfusionMatrixDisplay(report.confusion, display_labels=report.matrix_labels).plot(
            ax=axes, xticks_rotation="vertical", colorbar=False, include_values=len(report.matrix_labels) <= 20)
        axes.set_title(title, fontsize=9)
        figure.tight_layout()
    plt.close(figure)
    return figure


def _summary(stage: str, logger, cost, n_train: int) -> dict[str, float]:
    """A stage's summary metrics: cost, final loss/reward/KL, and the number of training examples."""
    final = {f"{stage}.final_{k}": v for k, v in logger.last.items() if k in ("loss", "reward", "kl")}
    return cost.metrics("train_") | final | {"n_train": float(n_train)}


def _trained(summary: dict[str, float], out: Path, result: JobResult, spec: TrainSpec | RGenSpec,
             ctx: JobContext) -> JobResult:
    """A training stage's result: its summary, its output (the adapter) and the model it makes, to log in MLflow."""
    earlier = _stage_folders(spec.warmup(), ctx) if isinstance(spec, TrainSpec) else []
    kind = "full fine-tune" if spec.lora.full_finetune else "LoRA adapter"
    result.model = TrainedModel(ctx.workspace.model(spec.model), earlier, spec.key, spec.model_name,
                                spec.register_model, f"genclsbench {spec.name}: {kind} (job {spec.key})")
    result.metrics |= summary
    result.output = out
    result.summary = f"{summary['train_wall_time_s']:.0f} s, {summary['train_tokens_per_s']:.0f} tokens/s"
    return result


def _relabelled(spec: TrainSpec, examples: list[Example], ctx: JobContext, result: JobResult) -> list[str]:
    """SFT labels: gold, or with the least confident fraction set to "uncertain" (the scorers' mean confidence)."""
    from runners.relabel import uncertain_labels

    if spec.relabel is None:
        return [e.label for e in examples]
    per_scorer = [json.loads((ctx.output_of(job) / CONFIDENCES).read_text(encoding="utf-8"))
                  for job in spec.relabels]
    confidence = [sum(scores[e.id] for scores in per_scorer) / len(per_scorer) for e in examples]
    labels = uncertain_labels(examples, confidence, spec.relabel.fraction)
    result.documents["relabel.json"] = {e.id: {"gold": e.label, "confidence": c, "uncertain": label == UNCERTAIN}
                                        for e, c, label in zip(examples, confidence, labels)}
    result.metrics["uncertain_fraction"] = sum(label == UNCERTAIN for label in labels) / len(labels)
    return labels


def _targets(spec: TrainSpec, dataset: Dataset, examples: list[Example], labels: list[str], ctx: JobContext,
             result: JobResult) -> list[str | None]:
    """The reasoning of each SFT target (logged with its length and leakage figures, then masked if asked); none
    where the label was relabelled "uncertain", since the reasoning argues for the gold label."""
    if spec.reasonings is None:
        return [None] * len(examples)
    written = json.loads((ctx.output_of(spec.reasonings) / REASONINGS).read_text(encoding="utf-8"))
    reasonings = [written[e.id] for e in examples]
    names = [category_name(dataset.card, e.label) for e in examples]
    frame = pd.DataFrame({"id": [e.id for e in examples], "text": [e.text for e in examples],
                          "label": [e.label for e in examples], "reasoning": reasonings})
    result.tables["reasonings.json"] = frame
    result.datasets.append(DatasetLog(frame, f"{spec.dataset.content}/{spec.reasonings.key}",
                                      f"{spec.dataset.name}:train+reasonings({spec.reasoner.source})", "reasonings"))
    result.metrics |= {f"reasoning.{k}": v for k, v in reasoning_stats(reasonings, names).items()}
    if spec.mask_labels:
        reasonings = [mask_label_words(r, [c.name for c in dataset.card.categories]) for r in reasonings]
    return [None if label == UNCERTAIN else r for r, label in zip(reasonings, labels)]


def train(spec: TrainSpec, ctx: JobContext, out: Path) -> JobResult:
    """Train this spec's own stage (RL when it has RL, else SFT) on top of its warm-up, into `out`."""
    from runners.rl import train_rl
    from runners.sft import sft_rows, train_sft
    from runners.train_common import StepLogger, load_trainable

    dataset = ctx.dataset(spec)
    examples = _training_examples(spec, ctx)
    frame = pd.DataFrame({"text": [e.text for e in examples], "label": [e.label for e in examples]})
    result = JobResult(datasets=[DatasetLog(frame, spec.dataset.content, f"{spec.dataset.name}:train", "training")])
    builder = PromptBuilder(dataset.card, spec.strategy.prompt, dataset.pool, spec.seed)
    stage = "rl" if spec.strategy.has_rl else "sft"
    logger = StepLogger(f"{stage}.", ctx.on_log, ctx.on_progress)
    warmup = _stage_folders(spec.warmup(), ctx)
    ctx.models.clear()  # the trainee is the only model in memory while it trains
    lm = load_trainable(ctx.workspace.model(spec.model), spec.dtype, warmup)
    if stage == "sft":
        labels = _relabelled(spec, examples, ctx, result)
        targets = _targets(spec, dataset, examples, labels, ctx, result)
        rows = sft_rows(lm, builder, examples, labels, spec.sft.max_length, targets)
        cost = train_sft(lm, rows, spec.sft, spec.lora, spec.seed, out, logger)
    else:
        cost = train_rl(lm, builder, examples, spec.strategy.rl_algo, spec.rl, spec.lora, spec.seed, out, logger)
    return _trained(_summary(stage, logger, cost, len(examples)), out, result, spec, ctx)


def train_rgen(spec: RGenSpec, ctx: JobContext, out: Path) -> JobResult:
    """Stage 1: SFT of the base model on the corpus mixture, (question, answer) -> reasoning."""
    from runners.rgen import rgen_rows
    from runners.sft import train_sft
    from runners.train_common import StepLogger, load_trainable

    corpora = [load_corpus(c.ref, spec.skip_invalid) for c in spec.corpora]
    examples = rgen_mixture(corpora, spec.per_corpus, spec.seed)
    logger = StepLogger("sft.", ctx.on_log, ctx.on_progress)
    ctx.models.clear()
    lm = load_trainable(ctx.workspace.model(spec.model), spec.dtype, [])
    rows, too_long = rgen_rows(lm, examples, spec.sft.max_length, spec.skip_invalid)
    frame = pd.DataFrame({"question": [e.question for e in examples], "answer": [e.answer for e in examples],
                          "reasoning": [e.reasoning for e in examples], "source": [e.where for e in examples]})
    result = JobResult(datasets=[DatasetLog(frame, ",".join(c.identity for c in spec.corpora), "rgen-mixture",
                                            "training", targets="reasoning")])
    cost = train_sft(lm, rows, spec.sft, spec.lora, spec.seed, out, logger)
    result.metrics |= {"rgen.skipped_empty": float(sum(c.skipped for c in corpora)),
                       "rgen.skipped_too_long": float(too_long)}
    return _trained(_summary("sft", logger, cost, len(rows)), out, result, spec, ctx)


def write_reasonings(spec: ReasoningsSpec, ctx: JobContext, out: Path) -> JobResult:
    """Stage 2: the reasoner's reasoning for every training example, given its gold label. Cached per (reasoner,
    dataset, example id) beyond this job, so another training subset writes only the reasonings it lacks."""
    from runners.rgen import write_reasonings as generate_reasonings

    dataset = ctx.dataset(spec)
    examples = _training_examples(spec, ctx)
    reasoner = spec.reasoner

    def write(missing: list[Example]) -> list[str]:
        folders = [ctx.output_of(reasoner.rgen)] if reasoner.rgen else []
        lm = ctx.models.get(ctx.workspace.model(reasoner.model), reasoner.dtype, folders)
        return generate_reasonings(lm, [classification_question(dataset.card, e) for e in missing],
                                   [category_name(dataset.card, e.label) for e in missing], reasoner.max_new_tokens,
                                   ctx.batching, counted(ctx.on_progress, len(missing)))

    cache = ctx.workspace.per_example("reasonings", f"{identity_hash(reasoner)}-{spec.dataset.content}")
    written = dict(zip((e.id for e in examples), per_example(cache, examples, write)))
    (out / REASONINGS).write_text(json.dumps(written, ensure_ascii=False), encoding="utf-8")
    names = [category_name(dataset.card, e.label) for e in examples]
    stats = reasoning_stats([written[e.id] for e in examples], names)
    return JobResult({f"reasoning.{k}": v for k, v in stats.items()}, output=out,
                     summary=f"{len(written)} reasonings, median {stats.get('words_p50', 0):.0f} words")


def score_relabel(spec: RelabelSpec, ctx: JobContext, out: Path) -> JobResult:
    """One scorer's confidence in each training example's gold label (cached per scorer, dataset and dtype beyond
    this job)."""
    from runners.relabel import gold_confidence

    dataset = ctx.dataset(spec)
    examples = _training_examples(spec, ctx)

    def score(missing: list[Example]) -> list[float]:
        lm = ctx.models.get(ctx.workspace.model(spec.scorer), spec.dtype, [])
        confidence = gold_confidence(lm, dataset.card, missing, ctx.batching)
        ctx.on_progress(len(missing), len(missing))
        return confidence

    cache = ctx.workspace.per_example(
        "relabel", f"{spec.scorer}-{spec.model_revision}-{spec.dataset.content}-{spec.dtype}-{spec.prompt_format}")
    confidences = dict(zip((e.id for e in examples), per_example(cache, examples, score)))
    (out / CONFIDENCES).write_text(json.dumps(confidences), encoding="utf-8")
    mean = sum(confidences.values()) / len(confidences)
    return JobResult({"confidence_mean": mean}, output=out, summary=f"mean gold confidence {mean:.3f}")


@dataclass(frozen=True)
class JobKind:
    """A registered kind of job: how to perform it (`(spec, context, output folder or None) -> JobResult`), whether
    it leaves an output folder that later jobs read, what its progress counts, and how many evaluation examples a job
    of it predicts."""

    perform: Callable[[Job, JobContext, Path | None], JobResult]
    has_output: bool
    unit: str
    evaluation_examples: Callable[[Job, DatasetCache], int] = lambda job, datasets: 0


KINDS: dict[str, JobKind] = {
    RunSpec.KIND: JobKind(evaluate, has_output=False, unit="examples",
                          evaluation_examples=lambda spec, datasets: len(evaluation_examples(spec, datasets))),
    TrainSpec.KIND: JobKind(train, has_output=True, unit="steps"),
    RGenSpec.KIND: JobKind(train_rgen, has_output=True, unit="steps"),
    ReasoningsSpec.KIND: JobKind(write_reasonings, has_output=True, unit="examples"),
    RelabelSpec.KIND: JobKind(score_relabel, has_output=True, unit="examples"),
}


class KindPerformer:
    """Performs each job by its registered kind (`KINDS`) in this worker, whose datasets and loaded model are kept
    across jobs (the executor's `Performer`)."""

    def __init__(self, workspace: Workspace, datasets: DatasetCache, batching: Batching) -> None:
        self.workspace, self.datasets, self.batching = workspace, datasets, batching
        self.models = ModelPool()

    def has_output(self, job: Job) -> bool:
        return KINDS[job.KIND].has_output

    def unit(self, job: Job) -> str:
        return KINDS[job.KIND].unit

    def evaluation_examples(self, job: Job) -> int:
        return KINDS[job.KIND].evaluation_examples(job, self.datasets)

    def costs(self, jobs: Sequence[Job]) -> dict[str, Cost]:
        return estimate(jobs, self.datasets, self.workspace.root)

    def __call__(self, job: Job, out: Path | None, callbacks: JobCallbacks) -> JobResult:
        context = JobContext(self.workspace, self.datasets, self.models, self.batching, callbacks.output_of,
                             callbacks.on_progress, callbacks.on_log, callbacks.on_partial)
        return KINDS[job.KIND].perform(job, context, out)
