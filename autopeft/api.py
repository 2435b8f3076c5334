"""The Python API for notebooks and scripts: :func:`search` runs a search, :func:`load_run` opens a finished one;
both return a :class:`SearchResult` (the Pareto front, :meth:`SearchResult.best`, :meth:`SearchResult.load`).

    import autopeft

    result = autopeft.search(model="minilm", dataset="sst2", train_examples=2000, max_length=64, trials=12)
    result.front                         # Pareto points, best task metric first
    point = result.best(max_params="0.5%")
    model = result.load(point)           # a peft.PeftModel on the base model, ready for inference

Settings are the CLI's flags as keywords (``max_length=64``, ``sampler="tpe"``; ``autopeft search --help``), or a
``config=`` file. Quiet by default, as a library should be: nothing is printed and the libraries' own chatter is
off; ``verbose=True`` prints the notes and trial lines (and ``logging.getLogger("autopeft")`` carries them either
way). Every run also writes its log to ``<run folder>/autopeft.log``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.errors import AutopeftError


@dataclass(frozen=True)
class ParetoPoint:
    """One configuration of the front: its objective values (mean over the final stage's seeds), their spread, its
    point in the space and where its trained adapter is."""

    label: str                                  # e.g. "final#3" or "rung-3#2"
    values: dict[str, float]                    # objective -> value (the metric, params, ...)
    values_std: dict[str, float] | None
    test_metrics: dict[str, float]
    description: str
    point: dict[str, Any]                       # PeftPoint.to_dict(): trial --point and export's point.yaml
    adapter_dir: Path | None                    # PEFT adapter folder (None: task head only, or no final stage)

    @property
    def params(self) -> int:
        """Trainable adapter parameters (the ``params`` objective)."""
        return int(self.values["params"])


@dataclass
class SearchResult:
    run_dir: Path
    study_name: str
    metric: str                                 # the task metric the front is ranked on (values[metric])
    maximize: bool
    front: list[ParetoPoint]                    # best metric first
    front_stage: str | None                     # "final" (re-trained at full fidelity) or the rung it came from
    settings: dict[str, Any]                    # the run's settings (storage URLs masked)

    def best(self, max_params: int | float | str | None = None) -> ParetoPoint:
        """The front point with the best metric within ``max_params`` trainable parameters: a count (``1e5``,
        ``"120k"``) or a share of the base model (``"0.5%"``)."""
        if not self.front:
            raise AutopeftError(f"run '{self.run_dir}' has no Pareto point")
        limit = None
        if max_params is not None:
            from autopeft.models import load_model_config
            from autopeft.space import count_model_params, parse_max_params

            total = count_model_params(load_model_config(self.settings["model"])) \
                if isinstance(max_params, str) and max_params.strip().endswith("%") else 1
            limit = parse_max_params(max_params, model_params=total)
        within = [p for p in self.front if limit is None or p.params <= limit]
        if not within:
            smallest = min(p.params for p in self.front)
            raise AutopeftError(f"no Pareto point within {max_params} parameters (the smallest has {smallest:,})")
        return (max if self.maximize else min)(within, key=lambda p: p.values[self.metric])

    def load(self, point: ParetoPoint | int | None = None):
        """The base model with ``point``'s adapter (a :class:`ParetoPoint`, an index into :attr:`front`; default:
        the best), as a ``peft.PeftModel`` in eval mode."""
        from peft import PeftModel

        from autopeft.search.run import read_run_info

        chosen = self.best() if point is None else self.front[point] if isinstance(point, int) else point
        if chosen.adapter_dir is None or not (chosen.adapter_dir / "adapter_config.json").is_file():
            raise AutopeftError(f"Pareto point {chosen.label} has no trained adapter "
                                "(a task-head-only point, or the search ran with final_seeds=0)")
        base, _ = read_run_info(self.run_dir).base_model()
        return PeftModel.from_pretrained(base.fresh_copy(0), str(chosen.adapter_dir)).eval()

    def table(self) -> list[dict[str, Any]]:
        """The front as rows (for ``pandas.DataFrame(result.table())``)."""
        return [{"label": p.label, **p.values, **{f"{k}_std": v for k, v in (p.values_std or {}).items()},
                 **{f"test_{k}": v for k, v in p.test_metrics.items()}, "description": p.description}
                for p in self.front]


def load_run(run_dir: str | Path, storage: str | None = None) -> SearchResult:
    """A finished (or interrupted) search's :class:`SearchResult`, from its run folder."""
    from autopeft.search import records as R
    from autopeft.search.results import load_results

    results = load_results(run_dir, storage)
    info = results.info
    metric = info.objectives[0]
    front = []
    for record in results.front:
        adapter = record.attrs.get(R.ADAPTER_DIR)
        front.append(ParetoPoint(
            label=record.label, values=dict(record.values or {}), values_std=record.attrs.get(R.VALUES_STD),
            test_metrics=record.attrs.get(R.TEST_METRICS) or record.attrs.get(R.RESULT, {}).get("test_metrics") or {},
            description=record.attrs.get(R.DESCRIPTION, ""), point=record.attrs.get(R.POINT, {}),
            adapter_dir=Path(run_dir) / adapter if adapter else None))
    front.sort(key=lambda p: p.values.get(metric.name, 0.0), reverse=metric.maximize)
    return SearchResult(Path(run_dir), info.study_name, metric.name, metric.maximize, front, results.front_stage,
                        info.settings)


def search(model: str | None = None, dataset: str | None = None, *, config: str | Path | None = None,
           verbose: bool = False, observer=None, **settings: Any) -> SearchResult:
    """Run (or resume) a search and return its :class:`SearchResult`. Without ``model`` and ``dataset`` it is the
    demo search (``autopeft search`` with no flags). ``observer`` receives ``on_note(message)`` and
    ``on_trial(record, progress)`` as the search goes (:class:`autopeft.search.SearchObserver`)."""
    from autopeft.logs import LOG_FILE, LOGGER, log_file, quiet_libraries
    from autopeft.search.run import RUN_FILE, prepare_search, run_search
    from autopeft.search.settings import merge_settings, read_run_config

    quiet_libraries(verbose=verbose)
    file_values = read_run_config(config) if config is not None else {}
    flags = {"model": model, "dataset": dataset, **settings}
    for key in ("out", "space"):
        if isinstance(flags.get(key), Path):
            flags[key] = str(flags[key])
    merged = merge_settings(file_values, flags, str(config) if config else "arguments")
    setup = prepare_search(merged)
    logger = logging.getLogger(LOGGER)
    handler = None
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    try:
        with log_file(setup.run_dir / LOG_FILE, ready=(setup.run_dir / RUN_FILE).is_file):
            _, info = run_search(merged, observer, setup=setup)
    finally:
        if handler is not None:
            logger.removeHandler(handler)
    return load_run(info.run_dir, merged.storage)
