"""Optional dependencies: import them where a feature needs them, or fail with the extra that installs them.

Like ``optuna._imports.try_import``, but the failure is the one-line :class:`AutopeftError` the CLI prints,
and the install hint is built in one place from the package's extra (``pip install 'autopeft[ray]'``)::

    with optional_dependency("matplotlib", "the head heatmap"):
        from matplotlib.figure import Figure
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from autopeft.errors import AutopeftError

EXTRAS: dict[str, tuple[str, str]] = {
    "botorch": ("BoTorch", "botorch"),
    "deepspeed": ("DeepSpeed", "deepspeed"),
    "matplotlib": ("matplotlib", "report"),
    "mlflow": ("MLflow", "mlflow"),
    "plotly": ("plotly", "report"),
    "ray": ("Ray Tune", "ray"),
    "wandb": ("Weights & Biases", "wandb"),
}
"""Optional package -> (its name in messages, the extra of pyproject.toml that installs it)."""


def install_hint(package: str, needed_by: str) -> str:
    """'<needed_by> needs <package>: pip install 'autopeft[<extra>]''."""
    name, extra = EXTRAS[package]
    return f"{needed_by} needs {name}: pip install 'autopeft[{extra}]'"


@contextmanager
def optional_dependency(package: str, needed_by: str) -> Iterator[None]:
    """The imports in the block come from ``package``; when one fails, raise its :func:`install_hint`."""
    try:
        yield
    except ImportError:
        raise AutopeftError(install_hint(package, needed_by)) from None


def require_installed(package: str, needed_by: str) -> None:
    """Check up front, without importing ``package`` (which can take seconds), that it is installed."""
    if importlib.util.find_spec(package) is None:
        raise AutopeftError(install_hint(package, needed_by))
