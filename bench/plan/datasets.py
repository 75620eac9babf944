"""The dataset registry: bundled sets (a `card.yaml` beside their JSONL files), user files, and Hub datasets.

Every dataset exposes a *pool* split (demonstrations, later training data) kept apart from the *evaluation*
split, its categories with prompt names and definitions, and an `identity` that changes when its content does.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ConfigDict, Field, model_validator

from bench.plan.errors import UserError, check_file, utf8_text
from bench.plan.yaml_files import load_yaml_file, validated
from runners.schema import Schema
from strategies.example import Category, Example, TaskCard
from strategies.lookup import did_you_mean

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".gz")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name, as the Hub spells them
EVAL_FRACTION = 5  # a user file without an evaluation file: every 5th row (by text hash) is held out
FILE_EVAL_SPLIT = "test"  # a user file's evaluation split: its `eval_path` file, else the held-out fifth
GENERIC_STEMS = {"train", "training", "test", "dev", "valid", "validation", "eval", "data", "all", "dataset"}


def bundled_names() -> list[str]:
    return sorted(p.parent.name for p in BUNDLED_DIR.glob("*/card.yaml"))


class LabelsFile(Schema):
    """A file listing a dataset's classes, one row each (JSONL or CSV): the label `value` as the data rows write it,
    the `name` prompts use for it (default: the value), and an optional one-sentence `definition`. Other column
    names are mapped with the `*_field` keys (e.g. `value_field: label_id, name_field: label`)."""

    model_config = ConfigDict(frozen=True)

    path: str
    value_field: str = "value"
    name_field: str = "name"
    definition_field: str = "definition"


class DatasetConfig(Schema):
    """How a grid names a dataset: a bundled `name` (or a folder with a card.yaml), a `path`, or a Hub id (`hf`).
    Beside `path` or `hf`, `name` is the name it is shown under."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    path: str | None = None
    eval_path: str | None = None
    hf: str | None = None
    labels: LabelsFile | None = None
    text_field: str = "text"
    label_field: str = "label"
    pool_split: str | None = None
    eval_split: str | None = None
    language: str = "en"
    task: str = "Classify the text into one of the categories."
    input_name: str = "Text"
    skip_invalid_rows: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if self.path is not None and self.hf is not None:
            raise ValueError("give 'path' (a JSONL/CSV file) or 'hf' (a Hub id), not both")
        if self.name is None and self.path is None and self.hf is None:
            raise ValueError("give 'name' (a bundled dataset), 'path' (a JSONL/CSV file) or 'hf' (a Hub id)")
        if self.path is None and (self.eval_path is not None or self.labels is not None) and self.hf is None:
            raise ValueError("'eval_path' and 'labels' belong to a file dataset: add 'path'")
        return self

    @property
    def is_bundled(self) -> bool:
        """A bundled dataset (or a folder with a card.yaml): `name` alone names it."""
        return self.path is None and self.hf is None

    def options(self) -> dict:
        """The settings that change what is read, without where it is read from (the content hash covers that)."""
        return self.model_dump(exclude={"name", "path", "eval_path", "hf", "labels"}) | {
            "labels": self.labels.model_dump(exclude={"path"}) if self.labels else None}

    def beside(self, folder: Path) -> DatasetConfig:
        """This config with its relative paths (`path`, `eval_path`, `labels.path`, a card folder's `name`) read from
        `folder`, a grid file's, as absolute paths: a grid names its files from where it lies, as a docker-compose
        file does, wherever `bench` is run (and a grid written elsewhere, such as `bench search`'s best.yaml, keeps
        naming the same files)."""
        changes: dict = {"path": self.path and _from(folder, self.path),
                         "eval_path": self.eval_path and _from(folder, self.eval_path)}
        if self.labels is not None:
            changes["labels"] = self.labels.model_copy(update={"path": _from(folder, self.labels.path)})
        if self.is_bundled and self.name not in bundled_names():
            changes["name"] = _from(folder, self.name)
        return self.model_copy(update=changes)

    @classmethod
    def from_ref(cls, ref: str, folder: Path | None = None) -> DatasetConfig:
        """A bundled name, an existing file or folder, or `hf:<id>` / an `org/name` Hub id: `--dataset X` (a path
        as written, from the working directory), or a grid's entry (`folder`: the grid's; see `beside`)."""
        if ref in bundled_names():
            return cls(name=ref)
        at = ref if folder is None else _from(folder, ref)
        if (Path(at) / "card.yaml").is_file():
            return cls(name=at)
        if Path(at).is_file():
            return cls(path=at)
        if ref.startswith("hf:") or _HUB_ID.fullmatch(ref) and not ref.endswith(DATA_SUFFIXES):
            return cls(hf=ref.removeprefix("hf:"))
        if "/" in ref or ref.endswith(DATA_SUFFIXES):
            check_file(at, "dataset file", "check the path, or write hf:ORG/NAME for a Hub dataset")
        raise UserError(
            f"unknown dataset '{ref}'{did_you_mean(ref, bundled_names())}: use a bundled name "
            f"({', '.join(bundled_names())}), a JSONL/CSV file path, or a Hub id such as hf:dair-ai/emotion"
        )


def _from(folder: Path, path: str) -> str:
    """`path` read from `folder` (an absolute `path` stays itself), absolute and without `..`, links kept."""
    return os.path.abspath(folder / path)


@dataclass
class Dataset:
    """A loaded dataset: categories, pool and evaluation examples, and how many bad rows were skipped."""

    name: str
    identity: str
    card: TaskCard
    pool: list[Example]
    eval_splits: dict[str, list[Example]]
    default_eval_split: str
    skipped_rows: int = 0
    source: str = ""  # where it was read from (its card, files or Hub id), for messages

    def evaluation(self, split: str | None, limit: int | None, sample_seed: int) -> list[Example]:
        """The evaluation examples: the whole split, or a seeded sample of `limit` (the same for every strategy)."""
        split = split or self.default_eval_split
        if split not in self.eval_splits:
            raise UserError(f"dataset '{self.name}' ({self.source}) has no evaluation split '{split}'"
                            f"{did_you_mean(split, self.eval_splits)}; available: {', '.join(self.eval_splits)}")
        examples = self.eval_splits[split]
        if limit is None or limit >= len(examples):
            return examples
        chosen = sorted(random.Random(sample_seed).sample(range(len(examples)), limit))
        return [examples[i] for i in chosen]


@dataclass
class _RowReader:
    """Turns raw rows into Examples, validating text and label, failing or skipping (and counting) bad rows. A label
    is a string or a whole number, the same way throughout: `1` and `"1"` in one label column would quietly be one
    class, and null, NaN or true/false would become classes named `None`, `nan` or `True`."""

    text_field: str
    label_field: str
    labels: set[str] | None
    skip_invalid: bool
    skipped: int = field(default=0)
    written: dict[str, tuple[object, str]] = field(default_factory=dict)  # label text -> (as first written, where)

    def read(self, rows: Iterator[tuple[str, dict]], split: str) -> list[Example]:
        examples = []
        for n, (where, row) in enumerate(rows):
            if n == 0:
                self._check_columns(where, row)
            problem = self._problem(row)
            if problem is None:
                self._check_written_alike(row[self.label_field], where)
                examples.append(Example(f"{split}-{len(examples) + self.skipped}", str(row[self.text_field]),
                                        str(row[self.label_field])))
                continue
            if not self.skip_invalid:
                raise UserError(f"{where}: {problem}; fix the row, or set skip_invalid_rows: true to skip and count it")
            self.skipped += 1
        return examples

    def _check_columns(self, where: str, row: dict) -> None:
        """A file's first row lacking the text or label column: the settings do not fit the file, which no row
        of it would, so it stops whether or not invalid rows are skipped."""
        for key, setting, what in ((self.text_field, "text_field", "text"), (self.label_field, "label_field", "label")):
            if key not in row:
                raise UserError(f"{where}: no '{key}' column; its columns are {', '.join(map(repr, row)) or 'none'}: "
                                f"set {setting} (in the grid's dataset entry, or a card's) to the column holding each "
                                f"row's {what}")

    def _problem(self, row: dict) -> str | None:
        for key in (self.text_field, self.label_field):
            if key not in row:  # a JSONL row without a key the file's first row has
                return f"no '{key}' key (the row's keys: {', '.join(row) or 'none'})"
        if not str(row[self.text_field] or "").strip():
            return "empty text"
        label = row[self.label_field]
        if isinstance(label, bool) or not isinstance(label, str | int):
            return f"label {_shown(label)} is not a string or a whole number"
        if self.labels is not None and str(label) not in self.labels:
            return f"label '{label}'{did_you_mean(label, self.labels)} is not one of {', '.join(sorted(self.labels))}"
        return None

    def _check_written_alike(self, label: str | int, where: str) -> None:
        first, first_where = self.written.setdefault(str(label), (label, where))
        if type(first) is not type(label):
            raise UserError(f"{where}: label {_shown(label)}, but {first_where} writes it {_shown(first)}: one class "
                            "written as a number and as a string; write every row's label the same way")


