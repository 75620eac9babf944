"""`--on ray`: each worker is a Ray actor on the cluster at `--ray-address` ($RAY_ADDRESS), or on one Ray starts on
this machine when neither is given. An actor asks for the resources of `--gpus-per-worker` and `--cpus-per-worker`
(by default one GPU where the cluster has GPUs, else the cluster's CPUs split among the workers) and is spread over
the nodes. An actor whose node dies is restarted by Ray on another node and works again; the job it held is taken
over once its lease runs out, like any dead worker's. The work travels through Ray's object store (the planned
graph, the rows of its datasets, the URIs of the stores), never on a command line.

Ctrl-C (or a worker that fails) asks every actor to stop: each ends its running job KILLED and gives it back, then
the actors are killed; a cluster this command joined stays up. Ray is imported here only."""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator

from rich.console import Console

from bench.plan.errors import UserError
from bench.run.launchers.interface import Launch, Place, Placement, Work, missing_engine, run_placed

MAX_RESTARTS = 3  # a worker whose node died comes back this many times (then its jobs wait for another run)
STOP_GRACE_S = 60.0  # how long stopped actors get to give their jobs back before they are killed
PROBE_S = 3.0  # a cluster address that does not answer this fast is reported (Ray's client would retry a minute)


def _ray():
    try:
        import ray
    except ImportError:
        raise missing_engine("ray", "Ray") from None
    return ray


