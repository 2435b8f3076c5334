"""Step rungs and continued promotions: a checkpointed run resumed to M steps is the run of M steps in one go."""

import numpy as np
import pytest
import torch
from peft import LoraConfig

from autopeft.models import get_base_model
from autopeft.trial import Fidelity, TrainingConfig, TrialRunner
from autopeft.trial.fidelity import MIN_RUNG_STEPS
from autopeft.trial.loop import CheckpointMismatch, TrainState, train
from tests.test_trial import shared_datasets_module, sst2, tiny_bert_dir  # noqa: F401  (fixtures)

CPU = torch.device("cpu")
LENGTHS = np.array([3, 7, 5, 2, 9, 4, 6, 8, 1, 5])  # 10 examples: batches of 4, 4 and 2
TRAINING = TrainingConfig(learning_rate=0.05, warmup_ratio=0.2)


def toy_problem():
    torch.manual_seed(0)
    inputs, targets = torch.randn(len(LENGTHS), 3), torch.randn(len(LENGTHS), 1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))

    def loss(forward, shard):
        rows = torch.as_tensor(shard.rows)
        return torch.nn.functional.mse_loss(forward(inputs[rows]), targets[rows])
    return model, loss


def test_a_resumed_run_equals_the_run_in_one_go(tmp_path):
    whole, loss = toy_problem()
    straight = train(whole, loss, LENGTHS, training=TRAINING, batch_size=4, total_steps=8, seed=3, device=CPU)

    first, loss = toy_problem()
    early = train(first, loss, LENGTHS, training=TRAINING, batch_size=4, total_steps=4, seed=3, device=CPU,
                  schedule_steps=8)
    early.state.save(tmp_path / "ckpt")
    torch.manual_seed(99)  # whatever ran in between: the checkpoint's RNG is restored
    second, loss = toy_problem()
    resumed = train(second, loss, LENGTHS, training=TRAINING, batch_size=4, total_steps=8, seed=3, device=CPU,
                    resume=TrainState.load(tmp_path / "ckpt"))
    assert (resumed.steps, resumed.resumed_steps) == (8, 4)
    assert resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-6)
    assert [step for step, _ in resumed.losses] == [5, 6, 7, 8]   # the loss curve of the steps it trained
    assert [v for _, v in resumed.losses] == pytest.approx([v for _, v in straight.losses[4:]], abs=1e-6)
    for a, b in zip(whole.parameters(), second.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # a checkpoint at (or past) the target trains nothing more
    third, loss = toy_problem()
    done = train(third, loss, LENGTHS, training=TRAINING, batch_size=4, total_steps=4, seed=3, device=CPU,
                 resume=TrainState.load(tmp_path / "ckpt"))
    assert (done.steps, done.resumed_steps, done.examples) == (4, 4, 0)


def test_a_checkpoint_of_other_parameters_is_refused(tmp_path):
    model, loss = toy_problem()
    train(model, loss, LENGTHS, training=TRAINING, batch_size=4, total_steps=2, seed=0, device=CPU).state.save(
        tmp_path / "ckpt")
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.3), torch.nn.Linear(4, 1))
    with pytest.raises(CheckpointMismatch, match="other shapes"):
        train(other, loss, LENGTHS, training=TRAINING, batch_size=4, total_steps=4, seed=0, device=CPU,
              resume=TrainState.load(tmp_path / "ckpt"))


def test_rungs_that_train_what_the_next_one_trains_are_dropped_with_a_note():
    from autopeft.search.settings import distinct_rungs, fidelity_rungs

    ladder = [1 / 27, 1 / 9, 1 / 3, 1.0]
    full = Fidelity(train_examples=400, batch_size=8)   # 50 steps: 1/27, 1/9 and 1/3 all rise to the 20-step floor
    kept, note = distinct_rungs(fidelity_rungs(full, ladder, "steps"), 1000)
    assert [r.num_steps(400) for r in kept] == [MIN_RUNG_STEPS, 50] and kept[0].step_fraction == pytest.approx(1 / 3)
    assert note.startswith("2 of the 4 fidelity rungs") and "(20, 50 optimiser steps)" in note
    large = fidelity_rungs(Fidelity(batch_size=8), ladder, "steps")   # 1,250 steps on 10,000 rows: all differ
    assert distinct_rungs(large, 10_000) == (large, None)
    data = fidelity_rungs(Fidelity(train_examples=400, batch_size=8), [0.5, 1.0], "data")   # 200 vs 400 examples
    assert distinct_rungs(data, 1000) == (data, None)


