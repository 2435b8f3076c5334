"""What the search calls to train one point: ``evaluator(point, fidelity, seed, ...) -> TrialResult``.

The production evaluator builds the point's PEFT model with :mod:`autopeft.builders` and trains
it with a :class:`~autopeft.trial.TrialRunner`; tests may pass any callable with this signature.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Protocol

from autopeft.errors import AutopeftError
from autopeft.space import PeftPoint
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import ERROR, TrialResult


class Evaluator(Protocol):
    def __call__(self, point: PeftPoint, fidelity: Fidelity, seed: int, *, evaluate_test: bool = False,
                 save_dir: Path | None = None) -> TrialResult: ...


AdapterBuilder = Callable[[PeftPoint], Callable]
"""point -> adapter factory (callable(base_model) -> PeftModel)."""


def builders_adapter_builder(model_config, kind: str, context=None) -> AdapterBuilder:
    """``autopeft.builders.build_adapter`` bound to the model config, task kind and priors (a BuildContext)."""
    try:
        from autopeft.builders import BuildContext, build_adapter
    except ImportError as exc:
        raise AutopeftError(f"the PEFT builders are not available ({exc})") from None
    context = context or BuildContext()
    return lambda point: build_adapter(point, model_config, kind, context)


@dataclass
class RunnerEvaluator:
    runner: object                      # autopeft.trial.TrialRunner (not imported here: it pulls in torch data code)
    adapter_builder: AdapterBuilder
    training: object                    # autopeft.trial.TrainingConfig: defaults for what the point leaves open
    subsets: object = None              # autopeft.search.subsets.TrainSubsets: the point's / search's data selection
    warmup: object = None               # autopeft.trial.warmup.Warmup: pre-fine-tuning before every trial

    def __call__(self, point: PeftPoint, fidelity: Fidelity, seed: int, *, evaluate_test: bool = False,
                 save_dir: Path | None = None) -> TrialResult:
        known = {f.name for f in fields(self.training)}
        training = replace(self.training, **{k: v for k, v in point.training.items() if k in known})
        try:
            factory = self.adapter_builder(point)
        except Exception as exc:  # an unbuildable point fails its trial, not the search
            return TrialResult(status=ERROR, reason=f"error: building the adapter: {type(exc).__name__}: {exc}")
        try:
            indices = self.subsets.indices(point.data, fidelity) if self.subsets is not None else None
        except AutopeftError as exc:  # e.g. a space's size larger than the train split
            return TrialResult(status=ERROR, reason=f"error: selecting the training data: {exc}")
        return self.runner.run(factory, fidelity, seed, training, train_indices=indices, warmup=self.warmup,
                               evaluate_test=evaluate_test, save_dir=save_dir)


def load_search_task(settings):
    """The task of a search's settings (``autopeft.search.settings.SearchSettings``)."""
    from autopeft.data import load_task

    return load_task(
        settings.dataset, dataset_config=settings.dataset_config, task=settings.task,
        text_column=settings.text_column, text_pair_column=settings.text_pair_column,
        label_column=settings.label_column, prompt_columns=settings.prompt_column or None,
        response_column=settings.response_column, metric=settings.metric, seed=settings.seed,
    )


SENSITIVITY_BATCH_SIZE = 32  # SPT's


def search_sensitivity(settings, base, task):
    """The sensitivity map of a search with ``--prior sensitivity``: computed once, then read from the cache
    (by the driver and by every worker)."""
    from autopeft.priors.sensitivity import load_or_compute_sensitivity

    return load_or_compute_sensitivity(base, task, batches=settings.prior_batches, batch_size=SENSITIVITY_BATCH_SIZE,
                                       max_length=settings.max_length, seed=settings.seed)


def search_head_ranking(settings, base, task):
    """LoFiT's step-1 head ranking for ``--prior heads`` (defaults of ``autopeft select-heads``), cached like the map."""
    from autopeft.priors.heads import load_or_select_heads

    return load_or_select_heads(base, task, max_length=settings.max_length, seed=settings.seed)


def make_runner_evaluator(settings, task=None, adapter_builder: AdapterBuilder | None = None) -> RunnerEvaluator:
    """The production evaluator: base model loaded once, builders (with the search's priors), trial runner,
    training defaults."""
    from autopeft.builders import BuildContext
    from autopeft.models import get_base_model
    from autopeft.trial import TrainingConfig, TrialRunner

    task = task or load_search_task(settings)
    base = get_base_model(settings.model, task.spec.kind, num_labels=max(task.spec.num_labels, 1),
                          trust_remote_code=settings.trust_remote_code)
    sensitivity = search_sensitivity(settings, base, task)[0] if "sensitivity" in settings.prior else None
    ranking = search_head_ranking(settings, base, task)[0] if "heads" in settings.prior else None
    context = BuildContext(head_ranking=ranking, sensitivity=sensitivity)
    builder = adapter_builder or builders_adapter_builder(base.config, task.spec.kind, context)
    training = TrainingConfig(learning_rate=settings.lr, bf16=settings.bf16, deepspeed=settings.deepspeed)
    return RunnerEvaluator(TrialRunner(base, task), builder, training, search_subsets(settings, task),
                           search_warmup(settings, task))


def search_subsets(settings, task):
    """The rankings a trial's training subset is cut from (``--subset-strategy`` or the space's ``data:``)."""
    from autopeft.search.subsets import TrainSubsets

    return TrainSubsets(task, embedding_model=settings.embedding_model or settings.model, seed=settings.seed,
                        default_strategy=settings.subset_strategy, max_length=settings.max_length)


def search_warmup(settings, task):
    """``--warmup-pool``'s selection (ranking cached, so the driver and every worker pick the same texts)."""
    if not settings.warmup_pool:
        return None
    from autopeft.search.subsets import pool_warmup

    return pool_warmup(task, pools=settings.warmup_pool, strategy=settings.warmup_strategy,
                       size=settings.warmup_size, epochs=settings.warmup_epochs,
                       embedding_model=settings.embedding_model or settings.model, seed=settings.seed,
                       max_length=settings.max_length)


@dataclass(frozen=True)
class SettingsEvaluatorFactory:
    """Builds :func:`make_runner_evaluator` in whichever process runs the trials (a Ray worker)."""

    settings: dict                      # ``SearchSettings.for_workers()``

    @property
    def cache_key(self) -> str:
        return json.dumps(self.settings, sort_keys=True)

    def __call__(self) -> RunnerEvaluator:
        from autopeft.search.settings import SearchSettings

        return make_runner_evaluator(SearchSettings.model_validate(self.settings))
