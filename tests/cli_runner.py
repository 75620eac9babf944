"""Running `bench run` in-process, as a user would from the shell."""

import sys

from bench.cli import main


def run_cli(monkeypatch, *args: str) -> int:
    """The exit code of `bench run ARGS`."""
    return bench(monkeypatch, "run", *args)


def bench(monkeypatch, *args: str) -> int:
    """The exit code of `bench ARGS`."""
    monkeypatch.setattr(sys, "argv", ["bench", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def flat(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines
