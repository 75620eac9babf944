"""Where a command's workers run, one launcher per `--on` value (see `interface` for what they share): adding a
launcher is one registration here. Ray and submitit are imported inside their launchers only, when used."""

from __future__ import annotations

from bench.plan.errors import UserError
from bench.run.launchers.interface import Launcher, Placement
from bench.run.launchers.local import LocalLauncher
from bench.run.launchers.ray import RayLauncher
from bench.run.launchers.slurm import SlurmLauncher
from strategies.lookup import did_you_mean

LAUNCHERS: dict[str, Launcher] = {"local": LocalLauncher(), "ray": RayLauncher(), "slurm": SlurmLauncher()}


def placement(on: str, workers: int, argv: tuple[str, ...], environment: dict[str, str], given: dict[str, object],
              section: dict[str, object]) -> Placement:
    """What `--on` is asked to start: `given` (the options on the command line) over `section` (the grid file's
    `launcher:` mapping, whose keys other launchers read are passed over); an option `on` does not read is one
    line."""
    if on not in LAUNCHERS:
        raise UserError(f"--on {on}: no such launcher{did_you_mean(on, LAUNCHERS)}; give one of "
                        f"{', '.join(LAUNCHERS)}")
    accepts = LAUNCHERS[on].accepts
    for name in given:
        if name not in accepts:
            owners = [n for n, launcher in LAUNCHERS.items() if name in launcher.accepts]
            raise UserError(f"--{name.replace('_', '-')} does not apply to --on {on}; it is an option of --on "
                            f"{' and --on '.join(owners)}")
    chosen = {name: value for name, value in section.items() if name in accepts and value is not None} | given
    return Placement(workers, argv, environment, **chosen)
