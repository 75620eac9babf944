import json

import pytest

from bench.datasets import DatasetConfig, bundled_names, load_dataset
from bench.errors import UserError


def test_bundled_sets_load_with_definitions():
    assert bundled_names() == ["emotion", "iflytek_fewclue", "sms_spam", "sst2", "tnews"]
    for name in bundled_names():
        dataset = load_dataset(DatasetConfig(name=name))
        assert dataset.card.has_definitions, name
        assert {e.label for e in dataset.pool} <= {c.value for c in dataset.card.categories}
        assert dataset.identity == name
    emotion = load_dataset(DatasetConfig(name="emotion"))
    assert (len(emotion.pool), len(emotion.eval_splits["test"])) == (16000, 2000)


def test_evaluation_sample_is_seeded_and_a_subset():
    emotion = load_dataset(DatasetConfig(name="emotion"))
    a = emotion.evaluation("test", 50, 0)
    assert a == emotion.evaluation(None, 50, 0) and len(a) == 50
    assert a != emotion.evaluation("test", 50, 1)
    assert set(a) <= set(emotion.eval_splits["test"])
    with pytest.raises(UserError, match="no evaluation split 'dev'; available: validation, test"):
        emotion.evaluation("dev", None, 0)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_user_jsonl_with_bad_rows_fails_naming_file_and_line_or_skips_and_counts(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"sentence": f"text number {i}", "y": "pos" if i % 2 else "neg"} for i in range(40)]
    rows[7]["sentence"] = "  "
    write_jsonl(path, rows)
    with pytest.raises(UserError, match=rf"{path}:8: empty text; .*skip_invalid_rows"):
        load_dataset(DatasetConfig(path=str(path), text_field="sentence", label_field="y"))
    dataset = load_dataset(DatasetConfig(path=str(path), text_field="sentence", label_field="y",
                                         skip_invalid_rows=True))
    assert dataset.skipped_rows == 1
    assert len(dataset.pool) + len(dataset.eval_splits["eval"]) == 39
    assert [c.value for c in dataset.card.categories] == ["neg", "pos"]
    assert dataset.identity.startswith("file:")


def test_eval_file_labels_must_be_known(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_jsonl(train, [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    write_jsonl(test, [{"text": "fine", "label": "pos"}, {"text": "meh", "label": "neutral"}])
    with pytest.raises(UserError, match=rf"{test}:2: label 'neutral' is not one of neg, pos"):
        load_dataset(DatasetConfig(path=str(train), eval_path=str(test)))


def test_csv_and_missing_column(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{'a' if i % 3 else 'b'}\n" for i in range(30)))
    assert len(load_dataset(DatasetConfig(path=str(path))).card.categories) == 2
    with pytest.raises(UserError, match=rf"{path}:2: no 'body' column"):
        load_dataset(DatasetConfig(path=str(path), text_field="body"))


def test_references_resolve_or_fail_clearly(tmp_path):
    assert DatasetConfig.from_ref("emotion").name == "emotion"
    assert DatasetConfig.from_ref("hf:dair-ai/emotion").hf == "dair-ai/emotion"
    with pytest.raises(UserError, match="unknown dataset 'emotions'"):
        DatasetConfig.from_ref("emotions")


def test_hub_dataset_offline_names_the_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="offline, use a bundled dataset .*emotion"):
        load_dataset(DatasetConfig(hf="some-org/surely-not-cached-dataset"))
