"""One search run from settings: load model, task and space, open the storage, run the engine.

The run folder holds ``run.json`` (settings with the storage URL masked, objectives, study name,
model shape), the default SQLite study and the adapters of the final stage; ``autopeft export``
and ``autopeft report`` start from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft._imports import require_installed
from autopeft.atomic import write_json
from autopeft.backends.base import Backend
from autopeft.backends.local import LocalBackend
from autopeft.data import is_higher_better
from autopeft.errors import AutopeftError
from autopeft.search.engine import SearchEngine, SearchObserver, SearchOutcome, SearchPlan
from autopeft.search.evaluator import AdapterBuilder, SettingsEvaluatorFactory, make_runner_evaluator
from autopeft.search.feasibility import LOFIT_NEEDS_HEADS
from autopeft.search.objectives import Objective, parse_objectives
from autopeft.search.progress import logged
from autopeft.search.samplers import canonical_sampler_name
from autopeft.search.settings import DEFAULT_TRIALS, SearchSettings, distinct_rungs
from autopeft.search.storage import (
    check_storage_url,
    default_storage,
    has_credentials,
    is_remote_storage,
    local_storage_path,
    mask_url,
    open_storage,
)
from autopeft.space import parse_max_params

RUN_FILE = "run.json"


@dataclass
class RunInfo:
    """What export and report need to find a run's studies again."""

    run_dir: Path
    study_name: str
    storage: str                 # masked when it holds credentials
    storage_has_credentials: bool
    storage_in_run_dir: bool     # the default SQLite file: found again even when the folder moved
    objectives: list[Objective]
    metric: str
    num_layers: int
    settings: dict[str, Any]
    sampler: str | None = None   # the sampler that ran ("auto" resolved; None in runs written before it was kept)

    def search_settings(self) -> SearchSettings:
        """The run's settings as the search read them (run.json keeps them flat, URLs masked)."""
        return SearchSettings.model_validate(self.settings)

    def base_model(self, spec=None):
        """(the run's base model with its task's head, the task's TaskSpec): what every trial started from, for
        loading a trained adapter onto (``spec``: the task's, when the caller already read it back)."""
        from autopeft.models import get_base_model

        settings = self.search_settings()
        spec = spec if spec is not None else settings.task.load(settings.seed).spec
        base = get_base_model(settings.model, spec.kind, num_labels=max(spec.num_labels, 1),
                              trust_remote_code=settings.trust_remote_code)
        return base, spec

    def open_storage(self, override: str | None = None):
        if override is None and self.storage_has_credentials:
            raise AutopeftError(f"the storage of run '{self.run_dir}' holds credentials that were not saved; "
                                "pass it again with --storage")
        in_run_dir = override is None and self.storage_in_run_dir
        url = default_storage(self.run_dir) if in_run_dir else override or self.storage
        path = local_storage_path(url)
        if path is not None and not path.is_file():  # opening it would create an empty one
            raise AutopeftError(f"the storage of run '{self.run_dir}' is missing: {path} does not exist")
        return open_storage(url)


def read_run_info(run_dir: str | Path) -> RunInfo:
    import json

    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise AutopeftError(f"'{run_dir}' is not a search run folder (no {RUN_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        objectives = [Objective(o["name"], o["maximize"], o["log_scale"]) for o in data["objectives"]]
        return RunInfo(run_dir, data["study_name"], data["storage"], data["storage_has_credentials"],
                       data.get("storage_in_run_dir", False), objectives, data["metric"], data["num_layers"],
                       data["settings"], data.get("sampler"))
    except (ValueError, KeyError, TypeError, OSError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise AutopeftError(f"'{path}' is damaged ({type(exc).__name__}: {str(exc)[:120]}); it is written by "
                            "`autopeft search`, and running the search again rewrites it") from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "search"


def _backend(settings: SearchSettings, task, run_dir: Path, adapter_builder: AdapterBuilder | None) -> Backend:
    if settings.backend.name == "ray":
        from autopeft.backends.ray import RayBackend

        return RayBackend(SettingsEvaluatorFactory.for_search(settings), settings.backend.ray_options(), run_dir)
    return LocalBackend(make_runner_evaluator(settings, task, adapter_builder))


def _check_data_dimensions(space, train_size: int) -> None:
    """A space's ``data:`` strategies must exist and its sizes fit the train split: one line now, not per trial."""
    if space.spec.data is None:
        return
    from autopeft.priors.selection import get_strategy, parse_size
    from autopeft.space.schema import Choice

    data = space.spec.data
    for strategy in data.strategy.choices if isinstance(data.strategy, Choice) else [data.strategy]:
        get_strategy(strategy)
    for size in data.size.choices if isinstance(data.size, Choice) else [data.size]:
        if size is not None:
            try:
                parse_size(size, train_size)
            except AutopeftError as exc:
                raise AutopeftError(f"{space.source}: data.size: {exc}") from None


BUDGET_PROBES = 2000  # random points tried before a --max-params is called unreachable (~1 s at most)


def _check_budget_reachable(space, max_params: int, seed: int) -> None:
    """Some non-empty point of the space must fit ``--max-params``, or every trial would be pruned."""
    import numpy as np

    from autopeft.space import count_trainable_params

    rng = np.random.default_rng(seed)
    smallest = None
    for _ in range(BUDGET_PROBES):
        count = count_trainable_params(space.decode(space.active_params(space.sample(rng))), space.model_config)
        if count and count <= max_params:
            return
        smallest = count if count and (smallest is None or count < smallest) else smallest
    raise AutopeftError(f"no point of the space fits --max-params {max_params:,}: the smallest of {BUDGET_PROBES:,} "
                        f"random points has {smallest or 0:,} trainable parameters")


def _apply_priors(settings: SearchSettings, task, space, max_params: int | None, observer):
    """Prepare the search's priors here, once (trials and Ray workers then read them from the cache); they may
    narrow the space and give the points the search starts from (:mod:`autopeft.search.priors`)."""
    from autopeft.models import get_base_model
    from autopeft.search.priors import prepared_priors

    def note(message: str) -> None:
        if observer is not None:
            observer.on_note(message)

    base = get_base_model(settings.model, task.spec.kind, num_labels=max(task.spec.num_labels, 1),
                          trust_remote_code=settings.trust_remote_code)
    priors = prepared_priors(settings, base, task, note)
    for prior in priors:
        space = prior.restrict_space(space, note)
    return space, [point for prior in priors for point in prior.starting_points(space, max_params, note)]


@dataclass
class SearchSetup:
    """Everything :func:`prepare_search` checked: nothing heavy loaded, nothing written yet."""

    task: Any
    model_config: Any
    space: Any
    plan: SearchPlan
    study_name: str
    run_dir: Path
    storage_url: str
    storage: Any = None          # a remote storage is opened (and so checked) early; a local file one at the start
    notes: list[str] = field(default_factory=list)   # what the search chose for the user, told when it starts


def prepare_search(settings: SearchSettings) -> SearchSetup:
    """Check a search's settings against its data, model config, space and storage, cheapest first.

    Raises AutopeftError for anything wrong before a model is loaded or a file is written, so a
    mistake costs seconds, not a model load (the model's weights load in :func:`run_search`)."""
    from autopeft.models import check_weights_present, load_model_config
    from autopeft.space import SearchSpace, count_model_params

    if settings.training.deepspeed:
        from autopeft.trial.distributed import resolve_deepspeed_config

        resolve_deepspeed_config(settings.training.deepspeed)  # a bad preset or file fails now, not in every trial
    if canonical_sampler_name(settings.sampler) == "botorch":
        require_installed("botorch", "sampler 'botorch'")
    if settings.tracking:
        from autopeft.search.tracking import check_trackers

        check_trackers(settings.tracking)
    if settings.backend.name == "ray":
        settings.backend.ray_options()  # checks its numbers; the cluster is reached when the search starts
    elif settings.backend.workers_per_trial > 1:
        raise AutopeftError("--workers-per-trial > 1 needs --backend ray (Ray Train runs the workers)")
    rungs = settings.fidelity.rung_fidelities()
    check_storage_url(settings.storage) if settings.storage else None
    model_config = load_model_config(settings.model, trust_remote_code=settings.trust_remote_code)
    check_weights_present(settings.model)
    space = SearchSpace.from_file(settings.space, model_config)
    notes = _lofit_heads(settings, space)
    model_params = count_model_params(model_config)
    max_params = parse_max_params(settings.max_params, model_params)
    if max_params is not None and max_params > model_params:
        raise AutopeftError(f"--max-params {settings.max_params} is {max_params:,} parameters, more than the whole "
                            f"model's {model_params:,}: give a budget below the model's size (e.g. 1%)")
    if max_params is not None:
        _check_budget_reachable(space, max_params, settings.seed)
    task = settings.task.load(settings.seed)
    spec = task.spec
    _check_data_dimensions(space, len(task.train))
    rungs, same_training = distinct_rungs(rungs, len(task.train))
    notes += [same_training] if same_training else []
    objectives = parse_objectives(settings.objectives, spec.metric, is_higher_better(spec.metric))
    study_name = settings.study_name or _slug(f"{space.spec.name}-{task.name}")
    run_dir = Path(settings.out or Path("runs") / study_name)
    if run_dir.exists() and not run_dir.is_dir():
        raise AutopeftError(f"--out '{run_dir}' exists and is not a folder")
    storage_url = settings.storage or default_storage(run_dir)
    plan = SearchPlan(
        objectives=objectives,
        rungs=rungs,
        eta=settings.fidelity.eta,
        trials=settings.trials if settings.trials is not None or settings.time_budget is not None else DEFAULT_TRIALS,
        time_budget=settings.time_budget_seconds,
        max_params=max_params,
        seed=settings.seed,
        final_seeds=settings.final_seeds,
        sampler=settings.sampler,
        baselines=settings.baselines,
        quasi_random=settings.quasi_random,
        auto_first_rung=settings.fidelity.auto,
    )
    storage = open_storage(storage_url) if is_remote_storage(storage_url) else None
    return SearchSetup(task, model_config, space, plan, study_name, run_dir, storage_url, storage, notes)


def _lofit_heads(settings: SearchSettings, space) -> list[str]:
    """A space with LoFiT gets its head ranking: ``--prior heads`` is switched on (and recorded in the settings, so
    workers and run.json see it). LoFiT trains offsets on the heads that matter most, and without the ranking no
    LoFiT point can be built. Learning it is one short training (2 epochs of 1,000 examples: about 40 s on one CPU
    core for MiniLM, seconds on a GPU, about one low-rung trial), cached per model and task; dropping LoFiT
    instead would silently search another space than the one asked for."""
    if "lofit" not in space.spec.modules or "heads" in settings.priors.prior:
        return []
    settings.priors.prior = [*settings.priors.prior, "heads"]
    return ["the space has LoFiT: its head ranking (--prior heads) is learned once before the first trial and cached"]


def _trackers(settings: SearchSettings, info: RunInfo, observer: SearchObserver | None) -> list:
    """The ``--tracking`` trackers, opened on the run folder (told where they write)."""
    if not settings.tracking:
        return []
    from autopeft.search.tracking import TrackingContext, context_tags, create_trackers

    context = TrackingContext(info.run_dir, info.study_name, settings.tracking_uri,
                              context_tags(info.settings, info.sampler or settings.sampler))
    trackers = create_trackers(settings.tracking, context)
    for tracker in trackers if observer is not None else ():
        observer.on_note(f"tracking: each trial is logged as a {tracker.description} run in {tracker.where()}")
    return trackers


def run_search(settings: SearchSettings, observer: SearchObserver | None = None,
               adapter_builder: AdapterBuilder | None = None,
               setup: SearchSetup | None = None) -> tuple[SearchOutcome, RunInfo]:
    """Prepare (unless ``setup`` is given), load the model, open the storage, write run.json, search."""
    from dataclasses import replace

    setup = setup or prepare_search(settings)
    observer = logged(observer)  # notes and trials go to the log (the terminal, the run's log file) either way
    task, space, plan, run_dir, storage_url = setup.task, setup.space, setup.plan, setup.run_dir, setup.storage_url
    for message in setup.notes:
        observer.on_note(message)
    if settings.priors.prior:
        space, initial_points = _apply_priors(settings, task, space, plan.max_params, observer)
        plan = replace(plan, initial_points=tuple(initial_points))
    if "lofit" in space.spec.modules and "heads" not in settings.priors.prior:  # no ranking: no LoFiT point can train
        plan = replace(plan, unavailable={**plan.unavailable, "lofit": LOFIT_NEEDS_HEADS})
    objectives = plan.objectives
    info = RunInfo(run_dir, setup.study_name, mask_url(storage_url), has_credentials(storage_url),
                   settings.storage is None, objectives, task.spec.metric, space.dims.num_layers,
                   settings.public_dict(mask_url(storage_url)), canonical_sampler_name(plan.sampler))
    backend = _backend(settings, task, run_dir, adapter_builder)  # loads the model: bad weights fail before any file
    try:
        storage = setup.storage or open_storage(storage_url)
        write_json(run_dir / RUN_FILE, {
            "study_name": setup.study_name,
            "storage": info.storage,
            "storage_has_credentials": info.storage_has_credentials,
            "storage_in_run_dir": info.storage_in_run_dir,
            "objectives": [{"name": o.name, "maximize": o.maximize, "log_scale": o.log_scale} for o in objectives],
            "metric": task.spec.metric,
            "task": task.name,
            "num_layers": space.dims.num_layers,
            "layers": space.layers,
            "model_type": setup.model_config.model_type,
            "rungs": [r.to_dict() for r in plan.rungs],
            "backend": backend.name,
            "sampler": info.sampler,
            "settings": info.settings,
        })
        trackers = _trackers(settings, info, observer)
        engine = SearchEngine(space, None, plan, storage, setup.study_name, run_dir, observer, backend=backend,
                              trackers=trackers)
        return engine.run(), info
    finally:
        backend.close()
