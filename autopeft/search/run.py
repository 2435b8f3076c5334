"""One search run from settings: load model, task and space, open the storage, run the engine.

The run folder holds ``run.json`` (settings with the storage URL masked, objectives, study name,
model shape), the default SQLite study and the adapters of the final stage; ``autopeft export``
and ``autopeft report`` start from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.errors import AutopeftError
from autopeft.search import evaluator as evaluator_module
from autopeft.search.atomic import write_json
from autopeft.search.engine import SearchEngine, SearchObserver, SearchOutcome, SearchPlan
from autopeft.search.objectives import Objective, parse_objectives
from autopeft.search.samplers import botorch_available, canonical_sampler_name
from autopeft.search.settings import SearchSettings, base_fidelity, fidelity_rungs, parse_max_params
from autopeft.search.storage import default_storage, has_credentials, mask_url, open_storage

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

    def open_storage(self, override: str | None = None):
        if override is None and self.storage_has_credentials:
            raise AutopeftError(f"the storage of run '{self.run_dir}' holds credentials that were not saved; "
                                "pass it again with --storage")
        if override is None and self.storage_in_run_dir:
            return open_storage(default_storage(self.run_dir))
        return open_storage(override or self.storage)


def read_run_info(run_dir: str | Path) -> RunInfo:
    import json

    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise AutopeftError(f"'{run_dir}' is not a search run folder (no {RUN_FILE})")
    data = json.loads(path.read_text())
    objectives = [Objective(o["name"], o["maximize"], o["log_scale"]) for o in data["objectives"]]
    return RunInfo(run_dir, data["study_name"], data["storage"], data["storage_has_credentials"],
                   data.get("storage_in_run_dir", False), objectives, data["metric"], data["num_layers"],
                   data["settings"])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "search"


def run_search(settings: SearchSettings, observer: SearchObserver | None = None,
               adapter_builder: evaluator_module.AdapterBuilder | None = None) -> tuple[SearchOutcome, RunInfo]:
    from autopeft.data import is_higher_better, load_task
    from autopeft.models import get_base_model
    from autopeft.space import SearchSpace, count_model_params
    from autopeft.trial import TrainingConfig, TrialRunner

    task = load_task(
        settings.dataset, dataset_config=settings.dataset_config, task=settings.task,
        text_column=settings.text_column, text_pair_column=settings.text_pair_column,
        label_column=settings.label_column, prompt_columns=settings.prompt_column or None,
        response_column=settings.response_column, metric=settings.metric, seed=settings.seed,
    )
    spec = task.spec
    base = get_base_model(settings.model, spec.kind, num_labels=max(spec.num_labels, 1),
                          trust_remote_code=settings.trust_remote_code)
    space = SearchSpace.from_file(settings.space, base.config)
    objectives = parse_objectives(settings.objectives, spec.metric, is_higher_better(spec.metric))
    study_name = settings.study_name or _slug(f"{space.spec.name}-{task.name}")
    run_dir = Path(settings.out or Path("runs") / study_name)
    storage_url = settings.storage or default_storage(run_dir)
    plan = SearchPlan(
        objectives=objectives,
        rungs=fidelity_rungs(base_fidelity(settings), settings.fidelity, settings.fidelity_resource),
        eta=settings.eta,
        trials=settings.trials if settings.trials is not None or settings.time_budget is not None else 20,
        time_budget=settings.time_budget_seconds,
        max_params=parse_max_params(settings.max_params, count_model_params(base.config)),
        seed=settings.seed,
        final_seeds=settings.final_seeds,
        sampler=settings.sampler,
        baselines=settings.baselines,
        quasi_random=settings.quasi_random,
    )
    if canonical_sampler_name(settings.sampler) == "botorch" and not botorch_available():
        raise AutopeftError("sampler 'botorch' needs BoTorch: pip install 'autopeft[botorch]'")
    storage = open_storage(storage_url)
    info = RunInfo(run_dir, study_name, mask_url(storage_url), has_credentials(storage_url), settings.storage is None,
                   objectives, spec.metric, space.dims.num_layers, settings.public_dict(mask_url(storage_url)))
    write_json(run_dir / RUN_FILE, {
        "study_name": study_name,
        "storage": info.storage,
        "storage_has_credentials": info.storage_has_credentials,
        "storage_in_run_dir": info.storage_in_run_dir,
        "objectives": [{"name": o.name, "maximize": o.maximize, "log_scale": o.log_scale} for o in objectives],
        "metric": spec.metric,
        "task": task.name,
        "num_layers": space.dims.num_layers,
        "layers": space.layers,
        "model_type": base.config.model_type,
        "rungs": [r.to_dict() for r in plan.rungs],
        "settings": info.settings,
    })
    builder = adapter_builder or evaluator_module.builders_adapter_builder(base.config, spec.kind)
    evaluator = evaluator_module.RunnerEvaluator(
        TrialRunner(base, task), builder, TrainingConfig(learning_rate=settings.lr, bf16=settings.bf16))
    engine = SearchEngine(space, evaluator, plan, storage, study_name, run_dir, observer)
    return engine.run(), info
