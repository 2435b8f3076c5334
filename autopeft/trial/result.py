"""The record one trial produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

OK, NAN_LOSS, DIVERGED, OOM, ERROR = "ok", "nan_loss", "diverged", "oom", "error"


@dataclass
class TrialResult:
    status: str = OK                      # ok | nan_loss | diverged | oom | error
    reason: str | None = None             # why a trial did not finish ("error: ..." text)
    metrics: dict[str, float] = field(default_factory=dict)       # on the selection (validation) split
    test_metrics: dict[str, float] = field(default_factory=dict)  # on the reported split, when asked for
    adapter_params: int = 0               # trainable parameters of the PEFT modules (the searched objective)
    trainable_params: int = 0             # adapter + task head: everything the optimiser updates
    total_params: int = 0
    train_examples: int = 0
    eval_examples: int = 0                # validation (+ test) examples scored
    steps: int = 0                        # optimiser steps of the model's whole training, resumed ones included
    resumed_steps: int = 0                # of those, done before: by the checkpoint this trial continued
    resume_note: str | None = None        # why a checkpoint was neither continued nor written (DeepSpeed, ranks)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    setup_seconds: float = 0.0            # copy of the base model + PEFT injection
    wall_seconds: float = 0.0
    started_at: float = 0.0               # Unix time the trial started (a timeline of concurrent trials)
    train_examples_per_second: float = 0.0
    eval_examples_per_second: float = 0.0
    peak_memory_mb: float = 0.0           # peak RSS during the trial (CPU) or max CUDA allocation
    final_train_loss: float | None = None
    warmup_steps: int = 0                 # pre-fine-tuning before the task training (autopeft.trial.warmup)
    warmup_seconds: float = 0.0
    warmup_loss: float | None = None      # its last batch's loss
    input_blind_loss: float | None = None # eval loss of predicting without the input (data.input_blind_loss)
    trivial_metric: float | None = None   # what ignoring the input scores on the same eval subset (data.TrivialScore)
    trivial: bool = False                 # the trial did not beat trivial_metric by more than metric_stderr
    metric_stderr: float | None = None    # the eval subset's standard error of the metric at the trivial score
    # [step, mean training loss] after every few optimiser steps (at most loop.MAX_LOSS_POINTS; a run continued from
    # a checkpoint has the steps it trained): the search writes them as the Optuna trial's intermediate values
    train_losses: list[list[float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self, losses: bool = True) -> dict:
        """Every field (JSON types); without ``train_losses`` where the loss curve is stored elsewhere."""
        data = asdict(self)
        if not losses:
            del data["train_losses"]
        return data
