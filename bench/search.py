"""`bench search`: an Optuna study whose trials are RunSpecs, run by the same executor against the same job store as
`bench run`.

A trial samples a point of the space (`bench.plan.space`), expands it into its one RunSpec, and asks the job store: a
spec already finished (by a grid or an earlier trial) costs nothing (the trial is *cached*); otherwise the executor runs
its job graph, so a trained model is trained once and shared by every trial that uses it. The evaluation goes in
rounds over a seeded shuffled order of the examples; after each round the trial reports every example's correctness
(step = its position) and Optuna's Wilcoxon pruner, pairing them with the best trial's on the same examples, stops a
trial that is clearly worse: its run ends KILLED, tagged PRUNED, with its partial figures.

MLflow: the study has one parent run (made once, through the job store, for every worker on every machine); each
trial is a child run (kind `trial`) with the spec's params, the trial number, the study, its final state (COMPLETE,
PRUNED, FAIL or cached) and its running accuracy as a step metric; the trial's jobs nest under it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from rich.console import Console

from bench.plan.datasets import DatasetCache, DatasetConfig
from bench.plan.errors import UserError
from bench.plan.graph import build_graph
from bench.plan.space import OBJECTIVES, PRUNERS, SAMPLERS, Space
from bench.plan.specs import Job, RunSpec
from bench.run.executor import OnPartial, Pruned
from bench.run.jobs import ROUND, round_order
from bench.run.launch import Stores, Worker
from bench.run.launchers.interface import Place
from bench.run.locations import mask, rdb_storage, sqlite_path
from bench.run.progress import Reporter, say
from bench.run.store import DEFAULT_LEASE_S, DONE, PRUNED, JobStore
from reports.search_page import TrialRow
from reports.vocabulary import TRAIN_SECONDS, TRAINED_KINDS

SPACE_ATTR = "genclsbench.space"  # the study's user attribute: the fingerprint of its space
ERROR_ATTR = "error"  # a failed trial's user attribute: why it failed
CACHED = "cached"
INTERRUPTED = "interrupted (Ctrl-C)"


@dataclass
class SearchResult:
    """What a search leaves: its study, every trial (state COMPLETE, PRUNED, FAIL or cached; examples: evaluation
    examples it computed), the best ones (the Pareto front with several objectives), and the importance of each
    parameter per objective."""

    study: object
    trials: list[TrialRow]
    best: list[int]
    importances: dict[str, dict[str, float]] = field(default_factory=dict)


def open_study(space: Space, name: str, storage_uri: str, store: JobStore, lease_s: float = DEFAULT_LEASE_S):
    """The study `name` in `storage_uri` (created, or joined when it holds the same space). `store` serialises the
    creation of Optuna's tables and of the study among workers that start together (PostgreSQL's catalogue does
    not take two CREATE TABLEs of one name at once). A trial's heartbeat beats every quarter `lease_s`; a trial
    silent for `lease_s` (its worker died) is failed and retried, like a job whose claim lapsed."""
    with store.serialized():
        return _open_study(space, name, storage_uri, lease_s)


def _open_study(space: Space, name: str, storage_uri: str, lease_s: float):
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our own line says why, not a traceback
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group, Wilcoxon...
    path = sqlite_path(storage_uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    storage = rdb_storage(storage_uri, heartbeat_interval=max(1, int(lease_s / 4)), grace_period=max(2, int(lease_s)),
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    directions = [OBJECTIVES[o].direction for o in space.search.objectives]
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage)
        for _ in range(20):  # a worker starting at the same moment may not have written the space yet
            if SPACE_ATTR in study.user_attrs:
                break
            time.sleep(0.5)
        else:
            study.set_user_attr(SPACE_ATTR, space.fingerprint())
        if study.user_attrs.get(SPACE_ATTR) != space.fingerprint():
            raise UserError(f"study '{name}' in {mask(storage_uri)} was made with another space; give another "
                            "--study name, or the space file it was made with")
        optuna.storages.fail_stale_trials(study)
    else:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
        study.set_user_attr(SPACE_ATTR, space.fingerprint())
    seed = (space.search.seed + len(study.trials)) % 2**32  # a fresh study: the space's seed; a joining worker: another
    study.sampler = SAMPLERS[space.search.sampler](seed)
    study.pruner = PRUNERS[space.search.pruner](space.search.p_threshold, ROUND)
    return study


class Search:
    """Runs trials of one study as `worker` (see the module doc); `datasets` expand its sampled points into specs;
    `name`: the worker's name in the job store (given by its launcher; host:pid by default). Opens the study's
    parent run; `close` ends it."""

    def __init__(self, space: Space, study, worker: Worker, datasets: DatasetCache, reporter: Reporter,
                 lease_s: float, console: Console, name: str | None = None) -> None:
        self.space, self.study, self.worker, self.datasets = space, study, worker, datasets
        self.reporter, self.lease_s, self.console, self.name = reporter, lease_s, console, name
        self.parent = worker.recorder.open_parent(worker.store, f"study {study.study_name}", space.path, 0)

    def close(self, status: str) -> None:
        """End the study's parent run (FINISHED, or KILLED when this worker was stopped)."""
        self.worker.recorder.close_parent(self.parent, status)

    def _spec(self, trial) -> tuple[RunSpec, dict]:
        from bench.plan.grid import expand
        from runners.model_registry import default_dtype

        grid = self.space.sample(trial)
        specs = expand(grid, self.space.path, self.datasets, default_dtype())
        return specs[0], grid.model_dump(mode="json", exclude_defaults=True)

    def objective(self, trial) -> float | list[float]:
        import optuna

        started = time.monotonic()
        spec, grid = self._spec(trial)
        trial.set_user_attr("spec", spec.name)
        trial.set_user_attr("spec_hash", spec.key)
        trial.set_user_attr("grid", grid)
        run_id = self.worker.recorder.start_trial(spec, self.parent, trial.number, self.study.study_name)
        state = self.worker.store.states([spec.key]).get(spec.key)
        cached = state is not None and state.status == DONE
        say(self.console, f"trial {trial.number}: {spec.name}" + (" (finished earlier: cached)" if cached else ""))
        evaluated, figures, ended = [0], {}, "FAIL"
        try:
            if cached:
                trial.set_user_attr(CACHED, True)
                metrics = self._metrics(spec)
                self._replay(trial, spec, state.run_id)
            else:
                metrics = self._run(trial, spec, run_id, evaluated)
            values = [metrics.get(OBJECTIVES[o].metric, 0.0) for o in self.space.search.objectives]
            figures, ended = dict(zip(self.space.search.objectives, values)), CACHED if cached else "COMPLETE"
        except optuna.TrialPruned:
            ended = "PRUNED"
            raise
        except RuntimeError as exc:  # its job failed: why, for the page and for a search whose every trial failed
            trial.set_user_attr(ERROR_ATTR, str(exc))
            raise
        except KeyboardInterrupt:  # Optuna fails it; the page says why
            trial.set_user_attr(ERROR_ATTR, INTERRUPTED)
            raise
        finally:  # every trial, however it ended: its state, figures and cost
            trial.set_user_attr("examples", evaluated[0])
            trial.set_user_attr("seconds", time.monotonic() - started)
            self.worker.recorder.end_trial(run_id, ended, figures | {"examples_evaluated": evaluated[0]})
        return values[0] if len(values) == 1 else values

    def _replay(self, trial, spec: RunSpec, eval_run: str) -> None:
        """A cached trial's per-example results, reported in the order an evaluation goes through them (from its
        predictions), so the pruner can pair later trials with it when it is the best."""
        if not self.space.prunes:
            return
        rows = self.worker.recorder.predictions(eval_run)
        for step, i in enumerate(round_order(len(rows), spec.eval.sample_seed) if rows else []):
            trial.report(float(rows[i]["gold"] == rows[i]["prediction"]), step)

    def _metrics(self, spec: RunSpec) -> dict[str, float]:
        """The finished evaluation's metrics, with the training seconds of its stages."""
        store, recorder = self.worker.store, self.worker.recorder
        states = store.states()
        metrics = recorder.metrics([states[spec.key].run_id])[states[spec.key].run_id]
        stages = [j for j in build_graph([spec]).jobs.values() if j.KIND in TRAINED_KINDS]
        runs = [states[j.key].run_id for j in stages if j.key in states and states[j.key].run_id]
        trained = recorder.metrics(runs) if runs else {}
        return metrics | {TRAIN_SECONDS: sum(m.get(TRAIN_SECONDS, 0.0) for m in trained.values())}

    def _run(self, trial, spec: RunSpec, run_id: str, evaluated: list[int]) -> dict[str, float]:
        import optuna

        graph = build_graph([spec])
        examples = self.worker.performer.evaluation_examples(spec)
        pruned_before = any(t.user_attrs.get("spec_hash") == spec.key and t.state == optuna.trial.TrialState.PRUNED
                            for t in self.study.get_trials(deepcopy=False))
        if pruned_before:  # this point was judged clearly worse already: no need to evaluate it again
            raise optuna.TrialPruned(f"{spec.name} was pruned in an earlier trial")

        def observe(job: Job, eval_run: str) -> OnPartial:
            def on_partial(correct: list[bool]) -> None:
                for step in range(evaluated[0], len(correct)) if self.space.prunes else ():
                    trial.report(float(correct[step]), step)
                evaluated[0] = len(correct)
                accuracy = sum(correct) / len(correct)
                trial.set_user_attr("accuracy_so_far", accuracy)
                self.worker.recorder.log_step(run_id, {"accuracy_so_far": accuracy}, len(correct))
                if self.space.prunes and len(correct) < examples and trial.should_prune():
                    raise Pruned(f"after {len(correct)} of {examples} examples (accuracy so far {accuracy:.3f}): "
                                 "clearly worse than the best trial on the same examples (Wilcoxon)",
                                 {"accuracy_partial": accuracy, "examples_evaluated": float(len(correct))})
            return on_partial

        self.worker.executor(graph, self.reporter, run_id, self.lease_s, observe, self.name).run()
        state = self.worker.store.states([spec.key])[spec.key]
        if state.status == DONE:
            return self._metrics(spec)
        if state.status == PRUNED:
            raise optuna.TrialPruned(state.error)
        raise RuntimeError(f"{spec.name} failed: {state.error}")

    def optimize(self, trials: int, callbacks: Sequence[Callable] = ()) -> None:
        """Run trials until the study holds `trials` that ended COMPLETE or PRUNED, counting every worker's (a trial
        that failed, e.g. because its worker died, does not count: Optuna retries it); `callbacks` (Optuna's: study,
        frozen trial) run after each trial too, and may stop the study."""
        import optuna
        from optuna.trial import TrialState

        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        budget = optuna.study.MaxTrialsCallback(trials, states=counted)
        left = trials - len([t for t in self.study.get_trials(deepcopy=False) if t.state in counted])
        if left > 0:
            self.study.optimize(self.objective, n_trials=left, callbacks=[budget, self._line, *callbacks],
                                catch=(RuntimeError,), gc_after_trial=False)

    def _line(self, study, trial) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.COMPLETE:
            shown = ", ".join(f"{o} {v:.3f}" for o, v in zip(self.space.search.objectives, trial.values))
        elif "accuracy_so_far" in trial.user_attrs:
            shown = f"accuracy {trial.user_attrs['accuracy_so_far']:.3f} on {trial.user_attrs.get('examples', 0)} " \
                    "examples"
        else:
            shown = ""
        state = CACHED if trial.user_attrs.get(CACHED) else trial.state.name
        say(self.console, f"trial {trial.number} {state}" + (f": {shown}" if shown else ""))


