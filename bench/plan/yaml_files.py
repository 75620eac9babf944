"""Reading a user's YAML file (a grid, a space) defensively: one line for anything wrong with it, never a traceback,
never a value expanded without bound.

- Size: at most `MAX_BYTES`; text must be UTF-8.
- Duplicate keys are an error naming both lines (PyYAML would keep the last one without a word).
- Nesting deeper than `MAX_DEPTH` is an error (PyYAML composes recursively: a deep file ends in RecursionError).
- Aliases may not expand the document past `MAX_VALUES` values (an alias bomb is a few lines that expand to
  billions of values when anything walks them, such as a validator or an error message quoting them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, SequenceNode

from bench.plan.errors import UserError, check_file, utf8_text

BaseModelT = TypeVar("BaseModelT", bound=BaseModel)
MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000


class _Refused(Exception):
    """Why a file is refused, and where (its 1-based line, or None)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and deep nesting while composing."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep; a grid needs a few",
                               self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise _Refused(f"key '{_excerpt(str(key))}' is given twice (lines {seen[key]} and {line}); "
                               "keep one", line)
            if isinstance(key, str | int | float | bool):
                seen[key] = line
        return super().construct_mapping(node, deep)


def _expanded_values(node: Node, memo: dict[int, int]) -> int:
    """How many values `node` stands for once every alias is expanded (shared nodes counted each time)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a node that contains itself (a recursive alias) counts once while it is walked
    if isinstance(node, SequenceNode):
        total = 1 + sum(_expanded_values(child, memo) for child in node.value)
    elif isinstance(node, MappingNode):
        total = 1 + sum(_expanded_values(k, memo) + _expanded_values(v, memo) for k, v in node.value)
    else:
        total = 1
    memo[id(node)] = total
    return total


def _excerpt(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def load_yaml_file(path: Path, what: str) -> object:
    """The data in the YAML file `path` (a `what`: "grid file", "space file"); anything wrong is one UserError line
    naming the file and, where known, the line."""
    check_file(path, what, "see grids/ for examples")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise UserError(f"{path}: {size / 2**20:.1f} MiB, over the {MAX_BYTES >> 20} MiB a {what} may have; a grid "
                        "lists choices, not data (put data in a dataset file)")
    text = utf8_text(path, path.read_bytes())
    try:
        loader = _StrictLoader(text)  # its reader refuses control characters at once
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_values(node, {}) > MAX_VALUES:
                raise _Refused(f"its aliases expand to more than {MAX_VALUES:,} values; write the values out instead")
            return loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _Refused as exc:
        raise UserError(f"{path}{f':{exc.line}' if exc.line else ''}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{line}: not valid YAML ({_excerpt(problem)})") from None


def validated(model: type[BaseModelT], raw: object, path: Path, at: str = "") -> BaseModelT:
    """`raw` (the data of the file `path`, or of its key `at`) as the pydantic `model`, or one UserError line naming
    the file, the key and the problem of its first error."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(([at] if at else []) + [str(part) for part in error["loc"]])
        raise UserError(f"{path}: {f'{key}: ' if key else ''}{error['msg']}") from None
