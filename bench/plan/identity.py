"""Identity derived from records: the hash that names a run, a trained model and every cache derived from them, and
the flat MLflow params of a record, both read off the record's fields rather than listed by hand.

- `identity_hash(record)`: SHA-256 of the record's canonical JSON, where a field at its default is left out (so a
  setting added later, at its default, leaves every older hash as it was), a nested record is canonical in turn,
  and a field marked `identity=False` (a display name, a source path whose contents another field fingerprints)
  does not count.
- `params(record_type, record)`: one flat `{key: str}` vocabulary per record type, `"none"` where a value does not
  apply (a record that is absent keeps its keys), so every MLflow run of a kind has the same keys.

Field metadata (`dataclasses.field(metadata=...)`): `identity` (default True) and `param`: the param key of a
field (default its name; `""`: the nested record's keys go straight under the parent's prefix; `None`: no param).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from reports.vocabulary import NONE


def identity_field(**metadata: Any) -> dict[str, Any]:
    """`field(metadata=...)` keys, spelled once: `identity_field(identity=False, param=None)`."""
    return metadata


def _items(record: Any) -> Iterator[tuple[str, Any, Any, dict]]:
    """(name, value, default, metadata) of each field of a dataclass or pydantic record."""
    if dataclasses.is_dataclass(record):
        for f in dataclasses.fields(record):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            yield f.name, getattr(record, f.name), default, f.metadata
    else:
        for name, info in type(record).model_fields.items():
            yield name, getattr(record, name), info.get_default(call_default_factory=True), {}


def _is_record(value: Any) -> bool:
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)) or isinstance(value, BaseModel)


def canonical(value: Any) -> Any:
    """A record as JSON-able data for hashing: fields at their default and fields marked identity=False left out."""
    if _is_record(value):
        return {name: canonical(v) for name, v, default, meta in _items(value)
                if meta.get("identity", True) and not (default is not dataclasses.MISSING and v == default)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    return value


def identity_hash(record: Any) -> str:
    """16 hex digits naming `record`: its kind (`KIND`, a class attribute) and its canonical fields."""
    payload = {"kind": getattr(record, "KIND", type(record).__name__), **canonical(record)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _record_type(annotation: Any) -> type | None:
    """The record class an annotation holds (`TrainSpec | None` -> TrainSpec), if any."""
    candidates = [annotation, *typing.get_args(annotation)] if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else [annotation]
    return next((c for c in candidates if isinstance(c, type) and (dataclasses.is_dataclass(c) or
                                                                    issubclass(c, BaseModel))), None)


def _fields_of(cls: type) -> Iterator[tuple[str, Any, dict]]:
    """(name, annotation, metadata) of a record class's fields."""
    hints = typing.get_type_hints(cls)
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            yield f.name, hints[f.name], f.metadata
    else:
        for name in cls.model_fields:
            yield name, hints[name], {}


def _text(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def params(cls: type, record: Any, prefix: str = "") -> dict[str, str]:
    """The flat params of a record of type `cls` (or of its absence, `record` None: the same keys, all "none"):
    nested records under `prefix.field.`, plus what the record's `extra_params()` derives (hashes, counts)."""
    out: dict[str, str] = {}
    for name, annotation, meta in _fields_of(cls):
        key = meta.get("param", name)
        if key is None:
            continue
        value = getattr(record, name) if record is not None else None
        nested = _record_type(annotation)
        if nested is not None:
            out |= params(nested, value, f"{prefix}{key}." if key else prefix)
        else:
            out[f"{prefix}{key}"] = _text(value)
    extra = getattr(cls, "extra_params", None)
    if extra is not None:
        out |= {f"{prefix}{k}": _text(v) for k, v in extra(record).items()}
    return out
