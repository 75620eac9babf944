"""Train once, evaluate many: the trained model of a TrainSpec comes from the disk cache, else from an earlier MLflow
training run, else it is trained now (its SFT warm-up first) and logged. Every evaluation sharing the spec reuses it.

A trained stage lives in `<cache>/trained/<train hash>/` (a PEFT adapter, or a full model with full_finetune),
written beside its final place and renamed when complete, so an interrupted job never leaves a half stage.

Two-stage reasoning: a recipe whose SFT targets carry reasonings first gets them from `ensure_reasonings`
(`<cache>/reasonings/<reasoner hash>/<dataset>.json`, one entry per example id, filled only where missing), which
trains the reasoning generator R-Gen once (a stage like any other, with its own MLflow training run) when the
reasoner is R-Gen.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bench.datasets import Dataset, DatasetCache
from bench.reasoning_corpora import load_corpus, rgen_mixture
from bench.runspec import RunSpec
from bench.tracking import Tracker
from bench.trainspec import ReasonerSpec, RGenSpec, TrainSpec
from runners.models import build_once, cache_dir, load_model
from runners.relabel import gold_confidence, uncertain_labels
from runners.rgen import rgen_rows, write_reasonings
from runners.rl import train_rl
from runners.sft import sft_rows, train_sft
from runners.train_common import Cost, StepLogger, load_trainable, training_examples
from strategies.example import Example
from strategies.prompts import UNCERTAIN, PromptBuilder
from strategies.reasoning import category_name, classification_question, mask_label_words, reasoning_stats

COMPLETE = "genclsbench_stage.json"  # written last into a stage folder: its presence means the stage is usable


def stage_folder(spec: TrainSpec | RGenSpec) -> Path:
    return cache_dir() / "trained" / spec.key()


def is_trained(spec: TrainSpec | RGenSpec) -> bool:
    """The disk cache holds the complete stage of `spec`."""
    return (stage_folder(spec) / COMPLETE).is_file()


def training_jobs(specs: Sequence[RunSpec]) -> tuple[list[TrainSpec | RGenSpec], int]:
    """The training jobs `specs` need (R-Gens and warm-ups included, each once) and how many the disk cache
    already holds."""
    jobs = {t.key(): t for s in specs if s.train
            for t in (s.train.reasoner and s.train.reasoner.rgen, s.train.warmup(), s.train) if t}
    return list(jobs.values()), sum(is_trained(t) for t in jobs.values())


def _write_json(path: Path, data: object) -> None:
    """Write beside `path`, then rename: a cache file is whole or absent, never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps(data))
    os.replace(staging, path)


@dataclass
class TrainingContext:
    """What training jobs need from the grid run: data, tracking, the scoring batch size and a progress hook."""

    datasets: DatasetCache
    tracker: Tracker
    batch_size: int
    on_step: Callable[[str, int, int], None]  # (job name, step, max steps)
    report: Callable[[str], None]  # one line per finished training job


def ensure_trained(spec: TrainSpec, ctx: TrainingContext) -> list[Path]:
    """The stage folders to load, in order (warm-up first); trains and logs only what no cache holds yet."""
    warmup = spec.warmup()
    chain = ensure_trained(warmup, ctx) if warmup else []

    def build(staging: Path) -> None:
        if ctx.tracker.download_trained(spec.key(), staging):
            return
        reasonings = _reasonings(spec, ctx) if spec.reasoner and not spec.strategy.has_rl else None  # own runs
        _train_logged(spec, staging, ctx, ctx.tracker.train_run(spec),
                      lambda out: _train_stage(spec, chain, out, ctx, reasonings))

    return [*chain, build_once(stage_folder(spec), COMPLETE, build)]


