"""Pre-fine-tuning ("warm-up") of a trial's PEFT modules before its task training.

GOT-D (Kang et al., ICLR 2024) selects pool examples that move the pre-training distribution toward the
target task and briefly continues pre-training on them before fine-tuning. A :class:`Warmup` gives the
trial runner those examples:

- ``objective="lm"`` on raw ``texts``: masked-LM for encoders (15 % of the tokens, BERT's 80/10/10
  corruption, through ``transformers.DataCollatorForLanguageModeling``), next-token LM for causal LMs;
- ``objective="task"`` on ``train_indices`` of the task's own train split: the task loss.

Only the trial's adapter trains (plus, for masked LM on a model loaded without its MLM head, a temporary
head; see :class:`_MaskedLMHead`); the task head is untouched and the task training that follows starts a
fresh optimiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from autopeft.errors import AutopeftError
from autopeft.trial.loop import Shard, TrainingConfig, train

OBJECTIVES = ("lm", "task")


@dataclass(frozen=True)
class Warmup:
    objective: str = "lm"
    texts: tuple[str, ...] = ()                           # objective "lm"
    train_indices: tuple[int, ...] = ()                   # objective "task": rows of the task's train split
    epochs: float = 1.0
    learning_rate: float | None = None                    # None: the trial's learning rate
    mlm_probability: float = 0.15
    batch_size: int = 32
    label: str = field(default="", compare=False)         # where the examples came from (for the record)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise AutopeftError(f"warm-up objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if self.objective == "lm" and not self.texts:
            raise AutopeftError("an 'lm' warm-up needs texts")
        if self.objective == "task" and not self.train_indices:
            raise AutopeftError("a 'task' warm-up needs train_indices")
        if not self.epochs > 0:
            raise AutopeftError("warm-up epochs must be positive")


class _MaskedLMHead(torch.nn.Module):
    """BERT's MLM head shape (dense → GELU → LayerNorm → decoder tied to the input embeddings, + bias).

    Sequence-classification checkpoints (and sentence-embedding ones such as all-MiniLM) ship without
    the pretrained head, so it starts as close to "hidden state · embedding" as the shape allows: the
    dense layer is the identity. It trains with the adapter and is dropped after the warm-up; the tied
    embedding matrix stays frozen.
    """

    def __init__(self, embeddings: torch.nn.Embedding, hidden_size: int, eps: float = 1e-12):
        super().__init__()
        self.dense = torch.nn.Linear(hidden_size, hidden_size)
        torch.nn.init.eye_(self.dense.weight)
        torch.nn.init.zeros_(self.dense.bias)
        self.norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        self.embeddings = embeddings
        self.bias = torch.nn.Parameter(torch.zeros(embeddings.num_embeddings))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(torch.nn.functional.gelu(self.dense(hidden)))
        return hidden @ self.embeddings.weight.detach().T + self.bias


def lm_warmup(model, tokenizer, kind: str, warmup: Warmup, *, max_length: int, learning_rate: float,
              max_grad_norm: float, bf16: bool = False, seed: int, device: torch.device) -> dict:
    """Train the adapter of ``model`` (a PEFT model) on ``warmup.texts`` with masked or causal LM.

    AdamW without weight decay, the learning rate decaying linearly to 0. Returns ``{"steps", "examples",
    "seconds", "final_loss"}``; raises :class:`~autopeft.trial.loop.NonFiniteLoss` on a NaN loss.
    """
    from transformers import DataCollatorForLanguageModeling

    causal = kind == "causal_lm"
    if not causal and tokenizer.mask_token_id is None:
        raise ValueError("masked-LM warm-up needs a tokenizer with a mask token")
    encoded = tokenizer(list(warmup.texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = np.array([len(ids) for ids in encoded])
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=not causal, mlm_probability=warmup.mlm_probability,
                                               return_tensors="pt")
    inner = model.get_base_model()
    head = None
    if not causal:
        config = inner.config
        head = _MaskedLMHead(inner.get_input_embeddings(), config.hidden_size,
                             getattr(config, "layer_norm_eps", 1e-12)).to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    parameters += [p for name, p in head.named_parameters() if not name.startswith("embeddings")] if head else []

    def lm_loss(forward, shard: Shard) -> torch.Tensor:
        batch = collator([{"input_ids": encoded[i]} for i in shard.rows])  # draws the masks
        batch = {key: value.to(device) for key, value in batch.items()}
        return forward(**batch).loss if causal else _masked_lm_loss(inner, head, batch)

    batches_per_epoch = math.ceil(len(encoded) / warmup.batch_size)
    training = TrainingConfig(learning_rate=learning_rate, weight_decay=0.0, warmup_ratio=0.0,
                              max_grad_norm=max_grad_norm, bf16=bf16)
    generator_state = torch.random.get_rng_state()
    run = train(model, lm_loss, lengths, training=training, batch_size=warmup.batch_size,
                total_steps=max(1, math.ceil(batches_per_epoch * warmup.epochs)), seed=seed, device=device,
                parameters=parameters)
    torch.random.set_rng_state(generator_state)  # the task training sees the same randomness with or without
    return {"steps": run.steps, "examples": run.examples, "seconds": run.seconds, "final_loss": run.final_loss}


def _masked_lm_loss(inner, head: _MaskedLMHead, batch: dict) -> torch.Tensor:
    """Cross-entropy on the masked positions only (the vocabulary projection is the costly part)."""
    labels = batch["labels"]
    hidden = inner.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    masked = labels != -100
    if not masked.any():  # a batch of very short texts can draw no mask: contribute nothing
        return hidden.sum() * 0.0
    logits = head(hidden[masked])
    return torch.nn.functional.cross_entropy(logits.float(), labels[masked])
