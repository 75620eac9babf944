"""Keep the libraries' own progress bars and noise out of the terminal, where bench shows its own progress. Called
once by a worker before its first job (never at import: importing a module changes no global setting)."""

from __future__ import annotations

import warnings


def quiet_libraries() -> None:
    """Silence transformers' per-tensor bars, datasets' per-map bars and TRL 1.16's deprecation warning about
    gradient checkpointing."""
    import datasets
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