def _shown(value: object) -> str:
    """A label as a JSON row writes it (null, NaN, true, "1", 1)."""
    return json.dumps(value, ensure_ascii=False)[:60]


def table_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(file:line, row) for a JSONL (optionally .gz) or CSV file."""
    if path.suffix == ".csv":
        import polars as pl

        text = utf8_text(path, path.read_bytes())
        try:
            table = pl.read_csv(io.StringIO(text), infer_schema=False)
        except pl.exceptions.PolarsError as exc:
            raise UserError(f"{path}: not a readable CSV ({str(exc).splitlines()[0][:160]}); a header row, then one "
                            "row per example, comma-separated") from None
        for i, row in enumerate(table.iter_rows(named=True), start=2):
            yield f"{path}:{i}", row
        return
    for i, raw in enumerate(_lines(path), start=1):
        line = utf8_text(path, raw, i - 1)
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{i}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
        except RecursionError:
            raise UserError(f"{path}:{i}: JSON nested too deeply to read; each line must be one JSON object such as "
                            '{"text": "...", "label": "..."}') from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{i}: a JSON {type(row).__name__}, not an object; each line must be one JSON "
                            'object such as {"text": "...", "label": "..."}')
        yield f"{path}:{i}", row


def _lines(path: Path) -> Iterator[bytes]:
    """The lines of a JSONL file, decompressed when its name ends in .gz; one that is not gzip is one line."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            yield from handle
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: not a whole gzip file ({exc}); a .gz file holds gzip-compressed JSONL: compress "
                        "it with gzip, or drop .gz from its name") from None


def fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class CardLabel(Schema):
    """A class in a dataset card: its `value` as the data rows write it, the `name` prompts use for it (default: the
    value), and an optional one-sentence `definition`."""

    value: str | int
    name: str | None = None
    definition: str = ""


class DatasetCard(Schema):
    """A dataset folder's `card.yaml` (see bench/data/emotion/card.yaml): the dataset's name and language, the task
    and input name its prompts use, its classes, its split files and which split is the pool and which is evaluated
    by default."""

    name: str = Field(min_length=1)
    language: str
    task: str
    input_name: str
    text_field: str = "text"
    label_field: str = "label"
    splits: dict[str, str] = Field(min_length=1)
    pool_split: str
    eval_split: str
    labels: list[CardLabel] = Field(min_length=2)


