"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class AutopeftError(ValueError):
    """A problem with the user's input (model, dataset, space, config), not a bug."""


class ModelLoadError(AutopeftError):
    """The model could not be resolved or loaded."""


class DataError(AutopeftError):
    """The dataset could not be loaded or does not have the expected columns."""


class SpaceError(AutopeftError):
    """A search-space file or point is invalid."""


class Interrupted(Exception):
    """Ctrl-C in a long command; the message says what was kept and the command that resumes it (exit 130)."""