def ensure_rgen(spec: RGenSpec, ctx: TrainingContext) -> Path:
    """Stage 1: the reasoning generator's adapter, from the disk cache, an earlier run, or trained now."""
    def build(staging: Path) -> None:
        if not ctx.tracker.download_trained(spec.key(), staging):
            _train_logged(spec, staging, ctx, ctx.tracker.rgen_run(spec), lambda out: _train_rgen(spec, out, ctx))

    return build_once(stage_folder(spec), COMPLETE, build)


def _train_logged(spec: TrainSpec | RGenSpec, staging: Path, ctx: TrainingContext, run: AbstractContextManager,
                  train: Callable[[Path], dict[str, float]]) -> None:
    """Train into `staging` inside the training run `run`, then mark the stage complete and log it."""
    with run:
        summary = train(staging)
        (staging / COMPLETE).write_text(json.dumps(summary | {"train_hash": spec.key()}, indent=1))
        ctx.tracker.log_trained(summary, staging)
    ctx.report(f"trained {spec.run_name} ({summary['train_wall_time_s']:.0f} s, "
               f"{summary['train_tokens_per_s']:.0f} tokens/s)")


def _per_example(cache: Path, examples: Sequence[Example], compute: Callable[[list[Example]], Sequence]) -> list:
    """One value per example from a JSON cache keyed by example id: `compute` runs on the missing examples only, and
    the cache is rewritten atomically with what it returns."""
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    missing = [e for e in examples if e.id not in known]
    if missing:
        known |= dict(zip((e.id for e in missing), compute(missing)))
        _write_json(cache, known)
    return [known[e.id] for e in examples]


def ensure_reasonings(reasoner: ReasonerSpec, dataset: Dataset, examples: Sequence[Example],
                      ctx: TrainingContext) -> list[str]:
    """Stage 2: the reasoner's reasoning for every (example, gold label), cached by (reasoner hash, dataset, example
    id), so a re-run, or another recipe with the same reasoner, writes only the ones it lacks."""
    def write(missing: list[Example]) -> list[str]:
        stages = [ensure_rgen(reasoner.rgen, ctx)] if reasoner.rgen else []
        lm = load_model(reasoner.model, reasoner.dtype, stages)
        job, done = f"reasonings ({reasoner.source}) {dataset.name}", [0]

        def progress(n: int) -> None:
            done[0] += n
            ctx.on_step(job, done[0], len(missing))

        return write_reasonings(lm, [classification_question(dataset.card, e) for e in missing],
                                [category_name(dataset.card, e.label) for e in missing], reasoner.max_new_tokens,
                                ctx.batch_size, progress)

    cache = cache_dir() / "reasonings" / reasoner.key() / f"{dataset.identity.replace('/', '__')}.json"
    return _per_example(cache, examples, write)


def _reasonings(spec: TrainSpec, ctx: TrainingContext) -> list[str]:
    dataset = ctx.datasets.get(spec.dataset)
    return ensure_reasonings(spec.reasoner, dataset, training_examples(dataset.pool, spec.n_train, spec.seed), ctx)


def _relabelled(spec: TrainSpec, examples: list[Example], ctx: TrainingContext) -> list[str]:
    """SFT labels: gold, or with the least confident fraction set to "uncertain" (confidences cached per scorer)."""
    if spec.relabel is None:
        return [e.label for e in examples]
    dataset = ctx.datasets.get(spec.dataset)
    per_scorer = []
    for scorer in spec.relabel.scorers:
        model = spec.model if scorer == "base" else scorer
        cache = cache_dir() / "relabel" / f"{model.replace('/', '__')}-{spec.dataset_identity}-{spec.dtype}.json"
        per_scorer.append(_per_example(cache, examples, lambda missing, model=model: gold_confidence(
            load_model(model, spec.dtype), dataset.card, missing, ctx.batch_size)))
    confidence = [sum(c) / len(c) for c in zip(*per_scorer)]
    labels = uncertain_labels(examples, confidence, spec.relabel.fraction)
    ctx.tracker.log_relabel({e.id: {"gold": e.label, "confidence": c, "uncertain": label == UNCERTAIN}
                             for e, c, label in zip(examples, confidence, labels)})
    return labels


