"""Priors as the search uses them: ``--prior NAME`` picks a registered :class:`SearchPrior`, one file each."""

# registration order is the order priors are prepared in and listed by --help and errors
from autopeft.search.priors import sensitivity, heads, oneshot  # noqa: F401  # isort: skip
from autopeft.search.priors.base import PRIORS, Note, SearchPrior, StartingPoint, prepared_priors, register

__all__ = ["PRIORS", "Note", "SearchPrior", "StartingPoint", "prepared_priors", "register"]
