"""What the search calls to train one point: ``evaluator(point, fidelity, seed, ...) -> TrialResult``.

The production evaluator builds the point's PEFT model with :mod:`autopeft.builders` and trains
it with a :class:`~autopeft.trial.TrialRunner`; tests may pass any callable with this signature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Protocol

from autopeft.errors import AutopeftError
from autopeft.space import PeftPoint
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import ERROR, TrialResult


class Evaluator(Protocol):
    def __call__(self, point: PeftPoint, fidelity: Fidelity, seed: int, *, evaluate_test: bool = False,
                 save_dir: Path | None = None) -> TrialResult: ...


AdapterBuilder = Callable[[PeftPoint], Callable]
"""point -> adapter factory (callable(base_model) -> PeftModel)."""


def builders_adapter_builder(model_config, kind: str) -> AdapterBuilder:
    """``autopeft.builders.build_adapter`` bound to the model config and task kind."""
    try:
        from autopeft.builders import build_adapter
    except ImportError as exc:
        raise AutopeftError(f"the PEFT builders are not available ({exc})") from None
    return lambda point: build_adapter(point, model_config, kind)


@dataclass
class RunnerEvaluator:
    runner: object                      # autopeft.trial.TrialRunner (not imported here: it pulls in torch data code)
    adapter_builder: AdapterBuilder
    training: object                    # autopeft.trial.TrainingConfig: defaults for what the point leaves open

    def __call__(self, point: PeftPoint, fidelity: Fidelity, seed: int, *, evaluate_test: bool = False,
                 save_dir: Path | None = None) -> TrialResult:
        known = {f.name for f in fields(self.training)}
        training = replace(self.training, **{k: v for k, v in point.training.items() if k in known})
        try:
            factory = self.adapter_builder(point)
        except Exception as exc:  # an unbuildable point fails its trial, not the search
            return TrialResult(status=ERROR, reason=f"error: building the adapter: {type(exc).__name__}: {exc}")
        return self.runner.run(factory, fidelity, seed, training, evaluate_test=evaluate_test, save_dir=save_dir)
