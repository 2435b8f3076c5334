"""Train one PEFT configuration at one fidelity and measure it."""

from autopeft.trial.fidelity import Fidelity
from autopeft.trial.loop import TrainingConfig
from autopeft.trial.result import DIVERGED, ERROR, NAN_LOSS, OK, OOM, TrialResult
from autopeft.trial.runner import AdapterFactory, TrialRunner

__all__ = [
    "AdapterFactory", "DIVERGED", "ERROR", "Fidelity", "NAN_LOSS", "OK", "OOM",
    "TrainingConfig", "TrialResult", "TrialRunner",
]