def _load_card_dataset(folder: Path, config: DatasetConfig) -> Dataset:
    card_path = folder / "card.yaml"
    card = validated(DatasetCard, load_yaml_file(card_path, "dataset card"), card_path)
    categories = tuple(Category(str(c.value), c.name or str(c.value), c.definition) for c in card.labels)
    reader = _RowReader(card.text_field, card.label_field, {c.value for c in categories}, config.skip_invalid_rows)
    files = {split: folder / name for split, name in card.splits.items()}
    for split, path in files.items():
        check_file(path, f"{card_path}: splits.{split}: the file", "fix the card, or add the file")
    pool_split = config.pool_split or card.pool_split
    if pool_split not in files:
        raise UserError(f"{card_path}: no split '{pool_split}' for the pool{did_you_mean(pool_split, files)}; "
                        f"available: {', '.join(files)}")
    splits = {split: reader.read(table_rows(path), split) for split, path in files.items()}
    identity = f"{card.name}:{fingerprint(card_path, *files.values())}"  # contents, not only the name
    return Dataset(card.name, identity, TaskCard(card.language, card.task, card.input_name, categories),
                   splits.pop(pool_split), splits, config.eval_split or card.eval_split, reader.skipped, str(card_path))


def _display_name(config: DatasetConfig, path: Path) -> str:
    """`name:`, else the file's stem, else (a file called train.jsonl, test.csv, ...) its folder's name."""
    if config.name:
        return config.name
    return path.parent.resolve().name if path.stem.lower() in GENERIC_STEMS else path.stem


def _labels_file(labels: LabelsFile) -> tuple[Category, ...]:
    """The classes a labels file lists, in its order (see `LabelsFile`)."""
    path = Path(labels.path)
    check_file(path, "labels file", "check labels.path")
    categories, seen = [], set()
    for where, row in table_rows(path):
        if labels.value_field not in row:
            raise UserError(f"{where}: no '{labels.value_field}' column (columns: {', '.join(row)}); set "
                            "labels.value_field to the column holding the label as the data rows write it")
        value = str(row[labels.value_field])
        if value in seen:
            raise UserError(f"{where}: label '{value}' is listed twice")
        seen.add(value)
        name = str(row.get(labels.name_field) or value)
        categories.append(Category(value, name, str(row.get(labels.definition_field) or "")))
    if len(categories) < 2:
        raise UserError(f"{path}: a labels file lists at least two classes, one per row")
    return tuple(categories)


def _load_file_dataset(config: DatasetConfig) -> Dataset:
    path = Path(config.path)
    eval_path = Path(config.eval_path) if config.eval_path else None
    for p in (path, eval_path):
        if p is not None:
            check_file(p, "dataset file", "check the path")
    listed = _labels_file(config.labels) if config.labels else None
    reader = _RowReader(config.text_field, config.label_field, {c.value for c in listed} if listed else None,
                        config.skip_invalid_rows)
    rows = reader.read(table_rows(path), "pool")
    if eval_path is None:
        held_out = {e.id for e in rows if int(hashlib.sha256(e.text.encode()).hexdigest(), 16) % EVAL_FRACTION == 0}
        pool = [e for e in rows if e.id not in held_out]
        evaluation = [Example(f"eval-{e.id}", e.text, e.label) for e in rows if e.id in held_out]
    else:
        pool = rows
        reader.labels = reader.labels or {e.label for e in pool}
        evaluation = reader.read(table_rows(eval_path), "eval")
    categories = listed or tuple(Category(v, v) for v in sorted({e.label for e in pool}))
    _check_usable(path, eval_path, len(rows) if eval_path is None else len(pool), categories, evaluation,
                  reader.skipped)
    card = TaskCard(config.language, config.task, config.input_name, categories)
    sources = [p for p in (path, eval_path, Path(config.labels.path) if config.labels else None) if p]
    return Dataset(_display_name(config, path), f"file:{fingerprint(*sources)}", card, pool,
                   {FILE_EVAL_SPLIT: evaluation}, FILE_EVAL_SPLIT, reader.skipped, " + ".join(map(str, sources)))


