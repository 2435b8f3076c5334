"""The one interface a search-facing prior implements, and the registry ``--prior`` names it from.

A prior is task knowledge computed once before the first trial and cached on disk, so the driver
and every Ray worker share it: :meth:`SearchPrior.prepare` computes it (or reads the cache), then
the prior may hand the builders what module types need (:meth:`SearchPrior.build_context`),
narrow the space (:meth:`SearchPrior.restrict_space`) and give the search points to start from
(:meth:`SearchPrior.starting_points`). The computations themselves live in :mod:`autopeft.priors`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from autopeft.data import TaskData
    from autopeft.models import BaseModel
    from autopeft.search.settings import SearchSettings
    from autopeft.space import SearchSpace

Note = Callable[[str], None]
"""Tells the user one line (the search's observer)."""

StartingPoint = tuple[dict[str, Any], str]
"""(Optuna params of the space, origin recorded on the trial, e.g. ``prior:spt-0.5%``)."""


class SearchPrior(ABC):
    """One ``--prior``: built from the search's settings, then :meth:`prepare`\\ d once per process."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""   # what it brings, for ``--help``

    def __init__(self, settings: SearchSettings):
        self.settings = settings

    @abstractmethod
    def prepare(self, base: BaseModel, task: TaskData) -> str:
        """Compute the prior for this model and task, or read it from the cache; returns a note saying which."""

    def build_context(self) -> dict[str, Any]:
        """Fields of :class:`autopeft.builders.BuildContext` this prior fills."""
        return {}

    def restrict_space(self, space: SearchSpace, note: Note) -> SearchSpace:
        """The space the search runs in, narrowed where the prior says what cannot matter."""
        return space

    def starting_points(self, space: SearchSpace, max_params: int | None, note: Note) -> list[StartingPoint]:
        """Points the search trains first (after the baselines), each within ``max_params``."""
        return []


PRIORS: dict[str, type[SearchPrior]] = {}


def register(cls: type[SearchPrior]) -> type[SearchPrior]:
    """Class decorator: make a prior available to ``--prior`` by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    PRIORS[cls.name] = cls
    return cls


def prepared_priors(settings: SearchSettings, base: BaseModel, task: TaskData,
                    note: Note | None = None) -> list[SearchPrior]:
    """The priors ``settings`` ask for, in registry order, each prepared (computed once, then read from its
    cache by the driver and by every worker)."""
    priors = [prior(settings) for name, prior in PRIORS.items() if name in settings.priors.prior]
    for prior in priors:
        message = prior.prepare(base, task)
        if note is not None:
            note(message)
    return priors
