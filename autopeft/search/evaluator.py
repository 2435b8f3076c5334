"""The production evaluator (:class:`autopeft.backends.base.Evaluator`): train one point of the space.

:class:`RunnerEvaluator` builds the point's PEFT model with :mod:`autopeft.builders` and trains it
with a :class:`~autopeft.trial.TrialRunner`; :func:`make_runner_evaluator` assembles one from a
search's settings, and :class:`SettingsEvaluatorFactory` does so inside a Ray worker.
Tests may hand the engine any callable with the evaluator's signature instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft.errors import AutopeftError
from autopeft.space import PeftPoint
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import ERROR, TrialResult

if TYPE_CHECKING:  # annotations only
    from autopeft.builders import BuildContext
    from autopeft.data import TaskData
    from autopeft.search.settings import SearchSettings
    from autopeft.search.subsets import TrainSubsets
    from autopeft.trial import AdapterFactory, TrainingConfig, TrialRunner
    from autopeft.trial.warmup import Warmup

AdapterBuilder = Callable[[PeftPoint], "AdapterFactory"]
"""point -> adapter factory (callable(base_model) -> PeftModel)."""


def builders_adapter_builder(model_config, kind: str, context: BuildContext | None = None) -> AdapterBuilder:
    """``autopeft.builders.build_adapter`` bound to the model config, task kind and priors (a BuildContext)."""
    from autopeft.builders import BuildContext, build_adapter

    context = context or BuildContext()
    return lambda point: build_adapter(point, model_config, kind, context)


@dataclass
class RunnerEvaluator:
    """An :class:`~autopeft.backends.base.Evaluator`: build the point's adapter, pick its data, train it."""

    runner: TrialRunner
    adapter_builder: AdapterBuilder
    training: TrainingConfig            # defaults for what the point leaves open
    subsets: TrainSubsets | None = None  # the point's / search's data selection (None: a seeded random draw)
    warmup: Warmup | None = None        # pre-fine-tuning before every trial
    learning_rate: float | None = None  # --lr: one rate for every module type (None: each type's own rate)

    def __call__(self, point: PeftPoint, fidelity: Fidelity, seed: int, *, evaluate_test: bool = False,
                 save_dir: Path | None = None, resume_from: str | None = None,
                 checkpoint_to: str | None = None) -> TrialResult:
        from autopeft.builders import head_learning_rate, parameter_groups_for

        known = {f.name for f in fields(self.training)}
        training = replace(self.training, **{k: v for k, v in point.training.items() if k in known})
        # each module type trains in its own group at its rate; the head, the warm-up and DeepSpeed's "auto" rate
        # at the point's largest (autopeft.builders.groups says why and in which order the rates apply)
        head = head_learning_rate(point, self.learning_rate)
        if head is not None:
            training = replace(training, learning_rate=head)
        groups = parameter_groups_for(point, self.learning_rate, training.learning_rate)
        try:
            factory = self.adapter_builder(point)
        except Exception as exc:  # an unbuildable point fails its trial, not the search
            return TrialResult(status=ERROR, reason=f"error: building the adapter: {type(exc).__name__}: {exc}")
        try:
            indices = self.subsets.indices(point.data, fidelity) if self.subsets is not None else None
        except AutopeftError as exc:  # e.g. a space's size larger than the train split
            return TrialResult(status=ERROR, reason=f"error: selecting the training data: {exc}")
        return self.runner.run(factory, fidelity, seed, training, train_indices=indices, warmup=self.warmup,
                               evaluate_test=evaluate_test, save_dir=save_dir, parameter_groups=groups,
                               resume_from=resume_from, checkpoint_to=checkpoint_to)


def make_runner_evaluator(settings: SearchSettings, task: TaskData | None = None,
                          adapter_builder: AdapterBuilder | None = None) -> RunnerEvaluator:
    """The production evaluator: base model loaded once, builders (with the search's priors), trial runner,
    training defaults, data selection and warm-up."""
    from autopeft.builders import BuildContext
    from autopeft.models import get_base_model
    from autopeft.search.priors import prepared_priors
    from autopeft.search.subsets import search_subsets, search_warmup
    from autopeft.trial import TrialRunner

    task = task or settings.task.load(settings.seed)
    base = get_base_model(settings.model, task.spec.kind, num_labels=max(task.spec.num_labels, 1),
                          trust_remote_code=settings.trust_remote_code)
    priors = prepared_priors(settings, base, task)
    context = BuildContext(**{key: value for prior in priors for key, value in prior.build_context().items()})
    builder = adapter_builder or builders_adapter_builder(base.config, task.spec.kind, context)
    return RunnerEvaluator(TrialRunner(base, task), builder, settings.training.config(),
                           search_subsets(settings, task), search_warmup(settings, task), settings.training.lr)


@dataclass(frozen=True)
class SettingsEvaluatorFactory:
    """An :class:`~autopeft.backends.base.EvaluatorFactory`: builds :func:`make_runner_evaluator` in whichever
    process runs the trials (a Ray worker), from settings that travel as plain JSON."""

    settings: dict[str, Any]            # ``SearchSettings.for_workers()``

    @classmethod
    def for_search(cls, settings: SearchSettings) -> SettingsEvaluatorFactory:
        return cls(settings.for_workers())

    @property
    def cache_key(self) -> str:
        return json.dumps(self.settings, sort_keys=True)

    def __call__(self) -> RunnerEvaluator:
        from autopeft.search.settings import SearchSettings

        return make_runner_evaluator(SearchSettings.model_validate(self.settings))
