"""autopeft: multi-objective search over parameter-efficient fine-tuning configurations."""

__version__ = "0.1.0"

import autopeft.tuners  # noqa: E402,F401  (registers autopeft's PEFT methods, so PEFT can save and load them)
