"""The grid's ETA: each kind of work at its own measured rate, moving while the running job advances; the lines
that say so."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from bench.plan.cost import Cost
from bench.run.progress import LineReporter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_kind_of_work_is_timed_at_its_own_rate_and_the_eta_moves_with_the_running_job():
    clock = Clock()
    reporter = LineReporter(Console(file=io.StringIO()), clock=clock)
    reporter.plan({"a": Cost(1000, "", "score"), "b": Cost(1000, "", "score"), "c": Cost(100, "", "generate"),
                   "d": Cost(500, "", "train"), "base": Cost(0, "", "baseline")})
    assert reporter.eta() is None  # nothing measured yet
    reporter.start("a", "A", "examples")
    clock.now = 10.0
    reporter.advance(50, 100)  # half of a: 500 scored tokens in 10 s
    assert reporter.eta() == pytest.approx(500 * 0.02 + 1000 * 0.02 + 100 * 0.02 + 500 * 0.02)  # unseen: all work's
    clock.now = 20.0
    reporter.end("a", "done A", finished=True)
    reporter.start("c", "C", "examples")
    clock.now = 30.0
    reporter.advance(0.5, 10)  # 5 of c's 100 generated tokens in 10 s: 2 s a token
    pooled = (20 + 10) / (1000 + 5)
    assert reporter.eta() == pytest.approx(95 * 2 + 1000 * 0.02 + 500 * pooled)
    clock.now = 40.0
    reporter.advance(1.0, 10)  # the generation goes on: the ETA follows it (20 s for 10 tokens, still 2 s each)
    pooled = (20 + 20) / (1000 + 10)
    assert reporter.eta() == pytest.approx(90 * 2 + 1000 * 0.02 + 500 * pooled)


def test_a_job_that_ends_without_a_result_leaves_the_estimate_and_teaches_no_rate():
    clock = Clock()
    reporter = LineReporter(Console(file=io.StringIO()), clock=clock)
    reporter.plan({"a": Cost(1000, "", "score"), "b": Cost(1000, "", "score")})
    reporter.end("a", "FAILED A: its dependency failed")  # failed without running: never started
    reporter.start("b", "B", "examples")
    clock.now = 5.0
    reporter.end("b", "FAILED B: out of memory")
    assert reporter.eta() == 0.0 and reporter.spent == {}


def _build_drawing_bars(target) -> None:
    """A model build that draws what transformers' do: a bar through its switch ("Writing model shards") and one
    with tqdm past it (the GGUF conversion's)."""
    from tqdm.auto import tqdm
    from transformers.utils import logging as transformers_logging

    list(transformers_logging.tqdm(range(3), desc="Writing model shards"))
    list(tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    (target / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")


def test_preparing_a_model_is_one_line_of_ours_and_leaves_the_libraries_switches_as_they_were(tmp_path, monkeypatch,
                                                                                             capfd):
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    from bench.run.launch import prepare_models
    from bench.run.workspace import Workspace
    from runners.model_registry import MODELS, ModelEntry

    monkeypatch.setitem(MODELS, "drawing", ModelEntry("draws bars", _build_drawing_bars, "r", 64, "drawing once, ~0 s"))
    hub_off, transformers_on = are_progress_bars_disabled(), transformers_logging.is_progress_bar_enabled()
    enable_progress_bars()  # as a process starts (a worker run earlier in this one may have switched them off)
    transformers_logging.enable_progress_bar()
    try:
        out = io.StringIO()
        for _ in range(2):  # the second time it is ready: nothing to say
            prepare_models(Workspace(tmp_path), ["drawing"], set(), Console(file=out, width=20))
        assert out.getvalue() == "preparing drawing: drawing once, ~0 s\n"  # one line, though the log is 20 wide
        assert capfd.readouterr() == ("", "")  # no bar, not even a carriage return
        assert transformers_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    finally:
        (disable_progress_bars if hub_off else enable_progress_bars)()
        (transformers_logging.enable_progress_bar if transformers_on else transformers_logging.disable_progress_bar)()


def test_into_a_file_a_long_line_stays_whole_and_a_tables_title_wraps_only_past_the_console():
    from bench.cli import _table
    from bench.run.progress import say

    out = io.StringIO()
    console = Console(file=out, width=60)  # a file: no terminal
    uri = "sqlite:////a/rather/long/folder/name/that/goes/on/mlflow.db"
    say(console, f"grid quick: 6 runs; tracking {uri}, experiment 'quick'")
    console.print(_table("emotion / smollm2-135m / test (100 examples); baseline zero", ["run", "acc"]))
    lines = out.getvalue().splitlines()
    assert lines[0] == f"grid quick: 6 runs; tracking {uri}, experiment 'quick'"  # rich would break it at 60
    assert lines[1] == "emotion / smollm2-135m / test (100 examples); baseline zero"  # not at the table's width


def test_a_trials_lines_name_their_eta_and_say_when_a_batch_is_generating():
    out = io.StringIO()
    reporter = LineReporter(Console(file=out, width=300), interval=0.01, scope="trial")
    reporter.plan({"a": Cost(100, "", "generate")})
    reporter.start("a", "A", "examples")

    def shown(text: str) -> bool:
        deadline = time.monotonic() + 10
        while text not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        return text in out.getvalue()

    assert shown("A: loading the model and data (no examples done yet)")
    reporter.advance(0.4, 200)  # a reasoning batch under way: not "0 examples"
    assert shown("A: 0.4/200 examples (a batch is generating; counted by the tokens written)")
    reporter.end("a", "done A", finished=True)
    assert "trial eta" in out.getvalue() and "grid" not in out.getvalue()
