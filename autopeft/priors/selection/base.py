"""The one interface every data-selection strategy implements, its inputs, and the strategy registry.

A strategy ranks a pool of examples: :meth:`SelectionStrategy.order` returns a permutation of the pool,
best first, whose first ``N`` entries are the strategy's selection of size ``N`` for every ``N``. One
ranking therefore serves every budget (:func:`select` cuts it), and it is what gets cached
(:mod:`autopeft.priors.selection.order`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from autopeft.errors import AutopeftError


@dataclass
class SelectionInputs:
    """What a strategy may look at: the pool (texts, optional labels), an optional target set, an embedder.

    ``pool_labels``: int class ids (classification) or floats (regression), one per pool text; ``None``
    for an unlabelled pool. ``embed(texts)`` returns float32 ``[len(texts), d]`` (L2-normalised by
    :func:`~autopeft.priors.selection.embeddings.mean_pooled_embeddings`); it is called at most once per
    side, when a strategy first reads :attr:`pool_embeddings` / :attr:`target_embeddings`. When the
    target is the pool itself (``target_texts is pool_texts``), the pool's embeddings are reused.
    """

    pool_texts: list[str]
    pool_labels: np.ndarray | None = None
    target_texts: list[str] | None = None
    embed: Callable[[list[str]], np.ndarray] | None = None
    _pool_embeddings: np.ndarray | None = field(default=None, init=False, repr=False)
    _target_embeddings: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.pool_labels is not None:
            self.pool_labels = np.asarray(self.pool_labels)
            if self.pool_labels.shape != (len(self.pool_texts),):
                raise AutopeftError(
                    f"pool_labels has shape {self.pool_labels.shape}, expected one label per pool text "
                    f"({len(self.pool_texts)})"
                )

    def __len__(self) -> int:
        return len(self.pool_texts)

    @property
    def target_is_pool(self) -> bool:
        return self.target_texts is self.pool_texts

    @property
    def pool_embeddings(self) -> np.ndarray:
        if self._pool_embeddings is None:
            self._pool_embeddings = self._embed(self.pool_texts, "pool")
        return self._pool_embeddings

    @property
    def target_embeddings(self) -> np.ndarray:
        if self.target_texts is None:
            raise AutopeftError("no target set was given, so there are no target embeddings")
        if self.target_is_pool:
            return self.pool_embeddings
        if self._target_embeddings is None:
            self._target_embeddings = self._embed(self.target_texts, "target")
        return self._target_embeddings

    @property
    def has_target_embeddings(self) -> bool:
        """Whether target embeddings were computed (or are the pool's), without computing them."""
        return self.target_texts is not None and (
            self._target_embeddings is not None or (self.target_is_pool and self._pool_embeddings is not None)
        )

    @property
    def has_pool_embeddings(self) -> bool:
        return self._pool_embeddings is not None

    def _embed(self, texts: list[str], side: str) -> np.ndarray:
        if self.embed is None:
            raise AutopeftError(f"no embedding function was given to embed the {side} texts")
        vectors = np.asarray(self.embed(list(texts)), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise AutopeftError(
                f"the embedding function returned shape {vectors.shape} for {len(texts)} {side} texts, "
                "expected [texts, dim]"
            )
        if not np.isfinite(vectors).all():
            raise AutopeftError(f"the embedding function returned non-finite values for the {side} texts")
        return vectors


class SelectionStrategy(ABC):
    """Ranks a pool: :meth:`order` is a permutation of ``range(len(pool))``, best first, every prefix a selection.

    Subclasses set the class attributes and implement :meth:`_order`; :meth:`order` checks the inputs the
    strategy needs (one-line :class:`AutopeftError` otherwise) and that the result is a permutation.
    Whatever a strategy wants to report about a run (iterations, timings, score ranges) goes into
    ``self.info``, which :meth:`order` resets.
    """

    name: str = ""
    needs_target: bool = False
    needs_labels: bool = False
    needs_embeddings: bool = False

    def __init__(self) -> None:
        self.info: dict = {}

    def settings(self) -> dict:
        """The strategy's knobs that decide its ranking (part of the cache key)."""
        return {}

    def check(self, inputs: SelectionInputs) -> None:
        """Raise a one-line AutopeftError when ``inputs`` lack what this strategy needs (computes nothing)."""
        if len(inputs) == 0:
            raise AutopeftError(f"strategy '{self.name}' got an empty pool")
        if self.needs_labels and inputs.pool_labels is None:
            raise AutopeftError(f"strategy '{self.name}' needs pool labels, but the pool is unlabelled")
        if self.needs_target and not inputs.target_texts:
            raise AutopeftError(f"strategy '{self.name}' needs a target set, but none was given")
        if self.needs_embeddings and inputs.embed is None and not inputs.has_pool_embeddings:
            raise AutopeftError(f"strategy '{self.name}' needs embeddings, but no embedding function was given")

    def order(self, inputs: SelectionInputs, seed: int) -> np.ndarray:
        """A permutation of the pool indices (int64), best first; ``order[:N]`` is the selection of size N."""
        self.check(inputs)
        self.info = {}
        ranked = np.asarray(self._order(inputs, int(seed)), dtype=np.int64)
        n = len(inputs)
        if ranked.shape != (n,) or not np.array_equal(np.sort(ranked), np.arange(n)):
            raise RuntimeError(f"strategy '{self.name}' did not return a permutation of its {n} pool indices")
        return ranked

    @abstractmethod
    def _order(self, inputs: SelectionInputs, seed: int) -> np.ndarray:
        """The ranking itself; inputs are already checked."""


def descending(scores: np.ndarray, seed: int) -> np.ndarray:
    """Indices by descending score; equal scores in a seeded random order (not by index)."""
    scores = np.asarray(scores, dtype=np.float64)
    shuffled = np.random.default_rng(seed).permutation(len(scores))
    return shuffled[np.argsort(-scores[shuffled], kind="stable")]


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


STRATEGIES: dict[str, type[SelectionStrategy]] = {}


def register(cls: type[SelectionStrategy]) -> type[SelectionStrategy]:
    """Class decorator: make a strategy available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> SelectionStrategy:
    """A fresh instance of the strategy called ``name`` (case-insensitive)."""
    key = str(name).strip().lower()
    if key not in STRATEGIES:
        raise AutopeftError(f"unknown selection strategy '{name}' (known: {', '.join(sorted(STRATEGIES))})")
    return STRATEGIES[key]()


def parse_size(size: str | int | float, pool_size: int) -> int:
    """How many examples a size means for a pool of ``pool_size``.

    ``500`` / ``"500"`` -> 500 examples; ``"5%"`` -> 5 % of the pool; a float <= 1 (``0.1``, ``"0.1"``) ->
    that fraction of the pool. Fractions round to the nearest count. Errors for sizes that come to less
    than one example or to more than the pool holds.
    """
    text = str(size).strip()
    if isinstance(size, bool) or not text:
        raise AutopeftError(f"size must be a count, a percentage (5%) or a fraction <= 1, got '{size}'")
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not math.isfinite(percent) or not 0 < percent <= 100:
                raise AutopeftError(f"size '{text}' must be a percentage in (0, 100]")
            count, what = round(percent / 100 * pool_size), f"{text} of {pool_size} examples"
        elif isinstance(size, (int, np.integer)) or text.lstrip("+-").isdigit():
            count, what = int(text), f"size {text}"
        else:
            value = float(text)
            if not math.isfinite(value):
                raise AutopeftError(f"size must be a finite number, got '{text}'")
            if value > 1:
                if not value.is_integer():
                    raise AutopeftError(f"size '{text}' must be a whole count or a fraction <= 1")
                count, what = int(value), f"size {text}"
            elif value <= 0:
                raise AutopeftError(f"size must be positive, got '{text}'")
            else:
                count, what = round(value * pool_size), f"fraction {text} of {pool_size} examples"
    except ValueError as exc:
        if isinstance(exc, AutopeftError):
            raise
        raise AutopeftError(f"size must be a count, a percentage (5%) or a fraction <= 1, got '{text}'") from None
    if count < 1:
        raise AutopeftError(f"size must be at least one example, got {what}"
                            + ("" if what == f"size {text}" else f" = {count}"))
    if count > pool_size:
        raise AutopeftError(f"size {count} is larger than the pool ({pool_size} examples)")
    return count


def select(order: np.ndarray, size: int) -> np.ndarray:
    """The selection of ``size`` examples: the first ``size`` of ``order``, sorted ascending."""
    order = np.asarray(order, dtype=np.int64)
    if not 0 <= size <= len(order):
        raise AutopeftError(f"cannot select {size} of {len(order)} examples")
    return np.sort(order[:size])