def test_step_rungs_are_prefixes_of_the_full_training_with_a_floor():
    from autopeft.search.settings import FidelitySettings, fidelity_rungs

    full = Fidelity(train_examples=1000, epochs=2, batch_size=10)   # 200 steps
    low, mid, top = fidelity_rungs(full, [0.25, 0.5, 1.0], "steps")
    assert top == full and low.train_examples == mid.train_examples == 1000
    assert [r.num_steps(1000) for r in (low, mid, top)] == [50, 100, 200]
    assert {r.schedule_length(1000) for r in (low, mid, top)} == {200}
    tiny = fidelity_rungs(full, [0.01, 1.0], "steps")[0]
    assert tiny.num_steps(1000) == MIN_RUNG_STEPS   # 2 steps would rank nothing
    few = Fidelity(train_examples=40, batch_size=4)  # 10 steps in all: the floor cannot exceed them
    assert fidelity_rungs(few, [0.5, 1.0], "steps")[0].num_steps(40) == 10
    assert FidelitySettings().fidelity_resource == "steps"
    # the agreed explicit form is the same training
    explicit = Fidelity(train_examples=1000, epochs=2, batch_size=10, max_steps=50, schedule_steps=200)
    assert (explicit.num_steps(1000), explicit.schedule_length(1000)) == (50, 200)
    assert "step_fraction" not in full.to_dict()  # unset fields keep stored fingerprints as they were


LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
FULL = Fidelity(train_examples=96, max_length=32, batch_size=8, eval_examples=32)   # 12 steps
HALF = Fidelity(train_examples=96, max_length=32, batch_size=8, eval_examples=32, max_steps=5, schedule_steps=12)


def test_a_promoted_trial_continues_its_checkpoint(tiny_bert_dir, sst2, tmp_path):  # noqa: F811
    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    assert runner.base.config.hidden_dropout_prob > 0  # dropout on: the RNG must be continued too
    training = TrainingConfig(learning_rate=3e-3)
    straight = runner.run(LORA, FULL, seed=1, training=training, save_dir=tmp_path / "straight")
    low = runner.run(LORA, HALF, seed=1, training=training, checkpoint_to=tmp_path / "rung-0")
    assert low.ok and low.steps == 5 and (tmp_path / "rung-0" / "parameters.safetensors").is_file()
    top = runner.run(LORA, FULL, seed=1, training=training, resume_from=tmp_path / "rung-0",
                     checkpoint_to=tmp_path / "rung-1", save_dir=tmp_path / "resumed")
    assert top.ok, top.reason
    assert (top.steps, top.resumed_steps) == (12, 5) and straight.steps == 12
    assert top.final_train_loss == pytest.approx(straight.final_train_loss, abs=1e-6)
    assert [step for step, _ in straight.train_losses] == list(range(1, 13))   # the trial's intermediate values
    assert [step for step, _ in top.train_losses] == list(range(6, 13))
    assert [v for _, v in top.train_losses] == pytest.approx([v for _, v in straight.train_losses[5:]], abs=1e-6)
    assert top.metrics["eval_loss"] == pytest.approx(straight.metrics["eval_loss"], abs=1e-6)
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / name / "adapter_model.safetensors")) for name in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    # the full checkpoint again: nothing more to train, the same evaluation
    again = runner.run(LORA, FULL, seed=1, training=training, resume_from=tmp_path / "rung-1")
    assert (again.steps, again.resumed_steps) == (12, 12) and again.metrics == top.metrics


