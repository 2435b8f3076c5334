"""The trivial score (what ignoring the input scores), what a trivial trial may not do, rung agreement and
``--fidelity auto``'s lowest rung."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from autopeft.data import TaskSpec, metric_stderr, trivial_score
from autopeft.search import SearchEngine, SearchPlan, parse_objectives
from autopeft.search import records as R
from autopeft.search.records import TrialRecord, pareto_records, rung_agreements, search_front
from autopeft.search.scheduler import Scheduler, raise_first_rung
from autopeft.space import count_trainable_params
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import TrialResult
from tests.test_search_engine import lora_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
OBJECTIVES = parse_objectives(["metric", "params"], "accuracy", True)


# ------------------------------------------------------------------ trivial scores per task kind
def test_trivial_scores_per_task_kind():
    spec = TaskSpec(kind="classification", metric="accuracy")
    train, evaluated = [0, 0, 0, 1], [0, 0, 1, 1, 0]           # majority class 0: 3 of 5 eval examples
    score = trivial_score(spec, train, evaluated)
    assert score.value == pytest.approx(0.6) and score.examples == 5
    assert score.stderr == pytest.approx(math.sqrt(0.6 * 0.4 / 5))
    assert score.is_trivial(0.6) and score.is_trivial(0.6 + score.stderr) and not score.is_trivial(0.9)
    mcc = trivial_score(spec, train, evaluated, metric="mcc")
    assert mcc.value == 0.0 and mcc.stderr == pytest.approx(1 / math.sqrt(5))
    f1 = trivial_score(spec, train, evaluated, metric="macro_f1")
    assert f1.value == pytest.approx((2 * 0.6 / 1.6) / 2)       # F1 of class 0 = 0.75, of class 1 = 0
    loss = trivial_score(spec, train, evaluated, metric="eval_loss")
    assert loss.value == pytest.approx(-(3 * math.log(4 / 6) + 2 * math.log(2 / 6)) / 5) and loss.stderr == 0
    assert loss.is_trivial(loss.value) and not loss.is_trivial(loss.value - 1e-6)

    regression = TaskSpec(kind="regression", metric="pearson")
    pearson = trivial_score(regression, [1.0, 2.0, 3.0], [0.0, 4.0, 2.0, 2.0])
    assert pearson.value == 0.0 and pearson.stderr == pytest.approx(0.5)   # constant prediction: undefined -> 0
    mse = trivial_score(regression, [1.0, 2.0, 3.0], [0.0, 4.0, 2.0, 2.0], metric="eval_loss")
    assert mse.value == pytest.approx(2.0) and mse.is_trivial(2.5) and not mse.is_trivial(1.0)
    with pytest.raises(ValueError, match="base model"):
        trivial_score(TaskSpec(kind="causal_lm", metric="eval_loss"), [], [])
    assert metric_stderr("accuracy", 1.0, 50) == pytest.approx(1 / 50)   # one class only: at least 1/n


def test_runner_marks_trivial_trials_classification_and_causal_lm(tmp_path):
    from dataclasses import replace

    import torch
    from peft import LoraConfig
    from transformers import LlamaForCausalLM

    from autopeft.data import load_task
    from autopeft.models import get_base_model
    from autopeft.trial import TrainingConfig, TrialRunner
    from tests.conftest import tiny_llama_config
    from tests.search_helpers import VOCAB, write_tiny_model, write_tiny_task

    task = load_task(write_tiny_task(tmp_path / "data"))
    base = get_base_model(write_tiny_model(tmp_path / "bert"), "classification", num_labels=2)
    runner = TrialRunner(base, task, device="cpu")
    fidelity = Fidelity(max_steps=1, max_length=16, batch_size=8, eval_examples=20)

    def frozen(model):   # nothing trains: the head stays at its initialisation
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model

    result = runner.run(frozen, fidelity, training=TrainingConfig(learning_rate=1e-9))
    labels = np.asarray(task.validation[task.spec.label_column])[TrialRunner.eval_subset(len(task.validation),
                                                                                          fidelity)]
    assert result.ok, result.reason
    # the best constant answer on the scored examples (here not the train split's majority class)
    assert result.trivial_metric == pytest.approx(max(np.mean(labels == 0), np.mean(labels == 1)))
    assert result.metric_stderr == pytest.approx(metric_stderr("accuracy", result.trivial_metric, 20))
    assert result.trivial == (result.metrics["accuracy"] <= result.trivial_metric + result.metric_stderr)
    assert runner.trivial_score(fidelity) is runner.trivial_score(fidelity)   # once per eval subset

    folder = tmp_path / "qa"
    folder.mkdir()
    rows = ["question\tanswer"] + [f"what is {i} plus {i}\tit is {2 * i}" for i in range(24)]
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    causal = load_task(str(folder), task="causal_lm")
    torch.manual_seed(0)
    llama = tmp_path / "llama"
    LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, pad_token_id=0, bos_token_id=101,
                                       eos_token_id=102)).save_pretrained(llama)
    from transformers import AutoTokenizer

    from autopeft.models import resolve_model

    AutoTokenizer.from_pretrained(resolve_model("minilm").path).save_pretrained(llama)
    lm_runner = TrialRunner(get_base_model(str(llama), "causal_lm", num_labels=0), causal, device="cpu")
    lm_fidelity = Fidelity(max_steps=1, max_length=32, batch_size=4, eval_examples=8)
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")   # starts as the base model
    untrained = lm_runner.run(lora, lm_fidelity, training=TrainingConfig(learning_rate=1e-12))
    assert untrained.ok, untrained.reason
    # the base model's own eval loss: a trial that learned nothing scores it, and is trivial unless below it
    assert untrained.trivial_metric == pytest.approx(untrained.metrics["eval_loss"], rel=1e-5)
    assert untrained.trivial == (untrained.metrics["eval_loss"] >= untrained.trivial_metric)
    assert untrained.metric_stderr == 0.0
    trained = lm_runner.run(lora, replace(lm_fidelity, max_steps=8), training=TrainingConfig(learning_rate=3e-2))
    assert trained.ok and trained.trivial_metric == untrained.trivial_metric
    assert trained.trivial == (trained.metrics["eval_loss"] >= trained.trivial_metric)


# ------------------------------------------------------------------ promotions and fronts
def record(number: int, accuracy: float, params: float, rung: int = 0, trivial: bool = False,
           origin: str = "sampler:random") -> TrialRecord:
    return TrialRecord(f"rung-{rung}", number, "complete", {"x": number}, {"accuracy": accuracy, "params": params},
                       {R.KEY: f"point-{number}", R.TRAINED: True, R.ORIGIN: origin,
                        R.RESULT: {R.TRIVIAL: trivial, R.TRIVIAL_METRIC: 0.6, R.METRIC_STDERR: 0.05}})


def test_trivial_trials_are_never_promoted_and_never_on_a_front():
    tiny_trivial = record(0, 0.60, 10, trivial=True)         # non-dominated only because it is small
    learned = record(1, 0.85, 5000)
    other = record(2, 0.80, 8000)
    scheduler = Scheduler(OBJECTIVES, 3, eta=3, trials=10, time_budget=None, max_idle_suggestions=50)
    finished = {0: [tiny_trivial, learned, other], 1: [], 2: []}
    assert scheduler.next_promotion(finished, lambda rung: set()).record is learned
    assert scheduler.next_promotion(finished, lambda rung: {learned.key}) is None   # quota 1 (trivials count)
    assert scheduler.next_promotion({0: [tiny_trivial] * 3, 1: [], 2: []}, lambda rung: set()) is None
    assert pareto_records([tiny_trivial, learned, other], OBJECTIVES) == [learned]
    # the front comes from the highest rung with a non-trivial result
    stage, front = search_front({"rung-0": [learned], "rung-1": [record(3, 0.6, 10, rung=1, trivial=True)]},
                                OBJECTIVES)
    assert stage == "rung-0" and front == [learned]
    assert search_front({"rung-0": [tiny_trivial]}, OBJECTIVES) == (None, [])


def test_rung_agreement_and_the_lowest_rung_decision():
    lower = [record(i, 0.6 + 0.01 * i, 100 * (i + 1)) for i in range(6)]
    same = [record(i, 0.6 + 0.05 * i, 100 * (i + 1), rung=1) for i in range(6)]         # spread 0.25 > 2 x 0.05
    reversed_ = [record(i, 0.9 - 0.05 * i, 100 * (i + 1), rung=1) for i in range(6)]
    close = [record(i, 0.9 - 0.015 * i, 100 * (i + 1), rung=1) for i in range(6)]      # spread 0.075 < 2 x 0.05
    (agree,) = rung_agreements({"rung-0": lower, "rung-1": same}, "accuracy")
    assert agree.rho == pytest.approx(1.0) and agree.n == 6 and not agree.low
    (disagree,) = rung_agreements({"rung-0": lower, "rung-1": reversed_}, "accuracy")
    assert disagree.rho == pytest.approx(-1.0) and disagree.low
    (noise,) = rung_agreements({"rung-0": lower, "rung-1": close}, "accuracy")
    assert noise.rho == pytest.approx(-1.0) and noise.within_noise and not noise.low   # an order within noise
    flat = [record(i, 0.6, 100 * (i + 1)) for i in range(0, 6, 2)]
    (undefined,) = rung_agreements({"rung-0": flat, "rung-1": same[::2]}, "accuracy")
    assert undefined.rho is None and undefined.low   # undefined over 3 points is warned about

    baselines = [record(10 + i, 0.6, 100, trivial=i < 2, origin=f"baseline:b{i}") for i in range(3)]
    raised = raise_first_rung({0: baselines, 1: [], 2: [], 3: []}, 0, 4, False, "accuracy")
    assert raised.rung == 1 and "2 of 3 baselines at rung 0" in raised.reason and "(0.6)" in raised.reason
    assert raise_first_rung({0: baselines, 1: [], 2: [], 3: []}, 0, 4, True, "accuracy") is None  # still pending
    assert raise_first_rung({0: baselines[1:], 1: [], 2: [], 3: []}, 0, 4, False, "accuracy") is None  # half
    assert raise_first_rung({0: baselines[2:], 1: [], 2: [], 3: []}, 0, 4, False, "accuracy") is None
    # low agreement over >= 6 configurations trained at both rungs raises it too, unless it is within noise or over
    # fewer points; never past the second-to-last rung
    assert "Spearman rho -1.00 over 6" in raise_first_rung({0: lower, 1: reversed_, 2: [], 3: []}, 0, 4, False,
                                                           "accuracy").reason
    assert raise_first_rung({0: lower, 1: reversed_[:5], 2: [], 3: []}, 0, 4, False, "accuracy") is None
    assert raise_first_rung({0: lower, 1: close, 2: [], 3: []}, 0, 4, False, "accuracy") is None
    # a low rho that could be chance (a search on SST-2: -0.17 over 6 promoted points, p 0.74) is warned, not acted on
    seen_low = [record(i, x, 100 * (i + 1)) for i, x in enumerate([0.61, 0.818, 0.824, 0.756, 0.786, 0.818])]
    seen_up = [record(i, x, 100 * (i + 1), rung=1) for i, x in enumerate([0.846, 0.85, 0.826, 0.868, 0.794, 0.86])]
    (chance,) = rung_agreements({"rung-0": seen_low, "rung-1": [
        TrialRecord(r.stage, r.number, r.state, r.params, r.values, {**r.attrs, R.RESULT: {R.METRIC_STDERR: 0.016}})
        for r in seen_up]}, "accuracy")
    assert chance.rho == pytest.approx(-0.174, abs=1e-3) and chance.low and not chance.surely_low
    assert raise_first_rung({0: lower, 1: same, 2: [], 3: []}, 0, 4, False, "accuracy") is None
    assert raise_first_rung({2: baselines, 3: []}, 2, 4, False, "accuracy") is None


# ------------------------------------------------------------------ --fidelity auto in the engine
AUTO_RUNGS = [Fidelity(train_examples=f) for f in (1 / 27, 1 / 9, 1 / 3)] + [Fidelity()]


class LowRungsTrivial:
    """Below a third of the data every configuration scores the majority class (0.6) and is trivial."""

    def __init__(self, space):
        self.space, self.calls = space, []

    def __call__(self, point, fidelity, seed, **kwargs):
        self.calls.append(fidelity.train_examples)
        params = count_trainable_params(point, self.space.model_config)
        fraction = fidelity.train_examples or 1.0
        trivial = fraction < 0.2
        accuracy = 0.6 if trivial else 0.65 + 0.3 * (1 - math.exp(-params / 1500)) + 0.05 * fraction
        return TrialResult(metrics={"accuracy": accuracy}, test_metrics={"accuracy": accuracy}, wall_seconds=0.1,
                           trivial=trivial, trivial_metric=0.6, metric_stderr=0.05)


def auto_engine(tmp_path, evaluator, storage, trials, notes):
    class Notes:
        def on_note(self, message):
            notes.append(message)

        def on_trial(self, record, progress):
            pass

    plan = SearchPlan(objectives=OBJECTIVES, rungs=AUTO_RUNGS, eta=3, trials=trials, sampler="random",
                      final_seeds=0, quasi_random=2, auto_first_rung=True)
    return SearchEngine(evaluator.space, evaluator, plan, storage, "s", Path(tmp_path), Notes())


def test_auto_fidelity_raises_the_lowest_rung_where_it_is_trivial_and_keeps_it_on_resume(tmp_path):
    space = lora_space()
    storage = optuna.storages.InMemoryStorage()
    evaluator, notes = LowRungsTrivial(space), []
    outcome = auto_engine(tmp_path, evaluator, storage, 6, notes).run()
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.user_attrs[R.FIRST_RUNG_ATTR] == 2            # up twice, never past the second-to-last rung
    raised = [n for n in notes if "new configurations start at rung" in n]
    assert len(raised) == 2 and "scored at or below the trivial score (0.6)" in raised[0]
    stages = R.load_records(storage, "s", OBJECTIVES)
    rung0_trained = [r for r in stages["rung-0"] if r.trained]
    assert rung0_trained and all(r.origin.startswith(R.BASELINE_PREFIX) for r in rung0_trained)
    assert any(r.origin.startswith(R.BASELINE_PREFIX) and r.trained for r in stages["rung-2"])  # re-run up there
    assert all(not r.trivial for r in outcome.front) and outcome.front_stage in ("rung-2", "rung-3")

    calls_before = len([c for c in evaluator.calls if c is not None and c < 0.2])
    resumed, notes = LowRungsTrivial(space), []
    auto_engine(tmp_path, resumed, storage, 9, notes).run()
    assert not [c for c in resumed.calls if c is not None and c < 0.2]    # nothing new below rung 2
    assert calls_before and len([r for r in R.load_records(storage, "s", OBJECTIVES)["rung-2"] if r.trained]) > \
        len([r for r in stages["rung-2"] if r.trained])
    assert optuna.load_study(study_name="s", storage=storage).user_attrs[R.FIRST_RUNG_ATTR] == 2


def test_a_search_where_every_trial_is_trivial_has_no_front_and_says_why(tmp_path):
    class AlwaysTrivial(LowRungsTrivial):
        def __call__(self, point, fidelity, seed, **kwargs):
            return TrialResult(metrics={"accuracy": 0.6}, trivial=True, trivial_metric=0.6, metric_stderr=0.05)

    notes = []
    plan = SearchPlan(objectives=OBJECTIVES, rungs=[Fidelity()], trials=3, sampler="random", final_seeds=0)
    space = lora_space()

    class Notes:
        def on_note(self, message):
            notes.append(message)

        def on_trial(self, record, progress):
            pass

    outcome = SearchEngine(space, AlwaysTrivial(space), plan, optuna.storages.InMemoryStorage(), "s", tmp_path,
                           Notes()).run()
    assert outcome.front == []
    assert any("every trial scored at or below the trivial score (0.6): the fidelity is too low or the learning "
               "rate too small" in n for n in notes)


# ------------------------------------------------------------------ agreement in summary.md and the study
def test_summary_and_study_give_rung_agreement_and_warn_when_low(tmp_path):
    from autopeft.report import summary_markdown
    from autopeft.search.results import RunResults
    from autopeft.search.run import RunInfo

    lower = [record(i, 0.6 + 0.01 * i, 100 * (i + 1)) for i in range(5)]
    upper = [record(i, 0.9 - 0.05 * i, 100 * (i + 1), rung=1) for i in range(5)]   # spread 0.2 > 2 x 0.05
    trivial = record(9, 0.6, 10, trivial=True)
    info = RunInfo(tmp_path, "s", "sqlite://", False, True, OBJECTIVES, "accuracy", 2, {"fidelity": "auto"})
    stages = {"rung-0": lower + [trivial], "rung-1": upper}
    text = summary_markdown(RunResults(info, stages, "rung-1", pareto_records(upper, OBJECTIVES), "rung-1"), [])
    assert "## Rung agreement" in text and "rung 0 -> 1: Spearman rho -1.00 over 5 configurations" in text
    assert "warning: below 0.3" in text
    assert "trivial: 1 trained trials scored at or below the trivial score (0.6 + 0.05 standard error)" in text

    # the engine keeps the same numbers in the study and notes the low one
    space = lora_space()
    storage = optuna.storages.InMemoryStorage()

    class Reversed(LowRungsTrivial):
        def __call__(self, point, fidelity, seed, **kwargs):
            params = count_trainable_params(point, self.space.model_config)
            sign = 1 if fidelity.train_examples is None else -1
            return TrialResult(metrics={"accuracy": 0.7 + sign * params / 1e6}, wall_seconds=0.1)

    notes = []
    plan = SearchPlan(objectives=OBJECTIVES, rungs=[Fidelity(train_examples=0.5), Fidelity()], eta=2, trials=8,
                      sampler="random", final_seeds=0)

    class Notes:
        def on_note(self, message):
            notes.append(message)

        def on_trial(self, record, progress):
            pass

    SearchEngine(space, Reversed(space), plan, storage, "s", tmp_path, Notes()).run()
    (stored,) = optuna.load_study(study_name="s", storage=storage).user_attrs[R.AGREEMENT_ATTR]
    assert stored["lower"] == 0 and stored["upper"] == 1 and stored["n"] >= 3
    assert stored["rho"] is None or stored["rho"] < 0.3
    assert any(n.startswith("low rung agreement: rung 0 -> 1") for n in notes)


def test_fidelity_auto_is_the_default_and_fractions_stay_fixed():
    from autopeft.errors import AutopeftError
    from autopeft.search.settings import merge_settings

    base = {"model": "m", "dataset": "d", "space": "s.yaml"}
    auto = merge_settings(base, {})
    assert auto.fidelity.auto and auto.fidelity.fractions() == pytest.approx([1 / 27, 1 / 9, 1 / 3, 1])
    assert len(auto.fidelity.rung_fidelities()) == 4 and auto.flat_dict()["fidelity"] == "auto"
    assert merge_settings(base, {"fidelity": "AUTO", "eta": 2}).fidelity.fractions() == [0.125, 0.25, 0.5, 1]
    fixed = merge_settings(base, {"fidelity": "0.25,1"})
    assert not fixed.fidelity.auto and fixed.fidelity.fractions() == [0.25, 1.0]
    with pytest.raises(AutopeftError, match="expected 'auto' or comma-separated fractions"):
        merge_settings(base, {"fidelity": "fast"})
