"""The `decoding` values: how a prediction is read from the model. Each is one registration that names the code
that does it, so adding a decoding is its registration here plus its implementation in runners/. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass

from strategies.lookup import Implementation


@dataclass(frozen=True)
class Decoding:
    """A decoding: its doc and run-name tag, and its implementation, `(Predictor, prompts, on_progress) ->
    predictions`."""

    doc: str
    decode: Implementation
    tag: str = ""


DECODINGS: dict[str, Decoding] = {
    "generate": Decoding("greedy generation, then the label is parsed from the text",
                         decode=Implementation("runners.predict:Predictor.by_generation")),
    "ppl": Decoding("score every candidate label's log-likelihood after the prompt; take the best",
                    decode=Implementation("runners.predict:Predictor.by_candidate_scores"), tag="ppl"),
}
