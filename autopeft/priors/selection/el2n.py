"""``el2n``: the EL2N score (Paul et al., NeurIPS 2021, "Deep Learning on a Data Diet") of a briefly trained model.

EL2N(x, y) = ‖softmax(f(x)) − onehot(y)‖₂, averaged over several independently initialised models trained
for a short while. Here f is a linear probe on the frozen pool embeddings (the tuned model's own
features), trained with Adam on the whole pool for :data:`EPOCHS` epochs or :data:`MIN_STEPS` steps, whichever is
longer (a small pool would otherwise see only a handful of steps), :data:`RUNS` runs averaged; for a
regression target the probe is linear regression on the standardised target and the score is ``|f(x) − y|``.

High scores are the informative (hard) examples, low scores the easy ones; the ranking keeps the
informative first. The very highest scores are mostly mislabelled or ambiguous examples, so the top
:data:`NOISE_FRACTION` of the pool (rounded up) is treated as likely label noise and goes *last*, the
highest score at the very end: the order is ``scores[NOISE:]`` descending, then the noisy block ascending.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from autopeft.priors.selection.base import SelectionInputs, SelectionStrategy, register

EPOCHS = 3
MIN_STEPS = 200
RUNS = 5
BATCH_SIZE = 256
LEARNING_RATE = 1e-2
NOISE_FRACTION = 0.05  # the top 5 % of EL2N scores are taken to be label noise and ranked last


def el2n_scores(features: np.ndarray, labels: np.ndarray, seed: int, *, epochs: int = EPOCHS,
                min_steps: int = MIN_STEPS, runs: int = RUNS, batch_size: int = BATCH_SIZE,
                lr: float = LEARNING_RATE) -> tuple[np.ndarray, dict]:
    """Mean EL2N score per example over ``runs`` linear probes, and a few training facts."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    labels = np.asarray(labels)
    regression = bool(np.issubdtype(labels.dtype, np.floating))  # the data layer gives float32 regression targets
    if regression:
        values = labels.astype(np.float64)
        y = torch.from_numpy(((values - values.mean()) / max(values.std(), 1e-12)).astype(np.float32))
        outputs = 1
    else:
        y = torch.from_numpy(labels.astype(np.int64))
        if int(y.min()) < 0:
            raise ValueError("class labels must be non-negative ids")
        outputs = max(int(y.max()) + 1, 2)
    n = len(x)
    scores = torch.zeros(n, dtype=torch.float64)
    final_losses = []
    with torch.random.fork_rng(devices=[]):
        for run in range(runs):
            generator = torch.Generator().manual_seed(seed * 1000 + run)
            torch.manual_seed(seed * 1000 + run)
            probe = torch.nn.Linear(x.shape[1], outputs)
            optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
            steps = 0
            while steps < max(min_steps, epochs * math.ceil(n / batch_size)):
                total = 0.0
                for rows in torch.randperm(n, generator=generator).split(batch_size):
                    logits = probe(x[rows])
                    if regression:
                        loss = torch.nn.functional.mse_loss(logits.squeeze(1), y[rows])
                    else:
                        loss = torch.nn.functional.cross_entropy(logits, y[rows])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(rows)
                    steps += 1
            final_losses.append(total / n)
            with torch.inference_mode():
                logits = probe(x)
                if regression:
                    error = (logits.squeeze(1) - y).abs()
                else:
                    onehot = torch.nn.functional.one_hot(y, outputs).float()
                    error = (logits.softmax(dim=1) - onehot).norm(dim=1)
            scores += error.double()
    return (scores / runs).numpy(), {"regression": regression, "steps_per_run": steps,
                                     "final_train_loss": float(np.mean(final_losses))}


@register
class EL2NStrategy(SelectionStrategy):
    name = "el2n"
    needs_labels = True
    needs_embeddings = True

    def settings(self) -> dict:
        return {"epochs": EPOCHS, "min_steps": MIN_STEPS, "runs": RUNS, "batch_size": BATCH_SIZE, "lr": LEARNING_RATE,
                "noise_fraction": NOISE_FRACTION}

    def _order(self, inputs: SelectionInputs, seed: int) -> np.ndarray:
        features = inputs.pool_embeddings
        start = time.perf_counter()  # after the embeddings, which are the caller's cost
        scores, facts = el2n_scores(features, inputs.pool_labels, seed)
        shuffled = np.random.default_rng(seed).permutation(len(scores))  # ties in a seeded order
        by_score = shuffled[np.argsort(-scores[shuffled], kind="stable")]
        noisy = math.ceil(NOISE_FRACTION * len(scores)) if len(scores) > 1 else 0
        ranked = np.concatenate([by_score[noisy:], by_score[:noisy][::-1]])
        self.info.update(facts, noise_fraction=NOISE_FRACTION, ranked_last_as_noise=noisy,
                         score_min=float(scores.min()), score_max=float(scores.max()),
                         score_mean=float(scores.mean()), seconds=round(time.perf_counter() - start, 3))
        return ranked
