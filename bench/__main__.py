"""`python -m bench ...`: the same CLI as `bench ...` (how `--workers` starts its other worker processes)."""

from bench.cli import main

main()
