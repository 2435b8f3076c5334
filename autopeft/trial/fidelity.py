"""How much a trial trains and evaluates: the knob multi-fidelity search turns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


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

    def __post_init__(self):
        if self.train_examples is not None and self.train_examples <= 0:
            raise ValueError("fidelity train_examples must be positive")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError("fidelity epochs must be positive")
        if self.max_length < 8:
            raise ValueError("fidelity max_length must be at least 8 tokens")

    def train_size(self, available: int) -> int:
        if self.train_examples is None:
            return available
        if self.train_examples <= 1:
            return max(1, round(self.train_examples * available))
        return min(available, int(self.train_examples))

    def num_steps(self, train_size: int) -> int:
        steps = math.ceil(math.ceil(train_size / self.batch_size) * self.epochs)
        return min(steps, self.max_steps) if self.max_steps else steps

    def to_dict(self) -> dict:
        return asdict(self)
