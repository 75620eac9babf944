"""A trained model as an MLflow model folder of the transformers flavour (`mlflow.transformers.load_model` loads it as a
text-generation pipeline), written without the Hub: the base model is a local folder.

LoRA stages (SFT, RL, R-Gen) become one PEFT adapter with the base model referenced by its folder, not copied: a
stage trained on top of earlier ones (RL on its SFT warm-up, each merged in before it trained) is their adapters
concatenated into one of the summed rank, which is exactly their sum (PEFT's `cat` combination). A stack holding a
full fine-tune is saved whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from runners.models import is_adapter, load_model

TASK = "text-generation"
REQUIREMENTS = ("torch", "transformers", "peft", "accelerate")  # what loading it needs (not inferred: that loads it)


def requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def save_trained_model(base: Path, stages: Sequence[Path], into: Path, description: str, described=None) -> None:
    """Write the model that `stages` (trained folders, in the order they apply) make of the base model in `base` as
    an MLflow model folder `into` (which must not exist); `description` becomes its model card, `described` (an
    `mlflow.models.Model`) says which logged model and run it belongs to."""
    import mlflow.transformers
    from huggingface_hub import ModelCard

    card = ModelCard(f"---\nlibrary_name: transformers\n---\n{description}\n")  # never fetched from the Hub
    if all(is_adapter(stage) for stage in stages):
        lm = load_model(base, "float32")
        model = _one_adapter(lm.model, stages)
        mlflow.transformers.save_model({"model": model, "tokenizer": lm.tokenizer}, str(into), task=TASK,
                                       base_model_path=str(base), model_card=card, pip_requirements=requirements(),
                                       mlflow_model=described)
    else:
        lm = load_model(base, "float32", stages)
        mlflow.transformers.save_model({"model": lm.model, "tokenizer": lm.tokenizer}, str(into), task=TASK,
                                       model_card=card, pip_requirements=requirements(), mlflow_model=described)


def _one_adapter(model, stages: Sequence[Path]):
    """`model` with the LoRA adapters of `stages` as one PEFT adapter, named `default` (what a loader reads)."""
    from peft import PeftModel

    names = [f"stage{i}" for i in range(len(stages))]
    peft = PeftModel.from_pretrained(model, stages[0], adapter_name=names[0] if len(stages) > 1 else "default")
    if len(stages) == 1:
        return peft
    for name, stage in zip(names[1:], stages[1:]):
        peft.load_adapter(stage, adapter_name=name)
    peft.add_weighted_adapter(names, [1.0] * len(names), "default", combination_type="cat")
    peft.set_adapter("default")
    for name in names:
        peft.delete_adapter(name)
    return peft
