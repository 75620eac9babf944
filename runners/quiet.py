"""Keep the libraries' own progress bars and noise out of the terminal, where bench shows its own progress: for one
call (`bars_off`, around preparing the models), or for a worker's jobs (`quiet_libraries`, called once by a worker
before its first job). Never at import: importing a module changes no global setting."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, MutableMapping

# MLflow reads these from the environment when it is imported: its INFO lines (store creation, migrations), its
# per-download progress bars and its "View run at" line after every run
MLFLOW_QUIET = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def quiet_mlflow(environment: MutableMapping[str, str]) -> None:
    """Put `MLFLOW_QUIET` into a process's `environment` (os.environ, at an entry point: the command line, or a
    worker that Ray or Slurm started), where the user has not set them, before MLflow is imported."""
    for name, value in MLFLOW_QUIET.items():
        environment.setdefault(name, value)


def quiet_libraries() -> None:
    """Silence transformers' per-tensor bars, datasets' per-map bars and TRL 1.16's deprecation warning about
    gradient checkpointing."""
    import datasets
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)


@contextlib.contextmanager
def bars_off() -> Iterator[None]:
    """The libraries' progress bars off for the duration of a call, each switch put back as it was after it:
    transformers' ("Loading weights", "Writing model shards"), huggingface_hub's (downloads), and a bar drawn with
    tqdm past both switches (transformers' GGUF conversion, "Converting and de-quantizing GGUF tensors", whose tqdm
    reads its settings once, at import): what is written to sys.stderr meanwhile is held back. Log records keep
    their own stream."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    was_on = transformers_logging.is_progress_bar_enabled()
    with disable_progress_bars():  # huggingface_hub's own context manager: re-enabled on exit if it was on
        transformers_logging.disable_progress_bar()
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                yield
        finally:
            if was_on:
                transformers_logging.enable_progress_bar()
