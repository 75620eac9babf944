"""Reading the answer out of generated text, tolerant of case, punctuation, quotes and extra words.

Rules, in order (on the part after the last answer marker when the output has a reasoning):
1. the whole (normalised) text is an answer;
2. exactly one answer is mentioned (whole words for alphabetic answers, substrings for CJK; an answer
   found only inside a longer matched answer does not count);
3. several answers are mentioned and the text starts with one of them: that one ("Joy, not sadness");
otherwise the output is unparseable (None), which the metrics count as `invalid`. Under `strict` (the RL reward)
rule 3 is off: an output naming several answers earns nothing, so a policy cannot hedge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_EDGE_CHARACTERS = r"[\s\"'`*_.,:;!?()\[\]{}<>“”‘’「」《》。，：；！？、-]+"
_EDGE = re.compile(rf"^{_EDGE_CHARACTERS}|{_EDGE_CHARACTERS}$")


def normalise(text: str) -> str:
    """Case-folded text with surrounding whitespace, quotes, markdown and punctuation removed."""
    return _EDGE.sub("", " ".join(text.split()).casefold())


def _markers(output: str, marker: str) -> list[re.Match[str]]:
    return list(re.finditer(re.escape(marker.rstrip(":：")) + r"\s*[:：]", output, flags=re.IGNORECASE))


def answer_part(output: str, marker: str) -> str:
    """The text after the last `marker` (e.g. "Answer:"), or the last non-empty line if there is none."""
    found = _markers(output, marker)
    if found:
        return output[found[-1].end() :]
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def reasoning_part(output: str, marker: str) -> str:
    """The text before the last `marker`, stripped (the whole output when it has no marker)."""
    found = _markers(output, marker)
    return (output[: found[-1].start()] if found else output).strip()


def _pattern(answer: str) -> re.Pattern[str]:
    """Whole-word match for answers that start/end with an ASCII word character; plain substring otherwise."""
    left = r"(?<![0-9a-z_])" if re.match(r"[0-9a-z_]", answer) else ""
    right = r"(?![0-9a-z_])" if re.search(r"[0-9a-z_]$", answer) else ""
    return re.compile(left + re.escape(answer) + right)


def parse_answer(output: str, answers: Sequence[str], marker: str | None = None, strict: bool = False) -> str | None:
    """The answer (an element of `answers`) that `output` gives, or None when it cannot be told."""
    text = normalise(answer_part(output, marker) if marker else output)
    by_norm = {normalise(a): a for a in answers}
    if text in by_norm:
        return by_norm[text]
    spans = [(m.start(), m.end(), a) for n, a in by_norm.items() for m in _pattern(n).finditer(text)]
    outer = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and o != s for o in spans)]
    mentioned = {a for _, _, a in outer}
    if len(mentioned) == 1:
        return mentioned.pop()
    first = min(outer, default=None)
    return first[2] if first and first[0] == 0 and not strict else None
