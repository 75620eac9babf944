"""Train once, evaluate many: the trained model of a TrainSpec comes from the disk cache, else from an earlier MLflow
training run, else it is trained now (its SFT warm-up first) and logged. Every evaluation sharing the spec reuses it.

A trained stage lives in `<cache>/trained/<train hash>/` (a PEFT adapter, or a full model with full_finetune),
written beside its final place and renamed when complete, so an interrupted job never leaves a half stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.datasets import DatasetCache
from bench.runspec import RunSpec
from bench.tracking import Tracker
from bench.trainspec import TrainSpec
from runners.models import build_once, cache_dir, load_model
from runners.relabel import gold_confidence, uncertain_labels
from runners.rl import train_rl
from runners.sft import sft_rows, train_sft
from runners.train_common import StepLogger, load_trainable, training_examples
from strategies.example import Example
from strategies.prompts import UNCERTAIN, PromptBuilder

COMPLETE = "genclsbench_stage.json"  # written last into a stage folder: its presence means the stage is usable


def stage_folder(spec: TrainSpec) -> Path:
    return cache_dir() / "trained" / spec.key()


def is_trained(spec: TrainSpec) -> bool:
    """The disk cache holds the complete stage of `spec`."""
    return (stage_folder(spec) / COMPLETE).is_file()


def training_jobs(specs: Sequence[RunSpec]) -> tuple[list[TrainSpec], int]:
    """The training jobs `specs` need (warm-ups included, each once) and how many the disk cache already holds."""
    jobs = {t.key(): t for s in specs if s.train for t in (s.train.warmup(), s.train) if t}
    return list(jobs.values()), sum(is_trained(t) for t in jobs.values())


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
    folder = build_once(stage_folder(spec), COMPLETE, lambda staging: _fetch_or_train(spec, chain, staging, ctx))
    return [*chain, folder]


def _fetch_or_train(spec: TrainSpec, chain: list[Path], staging: Path, ctx: TrainingContext) -> None:
    """Fill `staging` with the stage: downloaded from an earlier training run, else trained now and logged."""
    if ctx.tracker.download_trained(spec.key(), staging):
        return
    with ctx.tracker.train_run(spec):
        summary = _train_stage(spec, chain, staging, ctx)
        (staging / COMPLETE).write_text(json.dumps(summary | {"train_hash": spec.key()}, indent=1))
        ctx.tracker.log_trained(summary, staging)
    ctx.report(f"trained {spec.run_name} ({summary['train_wall_time_s']:.0f} s, "
               f"{summary['train_tokens_per_s']:.0f} tokens/s)")


def _relabelled(spec: TrainSpec, examples: list[Example], ctx: TrainingContext) -> list[str]:
    """SFT labels: gold, or with the least confident fraction set to "uncertain" (confidences cached per scorer)."""
    if spec.relabel is None:
        return [e.label for e in examples]
    dataset = ctx.datasets.get(spec.dataset)
    per_scorer = []
    for scorer in spec.relabel.scorers:
        model = spec.model if scorer == "base" else scorer
        cache = cache_dir() / "relabel" / f"{model.replace('/', '__')}-{spec.dataset_identity}-{spec.dtype}.json"
        known = json.loads(cache.read_text()) if cache.is_file() else {}
        missing = [e for e in examples if e.id not in known]
        if missing:
            lm = load_model(model, spec.dtype)
            known |= dict(zip((e.id for e in missing), gold_confidence(lm, dataset.card, missing, ctx.batch_size)))
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known))
        per_scorer.append([known[e.id] for e in examples])
    confidence = [sum(c) / len(c) for c in zip(*per_scorer)]
    labels = uncertain_labels(examples, confidence, spec.relabel.fraction)
    ctx.tracker.log_relabel({e.id: {"gold": e.label, "confidence": c, "uncertain": label == UNCERTAIN}
                             for e, c, label in zip(examples, confidence, labels)})
    return labels


def _train_stage(spec: TrainSpec, chain: list[Path], out: Path, ctx: TrainingContext) -> dict[str, float]:
    """Train this spec's own stage (RL when it has RL, else SFT) on top of `chain`; return its summary metrics."""
    dataset = ctx.datasets.get(spec.dataset)
    examples = training_examples(dataset.pool, spec.n_train, spec.seed)
    ctx.tracker.log_training_data(spec, examples)
    builder = PromptBuilder(dataset.card, spec.strategy.prompt, dataset.pool, spec.seed)
    stage = "rl" if spec.strategy.has_rl else "sft"
    logger = StepLogger(f"{stage}.", ctx.tracker.log_step, lambda step, total: ctx.on_step(spec.run_name, step, total))
    labels = _relabelled(spec, examples, ctx) if stage == "sft" else []  # scorers load before the trainee
    lm = load_trainable(spec.model, spec.dtype, chain)
    if stage == "sft":
        rows = sft_rows(lm, builder, examples, labels, spec.sft.max_length)
        cost = train_sft(lm, rows, spec.sft, spec.lora, spec.seed, out, logger)
        extra = {"uncertain_fraction": sum(label == UNCERTAIN for label in labels) / len(labels)}
    else:
        cost = train_rl(lm, builder, examples, spec.strategy.rl_algo, spec.rl, spec.lora, spec.seed, out, logger)
        extra = {}
    final = {f"{stage}.final_{k}": v for k, v in logger.last.items() if k in ("loss", "reward", "kl")}
    return cost.metrics("train_") | final | extra | {"n_train": float(len(examples))}