def open_search(space: Space, study: str, storage: str, stores: Stores, lease_s: float, console: Console,
                environment: Mapping[str, str], datasets: DatasetCache | None = None,
                name: str | None = None) -> Search:
    """A worker of the study `study` of `space`, ready to optimise: its job store and Optuna storage opened (the
    study created by the first), its MLflow parent run open; `datasets`: the space's datasets, already read (they
    travel with a `SearchWork`); `name`: see `Search`."""
    from bench.run.launch import open_store, open_worker
    from bench.run.progress import LineReporter
    from bench.run.workspace import Workspace, default_cache
    from runners.batching import Batching

    jobs = open_store(stores)
    optuna_study = open_study(space, study, storage, jobs, lease_s)
    datasets, inference = datasets or DatasetCache(), space.grid.inference
    worker = open_worker(stores, jobs, Workspace(default_cache(environment)), datasets,
                         Batching(inference.batch_size, inference.tokens_per_batch))
    return Search(space, optuna_study, worker, datasets, LineReporter(console, scope="trial"), lease_s, console, name)


def travelling(space: Space, datasets: DatasetCache) -> Space:
    """`space` with a dataset file named by its config, its rows read into `datasets` once, here: a worker on another
    node reads them from there (the config is their key), never the file, which that node may not have."""
    configs = [DatasetConfig.from_ref(ref) if isinstance(ref, str) else ref for ref in space.grid.datasets]
    for config in configs:
        datasets.get(config)
    named = [config if config.path is not None else ref for ref, config in zip(space.grid.datasets, configs)]
    return replace(space, grid=space.grid.model_copy(update={"datasets": named}))


