"""On the real SmolLM2-135M (downloads ~90 MB once, then minutes on CPU): run with `pytest -m slow`."""

import numpy as np
import pytest

from bench.plan.datasets import DatasetConfig, load_dataset
from runners.batching import Batching
from runners.inference import candidate_ids, prompt_text, score_candidates
from runners.model_registry import model_folder
from runners.models import load_model
from runners.predict import DecodeSettings, Predictor
from strategies.prompts import PromptBuilder
from strategies.registry import Strategy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(model_cache):
    return load_model(model_folder("smollm2-135m", model_cache), "float32")


def test_real_model_scores_equal_direct_and_beat_chance_with_demos(smollm2):
    import torch

    dataset = load_dataset(DatasetConfig(name="emotion"))
    examples = dataset.evaluation("test", 40, 0)
    builder = PromptBuilder(dataset.card, Strategy(icl="similar-3", decoding="ppl"), dataset.pool, 0)
    prompts = [prompt_text(smollm2, builder.messages(e)) for e in examples[:3]]
    scores = score_candidates(smollm2, prompts, builder.candidates(), Batching(3))
    for i, prompt in enumerate(prompts):
        ids = smollm2.tokenizer(prompt, add_special_tokens=False).input_ids
        for k, cand in enumerate(candidate_ids(smollm2, builder.candidates())):
            with torch.no_grad():
                logp = torch.log_softmax(smollm2.model(torch.tensor([ids + cand])).logits[0], -1)
            direct = sum(logp[len(ids) - 1 + j, t].item() for j, t in enumerate(cand))
            np.testing.assert_allclose(scores.logprob_sum[i, k], direct, atol=1e-3)
    predictions = Predictor(smollm2, builder, DecodeSettings(Batching(16), 8, 0))(examples)
    accuracy = sum(p.label == e.label for p, e in zip(predictions, examples)) / len(examples)
    assert accuracy > 1 / 6
