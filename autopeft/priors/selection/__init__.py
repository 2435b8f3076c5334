"""Data selection: which examples to tune on.

Every strategy ranks a pool once (:meth:`SelectionStrategy.order`, a permutation whose every prefix is a
selection), so any budget is a cut of one cached ranking (:func:`load_or_compute_order`, :func:`select`).

    from autopeft.priors.selection import SelectionInputs, get_strategy, parse_size, select
    inputs = SelectionInputs(pool_texts, pool_labels, target_texts, embed=lambda t: cached_embeddings("minilm", t))
    order = get_strategy("ot").order(inputs, seed=0)
    chosen = select(order, parse_size("5%", len(pool_texts)))

Strategies: random, stratified, kcenter, similarity, dsir, el2n, ot (GOT-D); see docs/data_selection.md.
"""

# registered in the order --help and the docs list them (so not sorted)
# isort: off
from autopeft.priors.selection import random, stratified, kcenter, similarity, dsir, el2n, ot  # noqa: F401  (register)
# isort: on
from autopeft.priors.selection.base import (
    STRATEGIES,
    SelectionInputs,
    SelectionStrategy,
    get_strategy,
    parse_size,
    register,
    select,
)
from autopeft.priors.selection.embeddings import cached_embeddings, encoder_signature, mean_pooled_embeddings
from autopeft.priors.selection.order import (
    load_or_compute_order,
    pool_from_datasets,
    selection_fingerprint,
    task_labels,
    task_texts,
    texts_fingerprint,
)
from autopeft.priors.selection.report import embedding_plot, label_balance, selection_report

__all__ = [
    "STRATEGIES",
    "SelectionInputs",
    "SelectionStrategy",
    "cached_embeddings",
    "embedding_plot",
    "encoder_signature",
    "get_strategy",
    "label_balance",
    "load_or_compute_order",
    "mean_pooled_embeddings",
    "parse_size",
    "pool_from_datasets",
    "register",
    "select",
    "selection_fingerprint",
    "selection_report",
    "task_labels",
    "task_texts",
    "texts_fingerprint",
]
