"""Learning rates per module type (issue 17): each module type's parameters train in their own AdamW group."""

import math

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

from autopeft.builders import build_adapter, parameter_groups
from autopeft.builders.groups import module_learning_rates
from autopeft.errors import AutopeftError, SpaceError
from autopeft.modules import MODULE_TYPES, get_module_type
from autopeft.search import RunnerEvaluator
from autopeft.search.initial_design import Baseline, ModuleWish, baseline_params
from autopeft.search.settings import TrainingSettings
from autopeft.space import PeftPoint, SearchSpace, count_trainable_params, parse_space
from autopeft.space.point import ModuleChoice
from autopeft.trial import loop
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.loop import Shard, TrainingConfig
from autopeft.trial.result import TrialResult
from tests.conftest import tiny_bert_config

CONFIG = tiny_bert_config()
MIXED = {"lora": {"targets": ["query", "value"], "size": 4}, "serial_adapter": {"size": 8}}


def space(modules=MIXED, training=None):
    data = {"name": "x", "modules": modules}
    if training is not None:
        data["training"] = training
    return SearchSpace(parse_space(data, "x"), CONFIG, "x")


def built(point):
    torch.manual_seed(0)
    return build_adapter(point, CONFIG, "classification")(BertForSequenceClassification(CONFIG))


def rates(groups) -> dict[str, float]:
    return {group["name"]: group["lr"] for group in groups}


class RecordingRunner:
    """Stands in for a TrialRunner: records what the evaluator hands it."""

    def run(self, factory, fidelity, seed, training, **kwargs):
        self.training, self.kwargs = training, kwargs
        return TrialResult()


def evaluate(point, learning_rate=None, training=TrainingConfig()):
    runner = RecordingRunner()
    RunnerEvaluator(runner, lambda p: (lambda model: model), training, learning_rate=learning_rate)(
        point, Fidelity(), 0)
    return runner.training, runner.kwargs["parameter_groups"](built(point))


def test_a_mixed_point_trains_each_module_type_at_its_rate_and_the_head_at_the_largest():
    point = space().decode({})
    lora, adapter = get_module_type("lora").default_rate(4), get_module_type("serial_adapter").default_rate(8)
    groups = parameter_groups(built(point), point)
    assert rates(groups) == {"lora": lora, "serial_adapter": adapter, "head": max(lora, adapter)}
    sizes = {g["name"]: sum(p.numel() for p in g["params"]) for g in groups}
    assert sizes["lora"] + sizes["serial_adapter"] == count_trainable_params(point, CONFIG)
    assert sizes["head"] == CONFIG.hidden_size * 2 + 2   # the classifier

    training, groups = evaluate(point)
    assert rates(groups)["lora"] == lora and training.learning_rate == max(lora, adapter)

    # the loop's AdamW gets the groups as they are (and clips over all of them)
    model = built(point)
    made = []
    real = loop.adamw
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "adamw", lambda params, training: made.append(real(params, training)) or made[-1])
        inputs = torch.randint(5, 100, (4, 6))

        def loss(forward, shard: Shard):
            return forward(input_ids=inputs[shard.rows], labels=torch.tensor([0, 1, 0, 1])[shard.rows]).loss
        loop.train(model, loss, np.full(4, 6), training=TrainingConfig(warmup_ratio=0.0), batch_size=4,
                   total_steps=1, seed=0, device=torch.device("cpu"), parameters=parameter_groups(model, point))
    (optimizer,) = made
    # after one step of a 1-step linear schedule the rates have decayed to 0; initial_lr keeps the declared ones
    assert {g["name"]: g["initial_lr"] for g in optimizer.param_groups} == rates(groups)


def test_lr_overrides_every_module_type_default():
    training, groups = evaluate(space().decode({}), learning_rate=1e-3)
    assert set(rates(groups).values()) == {1e-3} and training.learning_rate == 1e-3
    assert TrainingSettings().lr is None and TrainingSettings().config().learning_rate > 0
    assert TrainingSettings(lr=1e-3).config().learning_rate == 1e-3