def _step_logger(stage: str, job: str, ctx: TrainingContext) -> StepLogger:
    return StepLogger(f"{stage}.", ctx.tracker.log_step, lambda step, total: ctx.on_step(job, step, total))


def _summary(stage: str, logger: StepLogger, cost: Cost, n_train: int) -> dict[str, float]:
    """A stage's summary metrics: cost, final loss/reward/KL, and the number of training examples."""
    final = {f"{stage}.final_{k}": v for k, v in logger.last.items() if k in ("loss", "reward", "kl")}
    return cost.metrics("train_") | final | {"n_train": float(n_train)}


def _train_rgen(spec: RGenSpec, out: Path, ctx: TrainingContext) -> dict[str, float]:
    """SFT of the base model on the corpus mixture, (question, answer) -> reasoning."""
    corpora = [load_corpus(ref, spec.skip_invalid) for ref, _ in spec.corpora]
    examples = rgen_mixture(corpora, spec.per_corpus, spec.seed)
    logger = _step_logger("sft", spec.run_name, ctx)
    lm = load_trainable(spec.model, spec.dtype, [])
    rows, too_long = rgen_rows(lm, examples, spec.sft.max_length, spec.skip_invalid)
    ctx.tracker.log_rgen_data(spec, examples)
    cost = train_sft(lm, rows, spec.sft, spec.lora, spec.seed, out, logger)
    return _summary("sft", logger, cost, len(rows)) | {
        "rgen.skipped_empty": float(sum(c.skipped for c in corpora)), "rgen.skipped_too_long": float(too_long)}


def _targets(spec: TrainSpec, dataset: Dataset, examples: list[Example], labels: list[str],
             reasonings: list[str] | None, ctx: TrainingContext) -> list[str | None]:
    """The reasoning of each SFT target (logged with its length and leakage figures, then masked if asked); none
    where the label was relabelled "uncertain", since the reasoning argues for the gold label."""
    if reasonings is None:
        return [None] * len(examples)
    names = [category_name(dataset.card, e.label) for e in examples]
    ctx.tracker.log_reasonings(spec, examples, reasonings, reasoning_stats(reasonings, names))
    if spec.mask_labels:
        reasonings = [mask_label_words(r, [c.name for c in dataset.card.categories]) for r in reasonings]
    return [None if label == UNCERTAIN else r for r, label in zip(reasonings, labels)]


def _train_stage(spec: TrainSpec, chain: list[Path], out: Path, ctx: TrainingContext,
                 reasonings: list[str] | None) -> dict[str, float]:
    """Train this spec's own stage (RL when it has RL, else SFT) on top of `chain`; return its summary metrics."""
    dataset = ctx.datasets.get(spec.dataset)
    examples = training_examples(dataset.pool, spec.n_train, spec.seed)
    ctx.tracker.log_training_data(spec, examples)
    builder = PromptBuilder(dataset.card, spec.strategy.prompt, dataset.pool, spec.seed)
    stage = "rl" if spec.strategy.has_rl else "sft"
    logger = _step_logger(stage, spec.run_name, ctx)
    labels = _relabelled(spec, examples, ctx) if stage == "sft" else []  # scorers load before the trainee
    lm = load_trainable(spec.model, spec.dtype, chain)
    if stage == "sft":
        targets = _targets(spec, dataset, examples, labels, reasonings, ctx)
        rows = sft_rows(lm, builder, examples, labels, spec.sft.max_length, targets)
        cost = train_sft(lm, rows, spec.sft, spec.lora, spec.seed, out, logger)
        extra = {"uncertain_fraction": sum(label == UNCERTAIN for label in labels) / len(labels)}
    else:
        cost = train_rl(lm, builder, examples, spec.strategy.rl_algo, spec.rl, spec.lora, spec.seed, out, logger)
        extra = {}
    return _summary(stage, logger, cost, len(examples)) | extra