@dataclass
class SearchWork:
    """A study's work for every worker, wherever a launcher places it (`bench.run.launchers.Work`): trials of
    `study` in `storage` until the study holds `trials`, recorded in `stores`. The space's dataset rows travel in
    `datasets` (see `travelling`)."""

    space: Space
    study: str
    storage: str
    stores: Stores
    lease_s: float
    trials: int
    datasets: DatasetCache

    def prepare(self, place: Place, console: Console) -> None:
        from bench.run.launch import prepare_models
        from bench.run.workspace import Workspace, default_cache

        grid, training = self.space.grid, self.space.training
        trains = training is not None and any(m != "none" for m in training.get("method", ()))
        prepare_models(Workspace(default_cache(place.environment)), grid.models,
                       set(grid.models) if trains else set(), console)

    def __call__(self, place: Place, console: Console) -> None:
        search = open_search(self.space, self.study, self.storage, self.stores, self.lease_s, console,
                             place.environment, self.datasets, place.name)
        search.optimize(self.trials)
        search.close("FINISHED")


def lowered(space: Space, i: int) -> Callable:
    """Objective `i` as PED-ANOVA wants it: lower is better (it finds what makes a target low)."""
    sign = -1.0 if OBJECTIVES[space.search.objectives[i]].direction == "maximize" else 1.0
    return lambda trial: sign * trial.values[i]


