"""autopeft: multi-objective search over parameter-efficient fine-tuning configurations.

Python API (:mod:`autopeft.api`): ``autopeft.search(...)`` runs a search, ``autopeft.load_run(folder)`` opens one;
both return a :class:`~autopeft.api.SearchResult` (``.front``, ``.best(max_params=...)``, ``.load()``).
"""

__version__ = "0.1.0"

import autopeft.tuners  # noqa: E402,F401  (registers autopeft's PEFT methods, so PEFT can save and load them)

__all__ = ["ParetoPoint", "SearchResult", "__version__", "load_run", "search"]


def __getattr__(name: str):
    """The API's names, imported on first use (``import autopeft`` stays as light as registering the tuners)."""
    if name == "search":  # the package, which is callable: autopeft.search(...) runs autopeft.api.search
        import autopeft.search

        return autopeft.search
    if name in ("load_run", "SearchResult", "ParetoPoint"):
        from autopeft import api

        return getattr(api, name)
    raise AttributeError(f"module 'autopeft' has no attribute {name!r}")