def probe(address: str) -> None:
    """Fail with one line unless something answers at the cluster address (`host:port`, `ray://host:port`; `auto`
    is Ray's own look-up on this machine)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address}: give the head node's host:port (its GCS port, 6379 unless "
                        "`ray start --head --port` said otherwise), or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S):
            return
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one with "
                        "`ray start --head`, or give its head node's address (--ray-address or $RAY_ADDRESS)") from None


def _connect(ray, address: str | None):
    """Join the cluster at `address`, or start one on this machine (None: "local", so that Ray does not look for
    the last cluster this machine ran, which may be gone)."""
    try:
        return ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot join the Ray cluster at {address or 'this machine'} ({first}); check the address "
                        "and that this machine runs the cluster's Ray and Python versions") from None


def resources(nodes: list[dict], placement: Placement) -> tuple[int, int]:
    """(CPUs, GPUs) per worker on a cluster of `nodes` (Ray's `ray.nodes()`): what `placement` asks for, or the
    defaults of the module doc; asking for more than any one node has is one line."""
    alive = [node["Resources"] for node in nodes if node.get("Alive")]
    most_gpus = max((r.get("GPU", 0.0) for r in alive), default=0.0)
    most_cpus = int(max((r.get("CPU", 0.0) for r in alive), default=0.0))
    gpus = placement.gpus_per_worker if placement.gpus_per_worker is not None else int(most_gpus >= 1)
    if gpus > most_gpus:
        raise UserError(f"--gpus-per-worker {gpus}: no node of the Ray cluster has {gpus} GPU(s) (the most on one "
                        f"node: {most_gpus:g}); ask for fewer (0 runs on CPUs), or add nodes with GPUs")
    total_cpus = int(sum(r.get("CPU", 0.0) for r in alive))
    cpus = placement.cpus_per_worker or (1 if gpus else max(1, min(total_cpus // placement.workers, most_cpus)))
    if cpus > most_cpus:
        raise UserError(f"--cpus-per-worker {cpus}: no node of the Ray cluster has {cpus} CPUs (the most on one "
                        f"node: {most_cpus}); ask for fewer")
    return cpus, gpus


class StopSignal:
    """Set once by the launching process; every worker waits on it (an async actor: waiting costs nothing)."""

    def __init__(self) -> None:
        import asyncio

        self.event = asyncio.Event()

    async def set(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


class RayWorker:
    """One worker as a Ray actor, named `ray:<node ip>/<node id>:<actor id>` in the job store (`bench status` shows
    where each running job runs). Restarted by Ray when its process or node dies, its pending `run` retried."""

    def __init__(self, threads: int) -> None:
        import ray

        context = ray.get_runtime_context()
        name = f"ray:{ray.util.get_node_ip_address()}/{context.get_node_id()[:8]}:{context.get_actor_id()}"
        self.place = Place(name, name, threads, dict(os.environ))  # this node's environment: its cache folder
        self.working = False

    def run(self, work: Work, stop) -> str:
        """Do `work` until nothing is left ("done"), or until the launching process sets `stop` (a `StopSignal`)."""
        console = Console(width=120)
        console.print(f"worker {self.place.name} at work (pid {os.getpid()})", highlight=False, markup=False)
        self.working = True
        threading.Thread(target=self._stop_when_asked, args=(stop,), daemon=True).start()
        try:
            run_placed(work, self.place, console)
        except KeyboardInterrupt:
            return "stopped"
        finally:
            self.working = False
        return "done"

    def _stop_when_asked(self, stop) -> None:
        """Wait for the stop signal, then interrupt the work as Ctrl-C would (the running job ends KILLED and is
        given back)."""
        import ray

        with contextlib.suppress(ray.exceptions.RayError):  # the launching process is gone: Ray ends its actors
            ray.get(stop.wait.remote())
            if self.working:
                _thread.interrupt_main()


def _result(ray, ref) -> None:
    """A worker's end: a UserError on its node (a model or file it lacks) stays one line."""
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise UserError(str(exc.cause)) from None
        raise


def start_workers(ray, work: Work, count: int, cpus: int, gpus: int, console: Console) -> bool:
    """`count` worker actors on `work`, each finished one killed at once (a restarted worker may need its place);
    on any error or Ctrl-C, every worker is asked to stop and given `STOP_GRACE_S` to give its job back."""
    stop = ray.remote(StopSignal).options(num_cpus=0).remote()
    actor = ray.remote(RayWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=MAX_RESTARTS,
                                          max_task_retries=-1, scheduling_strategy="SPREAD")
    shared = ray.put(work)  # into the object store once, read by every worker (and by a restarted one's retried run)
    workers = [actor.remote(cpus) for _ in range(count)]  # arguments to `run`, not here: a restart needs none
    running = {worker.run.remote(shared, stop): worker for worker in workers}
    try:
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)  # short waits: Ctrl-C gets through
            for ref in done:
                ray.kill(running.pop(ref))
                _result(ray, ref)
    except BaseException:
        console.print(f"stopping {len(running)} Ray worker(s): each gives its running job back", highlight=False,
                      markup=False)
        stop.set.remote()
        ray.wait(list(running), num_returns=len(running), timeout=STOP_GRACE_S)
        raise
    finally:
        for worker in [*workers, stop]:
            ray.kill(worker)
    return True


class RayLauncher:
    """Workers as actors of a Ray cluster (see the module doc)."""

    accepts: tuple[str, ...] = ("ray_address", "cpus_per_worker", "gpus_per_worker")

    @contextlib.contextmanager
    def ready(self, placement: Placement, console: Console) -> Iterator[Launch]:
        ray = _ray()
        if placement.ray_address:
            probe(placement.ray_address)
        context = _connect(ray, placement.ray_address)
        try:
            cpus, gpus = resources(ray.nodes(), placement)
            dashboard = f"http://{context.dashboard_url}" if context.dashboard_url else \
                "none (pip install 'ray[default]' on the head node)"
            nodes = sum(bool(node.get("Alive")) for node in ray.nodes())
            console.print(f"Ray cluster {placement.ray_address or 'started on this machine'}: {nodes} node(s); "
                          f"{placement.workers} worker(s) with {cpus} CPU(s) and {gpus} GPU(s) each; dashboard "
                          f"{dashboard}", highlight=False, markup=False)
            yield lambda work: start_workers(ray, work, placement.workers, cpus, gpus, console)
        finally:
            ray.shutdown()  # leaves a cluster this command joined; stops one it started
