"""genclsbench: the CLI and the experiment core (grids, datasets, run specs, tracking, metrics)."""
