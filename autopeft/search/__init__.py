"""Multi-objective search over a PEFT search space on Optuna studies (see :mod:`autopeft.search.engine`)."""

import sys
import types

from autopeft.backends.base import Evaluator
from autopeft.search.engine import SearchEngine, SearchObserver, SearchOutcome, SearchPlan, SearchProgress, point_key
from autopeft.search.evaluator import RunnerEvaluator, builders_adapter_builder
from autopeft.search.objectives import Objective, parse_objectives
from autopeft.search.records import TrialRecord, load_records, pareto_records
from autopeft.search.samplers import SAMPLERS, create_sampler, default_sampler_name
from autopeft.search.storage import default_storage, mask_url, open_storage

__all__ = [
    "Evaluator", "Objective", "RunnerEvaluator", "SAMPLERS", "SearchEngine", "SearchObserver", "SearchOutcome",
    "SearchPlan", "SearchProgress", "TrialRecord", "builders_adapter_builder", "create_sampler",
    "default_sampler_name", "default_storage", "load_records", "mask_url", "open_storage", "parse_objectives",
    "pareto_records", "point_key",
]


class _CallableSearchPackage(types.ModuleType):
    """``autopeft.search(...)`` is the Python API's search (:func:`autopeft.api.search`) although ``autopeft.search``
    is also this package: importing any of its modules binds the package to that name on ``autopeft``, so a
    function of the same name could not stay there. Calling the package runs the search; its modules are as ever."""

    def __call__(self, *args, **kwargs):
        from autopeft.api import search  # the API sits above this package: imported when called, never at import

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableSearchPackage
