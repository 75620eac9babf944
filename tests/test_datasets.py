import json

import pytest

from bench.plan.datasets import DatasetConfig, bundled_names, load_dataset
from bench.plan.errors import UserError


def test_bundled_sets_load_with_definitions():
    assert bundled_names() == ["emotion", "iflytek_fewclue", "sms_spam", "sst2", "tnews"]
    for name in bundled_names():
        dataset = load_dataset(DatasetConfig(name=name))
        assert dataset.card.has_definitions, name
        assert {e.label for e in dataset.pool} <= {c.value for c in dataset.card.categories}
        assert dataset.identity.startswith(f"{name}:")  # the name and a fingerprint of the card and the files
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
    assert len(dataset.pool) + len(dataset.eval_splits["test"]) == 39 and dataset.name == "mine"
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


def test_a_user_file_is_named_after_its_folder_or_name_and_evaluates_on_split_test(tmp_path):
    folder = tmp_path / "banking"
    folder.mkdir()
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    write_jsonl(train, [{"text": f"t{i}", "label": i % 3} for i in range(30)])
    write_jsonl(test, [{"text": f"e{i}", "label": i % 3} for i in range(9)])
    dataset = load_dataset(DatasetConfig(path=str(train), eval_path=str(test)))
    assert dataset.name == "banking" and dataset.default_eval_split == "test"
    assert len(dataset.evaluation("test", None, 0)) == 9
    assert load_dataset(DatasetConfig(path=str(train), name="b77")).name == "b77"


def test_a_labels_file_gives_names_definitions_and_the_class_list(tmp_path):
    train, labels = tmp_path / "train.jsonl", tmp_path / "labels.jsonl"
    write_jsonl(train, [{"text": f"t{i}", "label": i % 2} for i in range(30)])
    write_jsonl(labels, [{"label_id": 0, "label": "card_arrival", "definition": "Asks when a card arrives."},
                         {"label_id": 1, "label": "top_up_failed", "definition": "A top-up did not go through."},
                         {"label_id": 2, "label": "lost_card", "definition": "The card was lost or stolen."}])
    config = DatasetConfig(path=str(train), labels={"path": str(labels), "value_field": "label_id",
                                                    "name_field": "label"})
    dataset = load_dataset(config)
    assert [(c.value, c.name) for c in dataset.card.categories] == [
        ("0", "card_arrival"), ("1", "top_up_failed"), ("2", "lost_card")]  # every listed class, in file order
    assert dataset.card.has_definitions
    write_jsonl(train, [{"text": "x", "label": 7}] + [{"text": f"t{i}", "label": i % 2} for i in range(30)])
    with pytest.raises(UserError, match=rf"{train}:1: label '7' is not one of 0, 1, 2"):
        load_dataset(config)
    with pytest.raises(UserError, match=rf"{labels}:1: no 'value' column \(columns: label_id, label, definition\)"):
        load_dataset(DatasetConfig(path=str(train), labels={"path": str(labels)}))


def test_a_json_array_row_is_named_as_such(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n["b", "y"]\n', encoding="utf-8")
    with pytest.raises(UserError, match=rf"{path}:2: a JSON list, not an object"):
        load_dataset(DatasetConfig(path=str(path)))


@pytest.mark.parametrize("name, content, message", [
    ("d.csv", "text,label\ncaf\u00e9 au lait,a\nb,b\n".encode("latin-1"), r"d\.csv:2: not UTF-8 text \(byte 0xe9\)"),
    ("d.jsonl", b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n',
     r"d\.jsonl:2: not UTF-8 text \(byte 0xe9\)"),
    ("d.csv", b'text,label\n"unclosed,a\n', r"d\.csv: not a readable CSV"),
])
def test_a_file_that_is_not_utf8_or_not_csv_is_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as caught:
        load_dataset(DatasetConfig(path=str(path)))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("ref", ["./missing.jsonl", "data/missing.csv", "missing.csv", "/no/such/folder/"])
def test_a_missing_dataset_path_is_named_as_a_path_not_a_hub_failure(tmp_path, monkeypatch, ref):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=rf"dataset file '{ref}' does not exist \(looked at /"):
        DatasetConfig.from_ref(ref)
    assert DatasetConfig.from_ref("dair-ai/emotion").hf == "dair-ai/emotion"


def test_a_bad_split_names_the_file_it_looked_in(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) + "\n" for i in range(40)))
    dataset = load_dataset(DatasetConfig(path=str(path)))
    with pytest.raises(UserError, match=rf"dataset 'mine' \({path}\) has no evaluation split 'eval'; available: test"):
        dataset.evaluation("eval", None, 0)


def test_a_file_with_nothing_held_out_says_so_and_how_to_fix_it(tmp_path):
    import hashlib

    kept = [t for t in (f"text {i}" for i in range(50)) if int(hashlib.sha256(t.encode()).hexdigest(), 16) % 5][:4]
    path = tmp_path / "few.jsonl"
    write_jsonl(path, [{"text": t, "label": "ab"[i % 2]} for i, t in enumerate(kept)])
    with pytest.raises(UserError, match=r"none of its 4 usable row\(s\) is held out .*add rows, or give eval_path"):
        load_dataset(DatasetConfig(path=str(path)))
