"""Identity that lasts: hashes derived from the records' fields, pinned for the shipped grids, unchanged by a new
setting left at its default, and changed by what changes a result (data contents, prompt templates, settings)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from bench.plan.datasets import DatasetCache
from bench.plan.grid import expand, read_grid
from bench.plan.identity import identity_field, identity_hash, params

GRIDS = Path(__file__).resolve().parent.parent / "grids"


def _specs(name: str):
    path = GRIDS / name
    return {s.name: s for s in expand(read_grid(path), path, DatasetCache(), "float32")}


def test_golden_hashes_of_the_shipped_grids():
    """If one of these changes, every stored run of it would silently stop counting as done: change them only on
    purpose (a changed prompt template or dataset file), and say so in the README."""
    quick = _specs("quick.yaml")
    assert quick["emotion/tfidf-logreg/baseline:tfidf-logreg"].key == "9c9c1d31a4652008"
    assert quick["emotion/smollm2-135m/zero"].key == "181213f429f4267d"
    assert quick["emotion/smollm2-135m/zero+ppl"].key == "3099ae6276c57f03"
    trained = _specs("quick_train.yaml")["emotion/smollm2-135m/sft+rloo/zero"].train
    assert (trained.key, trained.warmup().key) == ("102ed6c0bd63ae8f", "f12616e11b330a67")


@dataclass(frozen=True)
class Before:
    KIND = "example"
    seed: int
    name: str = field(default="x", metadata=identity_field(identity=False))


@dataclass(frozen=True)
class After(Before):
    temperature: float = 1.0  # a setting added later, with a default


def test_a_new_setting_at_its_default_keeps_old_hashes():
    assert identity_hash(Before(3)) == identity_hash(After(3))
    assert identity_hash(After(3, temperature=0.5)) != identity_hash(Before(3))
    assert identity_hash(Before(3, name="shown only")) == identity_hash(Before(3))  # not identity
    assert identity_hash(Before(4)) != identity_hash(Before(3))


def test_what_changes_a_result_changes_the_hash(tmp_path, monkeypatch):
    import strategies.templates

    spec = _specs("quick.yaml")["emotion/smollm2-135m/zero"]
    assert replace(spec, seed=1).key != spec.key and replace(spec, max_new_tokens=13).key != spec.key
    assert replace(spec, dataset=replace(spec.dataset, content="emotion:other")).key != spec.key
    template = replace(strategies.templates.TEMPLATES["en"], categories="Labels:")
    monkeypatch.setitem(strategies.templates.TEMPLATES, "en", template)
    reworded = _specs("quick.yaml")["emotion/smollm2-135m/zero"]
    assert reworded.key != spec.key  # the prompt template's wording is part of the identity
    assert replace(reworded, prompt_format=spec.prompt_format).key == spec.key


def test_a_template_changes_the_hash_and_nothing_else():
    from strategies.prompts import prompt_format

    spec = _specs("quick.yaml")["emotion/smollm2-135m/zero+ppl"]
    assert spec.strategy.template == "default" and spec.prompt_format == prompt_format("en")
    formats = {prompt_format("en", name) for name in ("default", "question", "expert", "terse")}
    assert len(formats) == 4  # each wording fingerprints differently
    reworded = replace(spec, strategy=replace(spec.strategy, template="terse"),
                       prompt_format=prompt_format("en", "terse"))
    assert reworded.key != spec.key
    differing = {k for k, v in params(type(spec), reworded).items() if params(type(spec), spec)[k] != v}
    assert differing == {"infer.template", "spec_hash"}  # every other param, and so every other setting, is equal


@pytest.mark.parametrize("name", ["quick.yaml", "quick_train.yaml", "two_stage.yaml", "gencls.yaml",
                                  "calibration_robustness.yaml"])
def test_every_run_of_a_grid_has_the_same_param_keys(name):
    from bench.plan.specs import RunSpec

    keys = {tuple(sorted(params(RunSpec, s))) for s in _specs(name).values()}
    assert len(keys) == 1 and "spec_hash" in next(iter(keys))


def test_the_names_reports_read_are_params_runs_carry():
    from bench.plan.specs import RunSpec
    from reports.vocabulary import REPORT_PARAMS

    assert set(REPORT_PARAMS) <= set(params(RunSpec, None))
