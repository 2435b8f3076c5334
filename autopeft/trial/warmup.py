"""Pre-fine-tuning ("warm-up") of a trial's PEFT modules before its task training.

GOT-D (Kang et al., ICLR 2024) selects pool examples that move the pre-training distribution toward the
target task and briefly continues pre-training on them before fine-tuning. A :class:`Warmup` gives the
trial runner those examples:

- ``objective="lm"`` on raw ``texts``: masked-LM for encoders (15 % of the tokens, BERT's 80/10/10
  corruption, through ``transformers.DataCollatorForLanguageModeling``), next-token LM for causal LMs;
- ``objective="task"`` on ``train_indices`` of the task's own train split: the task loss.

Only the trial's adapter trains (plus, for masked LM on a model loaded without its MLM head, a temporary
head; see :class:`MaskedLMHead`); the task head is untouched and the task training that follows starts a
fresh optimiser. ``head_file`` gives that temporary head a trained start (the checkpoint's own MLM head, or one
fitted on the frozen model: :func:`autopeft.priors.mlm_head.cached_masked_lm_head`); without it the head starts
untrained and the first steps of the warm-up move the adapter toward whatever an untrained head needs.
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
    head_file: str | None = None                          # masked LM: the head's start (MaskedLMHead safetensors)
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


class MaskedLMHead(torch.nn.Module):
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

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The head's own tensors (not the tied embeddings): what a head file holds."""
        return {name: value.detach().cpu().contiguous() for name, value in self.state_dict().items()
                if not name.startswith("embeddings")}

    def load_head_file(self, path: str) -> None:
        from safetensors.torch import load_file

        state = load_file(path)
        expected = set(self.trained_state())
        if set(state) != expected:
            raise AutopeftError(f"'{path}' is not a masked-LM head for this model (tensors {sorted(state)}, "
                                f"expected {sorted(expected)})")
        for name, value in state.items():
            if value.shape != self.state_dict()[name].shape:
                raise AutopeftError(f"'{path}' holds a masked-LM head of another size ({name} {tuple(value.shape)})")
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if name in state:
                    parameter.copy_(state[name])


# a BERT-family masked-LM checkpoint's head (BertForMaskedLM's cls.predictions; the decoder is tied) -> our names
CHECKPOINT_HEAD_NAMES = {"cls.predictions.transform.dense.weight": "dense.weight",
                         "cls.predictions.transform.dense.bias": "dense.bias",
                         "cls.predictions.transform.LayerNorm.weight": "norm.weight",
                         "cls.predictions.transform.LayerNorm.bias": "norm.bias",
                         "cls.predictions.bias": "bias"}


def masked_lm_head_for(inner) -> MaskedLMHead:
    """A fresh :class:`MaskedLMHead` tied to ``inner``'s (a transformers model's) input embeddings."""
    config = inner.config
    return MaskedLMHead(inner.get_input_embeddings(), config.hidden_size, getattr(config, "layer_norm_eps", 1e-12))


def encoder_of(inner) -> torch.nn.Module:
    """The encoder under a transformers model's task head (``BertModel`` under ``BertForSequenceClassification``)."""
    return getattr(inner, "base_model", inner)


def fit_masked_lm_head(inner, tokenizer, texts: list[str], *, epochs: float = 4.0, learning_rate: float = 3e-3,
                       batch_size: int = 32, max_length: int = 128, mlm_probability: float = 0.15, seed: int = 0,
                       device: torch.device | str = "cpu") -> tuple[MaskedLMHead, dict]:
    """Fit a :class:`MaskedLMHead` on ``texts`` with the model frozen (its encoder runs without gradients; only
    the head's dense layer, LayerNorm and output bias train). Returns the head and ``{"steps", "seconds",
    "initial_loss", "final_loss"}`` (means over the first and the last tenth of the steps).

    A loop of its own rather than :func:`autopeft.trial.loop.train`: the encoder runs under ``no_grad`` (nothing
    below the head needs a graph, which halves the cost), the rate stays constant (the head is fitted to
    convergence once and cached, not scheduled like a trial), and the first and last losses are what callers report."""
    import time

    from transformers import DataCollatorForLanguageModeling

    if tokenizer.mask_token_id is None:
        raise ValueError("fitting a masked-LM head needs a tokenizer with a mask token")
    device = torch.device(device)
    start = time.perf_counter()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    encoder = encoder_of(inner)
    head = masked_lm_head_for(inner).to(device)
    parameters = [p for name, p in head.named_parameters() if not name.startswith("embeddings")]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability,
                                               return_tensors="pt")
    order_rng = np.random.default_rng(seed)
    steps = max(1, math.ceil(len(encoded) / batch_size * epochs))
    losses: list[float] = []
    was_training = encoder.training
    encoder.eval()
    try:
        while len(losses) < steps:
            order = order_rng.permutation(len(encoded))
            for first in range(0, len(order), batch_size):
                if len(losses) >= steps:
                    break
                batch = collator([{"input_ids": encoded[i]} for i in order[first:first + batch_size]])
                labels = batch["labels"].to(device)
                masked = labels != -100
                if not masked.any():
                    continue
                with torch.no_grad():
                    hidden = encoder(input_ids=batch["input_ids"].to(device),
                                     attention_mask=batch["attention_mask"].to(device)).last_hidden_state
                loss = torch.nn.functional.cross_entropy(head(hidden[masked]).float(), labels[masked])
                if not torch.isfinite(loss):
                    raise NonFiniteHeadLoss(f"the masked-LM head's loss became {loss.item()} at step {len(losses)}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    finally:
        encoder.train(was_training)
        torch.random.set_rng_state(generator_state)
    tenth = max(1, len(losses) // 10)
    return head, {"steps": len(losses), "seconds": round(time.perf_counter() - start, 1),
                  "initial_loss": round(float(np.mean(losses[:tenth])), 4),
                  "final_loss": round(float(np.mean(losses[-tenth:])), 4)}


class NonFiniteHeadLoss(AutopeftError):
    """Fitting the masked-LM head diverged."""


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
        head = masked_lm_head_for(inner)
        if warmup.head_file:
            head.load_head_file(warmup.head_file)
        head = head.to(device)
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


def _masked_lm_loss(inner, head: MaskedLMHead, batch: dict) -> torch.Tensor:
    """Cross-entropy on the masked positions only (the vocabulary projection is the costly part)."""
    labels = batch["labels"]
    hidden = inner.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    masked = labels != -100
    if not masked.any():  # a batch of very short texts can draw no mask: contribute nothing
        return hidden.sum() * 0.0
    logits = head(hidden[masked])
    return torch.nn.functional.cross_entropy(logits.float(), labels[masked])
