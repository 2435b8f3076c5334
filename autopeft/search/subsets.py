"""Which training examples a search's trials tune on, and what they warm up on (data-selection priors).

- ``--subset-strategy S`` (or a space's ``data: {strategy, size}`` dimensions): a strategy ranks the task's
  train split once (cached on disk, so the driver and every worker share it); a trial of fidelity ``f``
  trains on the first ``f.train_size(size)`` examples of that ranking, i.e. the strategy's own selection
  at that budget.
- ``--warmup-pool POOL... --warmup-size N``: GOT-D's use; a strategy picks ``N`` texts of other datasets
  toward the task's train split, and every trial first warms its adapter up on them (masked/causal LM; an
  encoder's masked-LM head starts trained: :mod:`autopeft.priors.mlm_head`).
- ``--embedding-model tuned``: the embeddings come from the model after a short fit on the task
  (:mod:`autopeft.priors.selection.tuned`), as GOT-D embeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from autopeft.errors import AutopeftError

if TYPE_CHECKING:
    from autopeft.search.settings import SearchSettings
    from autopeft.trial.warmup import Warmup

DEFAULT_EMBEDDING_MAX_LENGTH = 128


def _embedder(model: str, max_length: int):
    """(embed function, what identifies it for cache keys); remote code is never run for embeddings."""
    from autopeft.priors.selection import cached_embeddings, encoder_signature

    return (lambda texts: cached_embeddings(model, texts, max_length=max_length),
            {"model": encoder_signature(model), "max_length": max_length})


class TrainSubsets:
    """Strategy rankings of a task's train split, computed at most once per strategy (and cached on disk)."""

    def __init__(self, task, *, embedding_model: str, seed: int, default_strategy: str | None = None,
                 max_length: int = DEFAULT_EMBEDDING_MAX_LENGTH, model: str | None = None):
        self.task = task
        self.embedding_model = embedding_model  # a model, or `tuned` (then `model` fitted on the task)
        self.model = model
        self.max_length = max_length
        self.seed = seed
        self.default_strategy = default_strategy
        self._inputs = None
        self._orders: dict[str, np.ndarray] = {}

    def order(self, strategy: str) -> np.ndarray:
        from autopeft.priors.selection import (
            SelectionInputs,
            load_or_compute_order,
            selection_fingerprint,
            task_labels,
            task_texts,
        )

        if self._inputs is None:  # on first use: most searches never select
            texts = task_texts(self.task, "train")
            labels = task_labels(self.task, "train")
            embed, embedding = _embedder(_resolved(self.embedding_model, self.model, self.task, self.max_length),
                                         self.max_length)
            inputs = SelectionInputs(pool_texts=texts, pool_labels=labels, target_texts=texts, embed=embed)
            self._inputs = inputs, selection_fingerprint(inputs, embedding)
        inputs, fingerprint = self._inputs
        if strategy not in self._orders:
            self._orders[strategy] = load_or_compute_order(strategy, inputs, self.seed, fingerprint=fingerprint)[0]
        return self._orders[strategy]

    def indices(self, data: dict, fidelity) -> np.ndarray | None:
        """Train rows for a point's ``data`` choice at ``fidelity``; None = the trial's own seeded random draw."""
        from autopeft.priors.selection import parse_size

        strategy = data.get("strategy") or self.default_strategy
        size = data.get("size")
        if strategy is None and size is None:
            return None
        order = self.order(strategy or "random")
        available = len(order) if size is None else parse_size(size, len(order))
        return np.sort(order[: fidelity.train_size(available)])


def _resolved(embedding_model: str, model: str | None, task, max_length: int) -> str:
    from autopeft.priors.selection.tuned import embedding_model_for, is_tuned

    if is_tuned(embedding_model) and model is None:
        raise AutopeftError("--embedding-model tuned needs the model being tuned")
    return embedding_model_for(embedding_model, model or embedding_model, task, max_length=max_length)


def pool_warmup(task, *, pools: list[str], strategy: str, size: str, epochs: float, embedding_model: str, seed: int,
                max_length: int = DEFAULT_EMBEDDING_MAX_LENGTH, model: str | None = None):
    """The :class:`~autopeft.trial.warmup.Warmup` of ``--warmup-pool``: ``size`` pool texts chosen toward the
    task's train split by ``strategy`` (ranking cached), masked/causal-LM objective. For an encoder (``model``
    given, task not causal) the masked-LM head starts trained (:func:`autopeft.priors.mlm_head.cached_masked_lm_head`,
    fitted once on a sample of the pool)."""
    from autopeft.priors.selection import (
        SelectionInputs,
        load_or_compute_order,
        parse_size,
        pool_from_datasets,
        select,
        selection_fingerprint,
        task_texts,
    )
    from autopeft.trial.warmup import Warmup

    texts, sources = pool_from_datasets(pools)
    if not texts:
        raise AutopeftError("the warm-up pool has no texts")
    count = parse_size(size, len(texts))  # a bad size fails before anything is embedded or fitted
    embed, embedding = _embedder(_resolved(embedding_model, model, task, max_length), max_length)
    inputs = SelectionInputs(pool_texts=list(texts), target_texts=task_texts(task, "train"), embed=embed)
    order = load_or_compute_order(strategy, inputs, seed, fingerprint=selection_fingerprint(inputs, embedding))[0]
    chosen = select(order, count)
    head_file = None
    if model is not None and task.spec.kind != "causal_lm":
        from autopeft.priors.mlm_head import cached_masked_lm_head

        head_file = str(cached_masked_lm_head(model, list(texts), max_length=max_length)[0])
    return Warmup("lm", texts=tuple(texts[i] for i in chosen), epochs=epochs, head_file=head_file,
                  label=f"{strategy}:{len(chosen)} of {len(texts)}")


def search_subsets(settings: SearchSettings, task) -> TrainSubsets:
    """The rankings a search's trials cut their training subsets from (``--subset-strategy`` or the space's
    ``data:``)."""
    return TrainSubsets(task, embedding_model=settings.priors.embedding_model or settings.model, seed=settings.seed,
                        default_strategy=settings.priors.subset_strategy, max_length=settings.fidelity.max_length,
                        model=settings.model)


def search_warmup(settings: SearchSettings, task) -> Warmup | None:
    """``--warmup-pool``'s selection (ranking cached, so the driver and every worker pick the same texts)."""
    priors = settings.priors
    if not priors.warmup_pool:
        return None
    return pool_warmup(task, pools=priors.warmup_pool, strategy=priors.warmup_strategy, size=priors.warmup_size,
                       epochs=priors.warmup_epochs, embedding_model=priors.embedding_model or settings.model,
                       seed=settings.seed, max_length=settings.fidelity.max_length, model=settings.model)