def test_a_mismatched_checkpoint_fails_the_trial_with_the_reason(tiny_bert_dir, sst2, tmp_path):  # noqa: F811
    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    assert runner.run(LORA, HALF, seed=1, checkpoint_to=tmp_path / "ckpt").ok
    bigger = LoraConfig(r=8, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    result = runner.run(bigger, FULL, seed=1, resume_from=tmp_path / "ckpt")
    assert result.status == "error" and "cannot resume from checkpoint" in result.reason
    assert "other shapes" in result.reason and result.steps == 0
    other_seed = runner.run(LORA, FULL, seed=2, resume_from=tmp_path / "ckpt")
    assert other_seed.status == "error" and "other data, seed" in other_seed.reason
    missing = runner.run(LORA, FULL, seed=1, resume_from=tmp_path / "nothing-here")
    assert missing.status == "error" and "no training checkpoint" in missing.reason


def test_a_search_continues_promotions_and_its_final_stage_reuses_the_top_rung(tmp_path):
    import optuna
    import yaml

    from autopeft.data import load_task
    from autopeft.search import SearchEngine, SearchPlan, parse_objectives
    from autopeft.search import records as R
    from autopeft.search.evaluator import RunnerEvaluator
    from autopeft.search.settings import fidelity_rungs
    from autopeft.space import SearchSpace, parse_space
    from tests.search_helpers import LORA_SPACE, lora_builder, write_tiny_model, write_tiny_task

    task = load_task(write_tiny_task(tmp_path / "task"))
    base = get_base_model(write_tiny_model(tmp_path / "model"), "classification")
    space = SearchSpace(parse_space(yaml.safe_load(LORA_SPACE), "tiny"), base.config, "tiny")
    real = RunnerEvaluator(TrialRunner(base, task), lora_builder(base.config, "classification"),
                           TrainingConfig(learning_rate=3e-3))
    calls = []

    def evaluator(point, fidelity, seed, **kwargs):
        result = real(point, fidelity, seed, **kwargs)
        result.trivial = False  # a tiny random BERT barely leaves the majority class: promotions are tested here
        calls.append((fidelity, seed, kwargs, result))
        return result

    full = Fidelity(epochs=3, max_length=16, batch_size=8, eval_examples=16)   # 64 rows: 24 steps
    rungs = fidelity_rungs(full, [0.5, 1.0], "steps")                          # 20 (the floor), 24
    objectives = parse_objectives(["metric", "params"], "accuracy", True)
    plan = SearchPlan(objectives=objectives, rungs=rungs, eta=3, trials=3, sampler="random", baselines=False,
                      quasi_random=0, final_seeds=2)
    storage = optuna.storages.InMemoryStorage()
    SearchEngine(space, evaluator, plan, storage, "s", tmp_path / "run").run()

    promoted = [(kw, r) for f, s, kw, r in calls if f == full and "checkpoint_to" in kw]
    assert promoted and all(r.ok and (r.resumed_steps, r.steps) == (20, 24) for _, r in promoted)
    assert all(kw["resume_from"].endswith("rung-0") and kw["checkpoint_to"].endswith("rung-1") for kw, _ in promoted)
    finals = [(s, kw, r) for f, s, kw, r in calls if "save_dir" in kw and kw["save_dir"] is not None]
    reused = [(kw, r) for s, kw, r in finals if s == 0]
    assert reused and all(kw["resume_from"].endswith("rung-1") and r.resumed_steps == r.steps == 24
                          for kw, r in reused)
    assert all("resume_from" not in kw and r.resumed_steps == 0 for s, kw, r in finals if s == 1)
    stages = R.load_records(storage, "s", objectives)
    top = {r.key: r for r in stages["rung-1"] if r.trained}
    for record in stages["final"]:  # the search seed's final run is the rung-1 trial, evaluated again
        seed0 = record.attrs[R.SEEDS][0]  # in the order of the seeds: 0 first
        assert seed0["metrics"]["eval_loss"] == pytest.approx(top[record.key].attrs[R.RESULT]["metrics"]["eval_loss"])
    # one checkpoint per point: the latest
    folders = list((tmp_path / "run" / "checkpoints").iterdir())
    assert len(folders) == 3 and all(len([c for c in f.iterdir() if c.name.startswith("rung-")]) == 1
                                     for f in folders)
