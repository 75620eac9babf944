"""What produced a result: the Python, the libraries whose versions move log-likelihoods and training, the suite's
own version (and git commit when it runs from a checkout) and the device. Recorded on every run, so a number can be
traced to the software and hardware that made it."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

LIBRARIES = ("torch", "transformers", "tokenizers", "trl", "peft", "mlflow", "optuna")
SUITE = "genclsbench"


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "none"


def _commit(checkout: Path) -> str:
    """The checkout's HEAD, `-dirty` when tracked files differ from it; `none` when the suite is not a checkout."""
    if not (checkout / ".git").exists():
        return "none"
    try:
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "none"
    return f"{head}-dirty" if changed else head


def _device() -> tuple[str, str]:
    """The device runs compute on (the one `runners.models.load_model` picks) and its name."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", _cpu_name()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def environment() -> dict[str, str]:
    """The same keys on every call and every machine (`none` where a thing is absent); read once per process."""
    device, device_name = _device()
    return {
        "python": platform.python_version(),
        **{name: _version(name) for name in LIBRARIES},
        SUITE: _version(SUITE),
        "commit": _commit(Path(__file__).resolve().parent.parent),
        "device": device,
        "device_name": device_name,
    }
