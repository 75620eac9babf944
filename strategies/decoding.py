"""The `decoding` values: how a prediction is read from the model. Each is one registration that carries what
planning asks of it (does it generate text, does it score the candidate labels) and names the code that does it,
so adding a decoding is its registration here plus its implementation in runners/. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass

from strategies.lookup import Implementation


@dataclass(frozen=True)
class Decoding:
    """A decoding: its doc and run-name tag, whether its answer is generated text, whether it scores every candidate
    label after the prompt, and its implementation, `(Predictor, prompts, on_progress) -> predictions`."""

    doc: str
    generates: bool
    scores: bool
    decode: Implementation
    tag: str = ""

    def writes_text(self, reasoning: bool) -> bool:
        """Whether predicting generates new tokens: the answer itself, or the reasoning written before it."""
        return self.generates or reasoning


DECODINGS: dict[str, Decoding] = {
    "generate": Decoding("greedy generation, then the label is parsed from the text", generates=True, scores=False,
                         decode=Implementation("runners.predict:Predictor.by_generation")),
    "ppl": Decoding("score every candidate label's log-likelihood after the prompt; take the best", generates=False,
                    scores=True, decode=Implementation("runners.predict:Predictor.by_candidate_scores"), tag="ppl"),
}
