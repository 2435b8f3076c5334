"""How much a trial trains and evaluates: the knob multi-fidelity search turns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from autopeft.errors import AutopeftError

MIN_RUNG_STEPS = 20
"""A step rung trains at least this many optimiser steps (fewer only when the full fidelity has fewer): fewer
leave even LoRA r8 at the trivial score, so such a rung ranks nothing."""


@dataclass(frozen=True)
class Fidelity:
    train_examples: float | None = None  # count (> 1) or fraction (<= 1) of the train split; None = all
    epochs: float = 1.0
    max_steps: int | None = None         # caps the number of optimiser steps when set
    max_length: int = 128                # tokens per example
    eval_examples: int | None = None     # evaluate on the first N (seeded order) of the eval split
    generation_examples: int = 0         # causal LM: greedy-generation exact match on this many eval examples
    max_new_tokens: int = 128
    batch_size: int = 32
    eval_batch_size: int = 64
    # A step rung of a search: ``num_steps`` is ``ceil(step_fraction x`` the full steps of this fidelity
    # without it ``)``, at least MIN_RUNG_STEPS, and the LR schedule spans the full steps, so the rung's training
    # is an exact prefix of the full training (same data, batches and schedule): a promotion can continue it.
    # A fraction, not a count, because the full steps depend on the train split's size, known only to the runner.
    step_fraction: float | None = None
    schedule_steps: int | None = None    # the LR schedule spans this many steps (None: see schedule_length)

    def __post_init__(self):
        if self.train_examples is not None and not (math.isfinite(self.train_examples) and self.train_examples > 0):
            raise AutopeftError("--train-examples must be positive (a count, or a fraction <= 1)")
        if (self.train_examples is not None and self.train_examples > 1
                and self.train_examples != int(self.train_examples)):
            raise AutopeftError(f"--train-examples {self.train_examples:g} is neither a count nor a fraction <= 1")
        if not math.isfinite(self.epochs) or (self.epochs <= 0 and not self.max_steps):
            raise AutopeftError("--epochs must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise AutopeftError("--max-steps must be at least 1")
        if self.max_length < 8:
            raise AutopeftError("--max-length must be at least 8 tokens")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise AutopeftError("--batch-size must be at least 1")
        if self.eval_examples is not None and self.eval_examples < 1:
            raise AutopeftError("--eval-examples must be at least 1")
        if self.generation_examples < 0:
            raise AutopeftError("--generation-examples must be >= 0")
        if self.max_new_tokens < 1:
            raise AutopeftError("--max-new-tokens must be at least 1")
        if self.step_fraction is not None and not 0 < self.step_fraction <= 1:
            raise AutopeftError(f"a step rung's fraction must be in (0, 1], got {self.step_fraction}")
        if self.schedule_steps is not None and self.schedule_steps < 1:
            raise AutopeftError("the schedule must span at least 1 step")

    def train_size(self, available: int) -> int:
        if self.train_examples is None:
            return available
        if self.train_examples <= 1:
            return max(1, round(self.train_examples * available))
        return min(available, int(self.train_examples))

    def full_steps(self, train_size: int) -> int:
        """Optimiser steps of this fidelity without its ``step_fraction``: epochs over the data, capped by max_steps."""
        steps = math.ceil(math.ceil(train_size / self.batch_size) * self.epochs)
        return min(steps, self.max_steps) if self.max_steps else steps

    def num_steps(self, train_size: int) -> int:
        full = self.full_steps(train_size)
        if self.step_fraction is None:
            return full
        return min(full, max(math.ceil(self.step_fraction * full), MIN_RUNG_STEPS))

    def schedule_length(self, train_size: int) -> int:
        """Steps the LR schedule (warm-up, then linear decay to 0) spans: ``schedule_steps`` when set, else the full
        steps (for a step rung those of the full fidelity, so that its schedule is the full training's)."""
        return self.schedule_steps if self.schedule_steps is not None else self.full_steps(train_size)

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("step_fraction", "schedule_steps"):  # unset: as before they existed (stored fingerprints)
            if data[name] is None:
                del data[name]
        return data