def summarise(space: Space, study) -> SearchResult:
    """Every trial's outcome, the best trials, and the parameter importances (PED-ANOVA, which copes with
    parameters asked only in some trials; one table per objective)."""
    import optuna
    from optuna.trial import TrialState

    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        state = CACHED if t.user_attrs.get(CACHED) else t.state.name
        trials.append(TrialRow(t.number, state, t.values if t.state == TrialState.COMPLETE else None,
                               t.user_attrs.get("spec", "?"), dict(t.params), int(t.user_attrs.get("examples", 0)),
                               float(t.user_attrs.get("seconds", 0.0)),
                               t.user_attrs.get("accuracy_so_far") if t.state == TrialState.PRUNED else None,
                               t.user_attrs.get(ERROR_ATTR) if t.state == TrialState.FAIL else None))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        best = []
    elif len(space.search.objectives) == 1:
        best = [study.best_trial.number]
    else:  # the Pareto front, best on the first objective first
        best = [t.number for t in sorted(study.best_trials, key=lambda t: (lowered(space, 0)(t), t.number))]
    importances = {}
    if len(complete) >= 3:
        for i, objective in enumerate(space.search.objectives):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PED-ANOVA's notes on regimes with few trials
                try:
                    importances[objective] = optuna.importance.get_param_importances(
                        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=lowered(space, i))
                except (ValueError, RuntimeError):
                    continue  # too few trials, or no parameter varies yet
    return SearchResult(study, trials, best, importances)


def best_grid(result: SearchResult, experiment: str) -> dict | None:
    """A grid file (as a mapping) that reproduces the best trial, or with several objectives the Pareto front, in the
    experiment the search recorded into, so `bench run` finds its specs already finished. Trials differ in their
    inference strategy and their training section: the front's trials that train like its first (the best on the
    first objective) are one grid with a strategy block each; the description names any that train otherwise."""
    if not result.best:
        return None
    trials = {t.number: t for t in result.study.get_trials(deepcopy=False)}
    front = [trials[n] for n in result.best]
    grids = {t.number: dict(t.user_attrs["grid"]) for t in front}
    blocks = {n: grid.pop("strategies", {}) for n, grid in grids.items()}  # {}: every dimension at its default
    alike = [t for t in front if grids[t.number] == grids[front[0].number]]
    others = [t.number for t in front if t not in alike]
    chosen = [blocks[t.number] for t in alike]
    what = f"the best trial ({front[0].number})" if len(result.study.directions) == 1 else \
        f"the Pareto front (trials {', '.join(str(t.number) for t in alike)})"
    specs = "; ".join(t.user_attrs.get("spec", "") for t in alike)
    apart = f"; front trials {', '.join(map(str, others))} train otherwise (see search.html)" if others else ""
    return {**grids[front[0].number], "name": experiment,
            "description": f"{what} of study {result.study.study_name}: {specs}{apart}",
            "strategies": chosen[0] if len(chosen) == 1 else chosen}