def _check_usable(path: Path, eval_path: Path | None, read: int, categories: tuple[Category, ...],
                  evaluation: list[Example], skipped: int) -> None:
    """Fail, saying which, on a file dataset with no rows left (`read` of them, after `skipped` invalid ones), a
    single class, or nothing to evaluate."""
    skips = f" ({skipped:,} invalid row(s) skipped)" if skipped else ""
    if not read:
        raise UserError(f"{path}: no usable row{skips}; a dataset needs rows of text and label")
    if len(categories) < 2:
        raise UserError(f"{path}: every row has the label '{categories[0].value}'{skips}; classifying needs at least "
                        "two classes")
    if not evaluation:
        raise UserError(f"{eval_path}: no usable row{skips}; it holds the evaluation examples" if eval_path else
                        f"{path}: none of its {read:,} usable row(s) is held out for evaluation (one in five is, by "
                        "a hash of its text); add rows, or give eval_path")


def _load_hub_dataset(config: DatasetConfig) -> Dataset:
    import datasets as hf_datasets
    from huggingface_hub.utils import logging as hub_logging

    hf_datasets.logging.set_verbosity_error()  # their retry warnings would precede our one-line error
    hub_logging.set_verbosity_error()
    try:
        loaded = hf_datasets.load_dataset(config.hf)
    except Exception as exc:  # offline, unknown id, gated: all end the same way for the user
        raise UserError(
            f"cannot load Hub dataset '{config.hf}' ({type(exc).__name__}); offline, use a bundled dataset "
            f"({', '.join(bundled_names())}) or a local JSONL/CSV file"
        ) from None
    pool_split = config.pool_split or "train"
    eval_split = config.eval_split or next((s for s in ("test", "validation") if s in loaded), None)
    if pool_split not in loaded or eval_split not in loaded:
        raise UserError(f"Hub dataset '{config.hf}' has splits {', '.join(loaded)}; set pool_split and eval_split")
    feature = loaded[pool_split].features.get(config.label_field)
    names = getattr(feature, "names", None)

    def rows(split: str) -> Iterator[tuple[str, dict]]:
        for i, row in enumerate(loaded[split]):
            if names is not None:
                row = {**row, config.label_field: names[row[config.label_field]]}
            yield f"{config.hf}[{split}][{i}]", row

    reader = _RowReader(config.text_field, config.label_field, set(names) if names else None, config.skip_invalid_rows)
    pool = reader.read(rows(pool_split), pool_split)
    labels = list(names) if names else sorted({e.label for e in pool})
    card = TaskCard(config.language, config.task, config.input_name, tuple(Category(v, v) for v in labels))
    name = config.name or config.hf.split("/")[-1]
    return Dataset(name, f"hf:{config.hf}", card, pool, {eval_split: reader.read(rows(eval_split), eval_split)},
                   eval_split, reader.skipped, f"hf:{config.hf}")


def load_dataset(config: DatasetConfig) -> Dataset:
    """Load the dataset a grid or the CLI names; every problem is a UserError naming file and line."""
    if config.is_bundled:
        folder = BUNDLED_DIR / config.name if config.name in bundled_names() else Path(config.name)
        if not (folder / "card.yaml").is_file():
            raise UserError(f"unknown dataset '{config.name}'{did_you_mean(config.name, bundled_names())}; bundled: "
                            f"{', '.join(bundled_names())}")
        return _load_card_dataset(folder, config)
    if config.path is not None:
        return _load_file_dataset(config)
    return _load_hub_dataset(config)


class DatasetCache:
    """Loads each dataset config once per process (a grid names the same dataset in many run specs)."""

    def __init__(self) -> None:
        self._loaded: dict[DatasetConfig, Dataset] = {}

    def get(self, config: DatasetConfig) -> Dataset:
        if config not in self._loaded:
            self._loaded[config] = load_dataset(config)
        return self._loaded[config]
