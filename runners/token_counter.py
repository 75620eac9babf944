"""Counting a model's tokens without loading the model (no torch): its `tokenizer.json` and chat template, read
from its folder, for estimating what a run will cost before it runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from strategies.prompts import Message, render_plain

CHARS_PER_TOKEN = 4.0  # the estimate when the model's tokenizer is not on this machine yet


class TokenCounter:
    """Counts the tokens of chat prompts and completions: exactly with the model's tokenizer when its folder is
    there, else by characters (`approximate`)."""

    def __init__(self, folder: Path | None) -> None:
        self.tokenizer = self.template = None
        self.context: int | None = None  # the model's context length, from its config.json
        if folder is not None and (folder / "config.json").is_file():
            self.context = json.loads((folder / "config.json").read_text(encoding="utf-8")).get(
                "max_position_embeddings")
        if folder is not None and (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.template = _chat_template(folder)

    @property
    def approximate(self) -> bool:
        return self.tokenizer is None

    def text(self, text: str) -> int:
        if self.tokenizer is None:
            return max(1, round(len(text) / CHARS_PER_TOKEN))
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def prompt(self, messages: Sequence[Message]) -> int:
        """Tokens of a prompt as the model sees it (its chat template with the generation prompt, when it has one)."""
        if self.template is not None:
            try:
                return self.text(self.template.render(messages=list(messages), add_generation_prompt=True,
                                                      bos_token="", eos_token=""))
            except Exception:  # noqa: BLE001 - a template this renderer cannot run: count the plain text instead
                pass
        return self.text(render_plain(messages))


def _chat_template(folder: Path):
    """The folder's chat template as a jinja2 template (None if it has none)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    source = (folder / "chat_template.jinja").read_text(encoding="utf-8") \
        if (folder / "chat_template.jinja").is_file() else None
    config = folder / "tokenizer_config.json"
    if source is None and config.is_file():
        source = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    if not isinstance(source, str):
        return None
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = lambda message: (_ for _ in ()).throw(ValueError(message))
    return environment.from_string(source)
