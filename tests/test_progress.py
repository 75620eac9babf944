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