def test_a_space_searches_per_module_rates_and_a_scale_of_them():
    searched = space({"lora": {**MIXED["lora"], "lr": "prior"},
                      "serial_adapter": {**MIXED["serial_adapter"], "lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
                     training={"lr_scale": {"low": 0.5, "high": 4.0, "log": True}})
    prior = get_module_type("lora").learning_rate
    dims = searched.distributions
    assert (dims["lora.lr"].low, dims["lora.lr"].high, dims["lora.lr"].log) == (prior.low, prior.high, True)
    assert dims["serial_adapter.lr"].low == 1e-4 and "training.lr_scale" in dims
    point = searched.decode({"lora.lr": 1e-3, "serial_adapter.lr": 3e-4, "training.lr_scale": 2.0})
    assert point.modules["lora"].lr == 1e-3
    assert PeftPoint.from_dict(point.to_dict()).modules["lora"].lr == 1e-3   # exported points keep their rates
    groups = rates(parameter_groups(built(point), point))
    assert math.isclose(groups["lora"], 2e-3) and math.isclose(groups["serial_adapter"], 6e-4)
    assert math.isclose(groups["head"], 2e-3)
    # --lr overrides everything, a searched rate and the scale included (the contract for --lr)
    _, groups = evaluate(point, learning_rate=1e-5)
    assert set(rates(groups).values()) == {1e-5}

    fixed = space({"lora": {**MIXED["lora"], "lr": 5e-3}, "serial_adapter": MIXED["serial_adapter"]}).decode({})
    assert rates(parameter_groups(built(fixed), fixed))["lora"] == 5e-3


def test_an_old_space_with_one_learning_rate_still_trains_everything_at_it():
    old = space(training={"learning_rate": {"low": 1e-4, "high": 3e-3, "log": True}})
    point = old.decode({"training.learning_rate": 7e-4})
    training, groups = evaluate(point)
    assert set(rates(groups).values()) == {7e-4} and training.learning_rate == 7e-4
    training, groups = evaluate(point, learning_rate=1e-2)
    assert set(rates(groups).values()) == {1e-2} and training.learning_rate == 1e-2


@pytest.mark.parametrize("modules, training, field", [
    (MIXED, {"learning_rate": 1e-3, "lr_scale": 2.0}, "training.lr_scale"),
    ({"lora": {**MIXED["lora"], "lr": 1e-3}}, {"learning_rate": 1e-3}, "modules.lora.lr"),
])
def test_one_rate_for_everything_does_not_mix_with_per_module_rates(modules, training, field):
    with pytest.raises(SpaceError, match=f"field '{field}'"):
        space(modules, training)


@pytest.mark.parametrize("lr, message", [(-1e-3, "must be a number > 0"), ("fast", "lr"),
                                         ({"low": 0.0, "high": 1e-3}, "must be a number > 0")])
def test_a_bad_module_rate_is_a_clear_error(lr, message):
    with pytest.raises(SpaceError, match=message):
        parse_space({"name": "x", "modules": {"lora": {"size": 4, "lr": lr}}}, "x")
    with pytest.raises(SpaceError, match="lr_scale must be a number > 0"):
        parse_space({"name": "x", "modules": {"lora": {"size": 4}}, "training": {"lr_scale": 0}}, "x")


def test_a_parameter_of_a_module_the_point_lacks_is_a_bug_not_the_head():
    point = space().decode({})
    with pytest.raises(AutopeftError, match="belongs to module type 'serial_adapter'"):
        parameter_groups(built(point), PeftPoint({"lora": point.modules["lora"]}))
    names = [n for kind in MODULE_TYPES.values() for n in kind.parameter_names]
    assert len(names) == len(set(names)) and all(kind.parameter_names for kind in MODULE_TYPES.values())


def test_modules_wider_than_their_reference_default_to_a_rate_falling_as_one_over_sqrt_size():
    lora = get_module_type("lora")
    assert lora.default_rate(8) == lora.learning_rate.default      # rank 8, the baseline's, is the reference
    assert lora.default_rate(32) == pytest.approx(lora.learning_rate.default / 2)
    assert lora.default_rate(2) == lora.default_rate(None) == lora.learning_rate.default   # narrower: no faster
    assert lora.default_rate(10 ** 6) == lora.learning_rate.low      # clipped to the type's range
    serial = get_module_type("serial_adapter")
    assert serial.default_rate(96) == pytest.approx(serial.default_rate(24) / 2) == pytest.approx(
        serial.learning_rate.default / 2)                              # bottleneck widths alike
    assert get_module_type("ia3").default_rate(1) == get_module_type("ia3").learning_rate.default   # unsized
    # per-layer ranks: the largest decides; lr_scale multiplies; the module's own lr and --lr are taken as given
    ranks = PeftPoint({"lora": ModuleChoice("lora", {0: 2, 1: 32}, ("query", "value"), {})},
                      training={"lr_scale": 0.5})
    assert module_learning_rates(ranks) == {"lora": pytest.approx(lora.default_rate(32) * 0.5)}
    fixed = PeftPoint({"lora": ModuleChoice("lora", {0: 32}, ("query", "value"), {}, 1e-3)})
    assert module_learning_rates(fixed) == {"lora": 1e-3} and module_learning_rates(ranks, 5e-2) == {"lora": 5e-2}


def test_baselines_take_their_rate_within_the_space():
    searched = space({"lora": {**MIXED["lora"], "size": {"grid": [4, 8]}, "lr": "prior"}},
                     training={"lr_scale": {"low": 0.5, "high": 2.0}})
    lora = Baseline("lora", "LoRA", {"lora": ModuleWish(size=8, targets=("query", "value"))})
    params, why = baseline_params(searched, lora)
    assert params["lora.lr"] == get_module_type("lora").learning_rate.default and params["training.lr_scale"] == 1.0
    adapter = space({"serial_adapter": {"size": {"grid": [1, 2, 4]}, "lr": "prior"}})
    pfeiffer = Baseline("pfeiffer", "Pfeiffer", {"serial_adapter": ModuleWish(size=48, scale_with_hidden=True)})
    width = 48 * CONFIG.hidden_size / 768   # given for a 768-wide model: its rate is the one of the width it gets
    assert baseline_params(adapter, pfeiffer)[0]["serial_adapter.lr"] == pytest.approx(
        get_module_type("serial_adapter").default_rate(width))
    fast = Baseline("lora", "LoRA", {"lora": ModuleWish(size=8, targets=("query", "value"), lr=1.0)})
    assert baseline_params(searched, fast)[0]["lora.lr"] == get_module_type("lora").learning_rate.high
    one_rate = space({"lora": {**MIXED["lora"], "size": {"grid": [4, 8]}}},
                     training={"learning_rate": {"low": 1e-4, "high": 1e-3, "log": True}})
    assert baseline_params(one_rate, lora)[0]["training.learning_rate"] == 1e-3   # the default, clipped
