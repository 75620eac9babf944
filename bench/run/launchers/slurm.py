"""`--on slurm`: the workers as one Slurm job array, submitted through submitit from a machine with `sbatch` (the
cluster's login node). Each array task is one worker; the work travels in submitit's pickle in the logs folder
(which must be on a disk the nodes share, as submitit requires), never on a command line. Partition, GPUs, CPUs,
memory and time limit come from the options or the grid's `launcher:` section; what neither gives is the
partition's default. The command prints the array's job id and where its logs are, and returns (or waits, `--wait`).
Slurm's warning before the time limit (SIGUSR2) makes a worker give its running job back, as Ctrl-C does; a worker
killed outright loses its job for a lease. submitit is imported here only."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from rich.console import Console

from bench.plan.errors import UserError
from bench.run.launchers.interface import Launch, Place, Placement, Work, missing_engine, run_placed

LOCAL_TIMEOUT_MIN = 24 * 60  # submitit's local executor stops a job after 2 minutes unless told otherwise


def _submitit():
    try:
        import submitit
    except ImportError:
        raise missing_engine("slurm", "submitit") from None
    return submitit


def _give_back(signum, frame) -> None:
    raise KeyboardInterrupt  # the running job ends KILLED and is free for the next worker at once


def slurm_worker(work: Work, threads: int | None) -> None:
    """One array task: a worker named `slurm:<host>:<job id>` (the job store, and so `bench status`, show it)."""
    import submitit

    job = submitit.JobEnvironment()
    name = f"slurm:{job.hostname}:{job.job_id}"
    signal.signal(signal.SIGUSR2, _give_back)
    run_placed(work, Place(name, name, threads, dict(os.environ)), Console(width=120))


@dataclass(frozen=True)
class SlurmLauncher:
    """Workers as a Slurm job array (see the module doc). `cluster` "local" runs the array as processes on this
    machine through submitit's local executor (the tests, or a rehearsal before a real cluster)."""

    accepts: ClassVar[tuple[str, ...]] = ("partition", "cpus_per_worker", "gpus_per_worker", "mem_gb", "time_min",
                                          "slurm_logs", "wait")
    cluster: str = "slurm"

    @contextlib.contextmanager
    def ready(self, placement: Placement, console: Console) -> Iterator[Launch]:
        submitit = _submitit()
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--on slurm: sbatch is not on this machine's PATH; run bench on the Slurm cluster's login "
                            "node, or choose --on local or --on ray")
        yield lambda work: self._submit(submitit, work, placement, console)

    def _executor(self, submitit, placement: Placement):
        folder = placement.slurm_logs.absolute()
        if self.cluster == "local":
            executor = submitit.LocalExecutor(folder=folder)
            executor.update_parameters(timeout_min=placement.time_min or LOCAL_TIMEOUT_MIN)
            return executor
        executor = submitit.SlurmExecutor(folder=folder)
        asked = {"partition": placement.partition, "cpus_per_task": placement.cpus_per_worker,
                 "gpus_per_node": placement.gpus_per_worker,
                 "mem": f"{placement.mem_gb}G" if placement.mem_gb else None}
        executor.update_parameters(job_name="genclsbench", array_parallelism=placement.workers,
                                   time=placement.time_min,  # None: no --time line, the partition's default limit
                                   **{key: value for key, value in asked.items() if value is not None})
        return executor

    def _submit(self, submitit, work: Work, placement: Placement, console: Console) -> bool:
        count = placement.workers
        jobs = self._executor(submitit, placement).map_array(slurm_worker, [work] * count,
                                                             [placement.cpus_per_worker] * count)
        ids = sorted({job.job_id.split("_")[0] for job in jobs})
        console.print(f"submitted {count} worker(s) as {self.cluster} job {', '.join(ids)}; logs in "
                      f"{placement.slurm_logs.absolute()} ({jobs[0].paths.stdout.name} and the like)",
                      highlight=False, markup=False)
        if not placement.wait:
            return False
        for job in jobs:
            try:
                job.result()
            except Exception as exc:  # noqa: BLE001 - submitit's error holds the worker's whole traceback
                last = next((line for line in reversed(str(exc).strip().splitlines()) if line.strip()), "")
                raise UserError(f"worker {job.job_id} failed: {last.strip()[:300]} (log: {job.paths.stderr})") \
                    from None
        return True
