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
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from autopeft.data import length_grouped_batches

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
            raise ValueError(f"warm-up objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if self.objective == "lm" and not self.texts:
            raise ValueError("an 'lm' warm-up needs texts")
        if self.objective == "task" and not self.train_indices:
            raise ValueError("a 'task' warm-up needs train_indices")
        if not self.epochs > 0:
            raise ValueError("warm-up epochs must be positive")


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
              max_grad_norm: float, seed: int, device: torch.device, autocast) -> dict:
    """Train the adapter of ``model`` (a PEFT model) on ``warmup.texts`` with masked or causal LM.

    Returns ``{"steps", "examples", "seconds", "final_loss"}``; raises FloatingPointError on a NaN loss.
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
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    batches_per_epoch = math.ceil(len(encoded) / warmup.batch_size)
    total_steps = max(1, math.ceil(batches_per_epoch * warmup.epochs))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total_steps)

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # masking and dropout
    model.train()
    step = examples = 0
    loss_value = float("nan")
    start = time.perf_counter()
    epoch = 0
    while step < total_steps:
        for rows in length_grouped_batches(lengths, warmup.batch_size, seed=seed + epoch):
            if step >= total_steps:
                break
            batch = collator([{"input_ids": encoded[i]} for i in rows])
            batch = {key: value.to(device) for key, value in batch.items()}
            with autocast():
                if causal:
                    loss = model(**batch).loss
                else:
                    loss = _masked_lm_loss(inner, head, batch)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"warm-up loss became {loss_value} at step {step + 1}")
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            examples += len(rows)
        epoch += 1
    torch.random.set_rng_state(generator_state)  # the task training sees the same randomness with or without
    return {"steps": step, "examples": examples, "seconds": time.perf_counter() - start, "final_loss": loss_value}


def _masked_lm_loss(inner, head: _MaskedLMHead, batch: dict) -> torch.Tensor:
    """Cross-entropy on the masked positions only (the vocabulary projection is the costly part)."""
    labels = batch["labels"]
    hidden = inner.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    masked = labels != -100
    if not masked.any():  # a batch of very short texts can draw no mask: contribute nothing
        return hidden.sum() * 0.0
    logits = head(hidden[masked])
    return torch.nn.functional.cross_entropy(logits.float(), labels[masked])
