"""The one training loop alone, on a toy regression (no model files, no data sets)."""

import math

import numpy as np
import pytest
import torch

from autopeft.data import length_grouped_batches
from autopeft.trial.loop import NonFiniteLoss, Shard, TrainingConfig, train

CPU = torch.device("cpu")
LENGTHS = np.array([3, 7, 5, 2, 9, 4, 6, 8, 1, 5])  # 10 examples: batches of 4, 4 and 2
EVERY_ROW = Shard(np.arange(10), np.arange(10))


def toy_problem(seed=0):
    torch.manual_seed(seed)
    inputs, targets = torch.randn(len(LENGTHS), 3), torch.randn(len(LENGTHS), 1)
    return torch.nn.Linear(3, 1), inputs, targets


def mse(inputs, targets, seen=None):
    def loss(model, shard):
        if seen is not None:
            seen.append(shard)
        rows = torch.as_tensor(shard.rows)
        return torch.nn.functional.mse_loss(model(inputs[rows]), targets[rows])
    return loss


def test_steps_through_seeded_length_grouped_epochs_and_learns():
    model, inputs, targets = toy_problem()
    seen = []
    before = mse(inputs, targets)(model, EVERY_ROW).item()
    run = train(model, mse(inputs, targets, seen), LENGTHS, training=TrainingConfig(learning_rate=0.05),
                batch_size=4, total_steps=7, seed=5, device=CPU)
    expected = [b for epoch in range(3) for b in length_grouped_batches(LENGTHS, 4, seed=5 + epoch)][:7]
    assert [s.rows.tolist() for s in seen] == [b.tolist() for b in expected]
    assert all(s.rows is s.batch for s in seen)  # one process: the shard is the whole batch
    assert (run.steps, run.examples) == (7, sum(len(b) for b in expected))
    assert run.seconds > 0 and math.isfinite(run.final_loss)
    assert mse(inputs, targets)(model, EVERY_ROW).item() < before


def test_the_same_seed_trains_the_same_weights():
    weights = []
    for _ in range(2):
        model, inputs, targets = toy_problem()
        train(model, mse(inputs, targets), LENGTHS, training=TrainingConfig(learning_rate=0.05, warmup_ratio=0.3),
              batch_size=4, total_steps=5, seed=1, device=CPU)
        weights.append(model.weight.detach().clone())
    assert torch.equal(*weights)


def test_gradients_are_clipped_to_max_grad_norm(monkeypatch):
    norms_before, norms_after = [], []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm):
        norms_before.append(clip(parameters, max_norm).item())
        norms_after.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])).item())
        return norms_before[-1]

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    model, inputs, targets = toy_problem()
    train(model, mse(inputs, targets * 100), LENGTHS, training=TrainingConfig(learning_rate=0.01, max_grad_norm=0.5),
          batch_size=4, total_steps=3, seed=0, device=CPU)
    assert len(norms_after) == 3 and min(norms_before) > 0.5
    assert all(norm == pytest.approx(0.5) for norm in norms_after)


def test_only_the_given_parameters_train():
    model, inputs, targets = toy_problem()
    bias = model.bias.detach().clone()
    train(model, mse(inputs, targets), LENGTHS, training=TrainingConfig(learning_rate=0.05), batch_size=4,
          total_steps=3, seed=0, device=CPU, parameters=[model.weight])
    assert torch.equal(model.bias, bias)


def test_a_non_finite_loss_stops_before_the_step():
    model, inputs, targets = toy_problem()
    calls = []

    def poisoned(forward, shard):
        calls.append(shard)
        loss = mse(inputs, targets)(forward, shard)
        return loss * float("nan") if len(calls) == 3 else loss

    with pytest.raises(NonFiniteLoss, match="loss became nan at step 3") as caught:
        train(model, poisoned, LENGTHS, training=TrainingConfig(learning_rate=0.05), batch_size=4, total_steps=5,
              seed=0, device=CPU)
    assert caught.value.step == 3 and math.isnan(caught.value.loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_loss_per_step_is_reported_thinned_to_window_means(monkeypatch):
    """Issue 19 (9): each step's loss (a trial's intermediate values); a long run averages windows of steps."""
    from autopeft.trial import loop

    model, inputs, targets = toy_problem()
    seen = []

    def recording(model, shard):
        value = mse(inputs, targets)(model, shard)
        seen.append(value.item())
        return value

    run = train(model, recording, LENGTHS, training=TrainingConfig(learning_rate=0.05), batch_size=4,
                total_steps=7, seed=0, device=CPU)
    assert run.losses == tuple((step + 1, loss) for step, loss in enumerate(seen))
    monkeypatch.setattr(loop, "MAX_LOSS_POINTS", 3)
    model, inputs, targets = toy_problem()
    seen.clear()
    run = train(model, recording, LENGTHS, training=TrainingConfig(learning_rate=0.05), batch_size=4,
                total_steps=7, seed=0, device=CPU)
    assert [step for step, _ in run.losses] == [3, 6, 7]   # windows of ceil(7 / 3) = 3 steps, then the last one
    assert [loss for _, loss in run.losses] == pytest.approx([np.mean(seen[0:3]), np.mean(seen[3:6]), seen[6]])
