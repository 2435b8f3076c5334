"""One-shot screening: a super-adapter's slices are the stand-alone points, export as plain PEFT, train and cache."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from autopeft.errors import SpaceError
from autopeft.priors.oneshot import SuperAdapter, load_or_train_super_adapter, train_super_adapter
from autopeft.space import SearchSpace, count_trainable_params, parse_space
from autopeft.space.point import ModuleChoice, PeftPoint
from autopeft.space.schema import packaged_spaces
from autopeft.trial import Fidelity, TrainingConfig, TrialRunner
from tests.conftest import tiny_bert_config, tiny_llama_config
from tests.test_trial import shared_datasets_module, sst2, tiny_bert_dir  # noqa: F401  (fixtures)


def _models(family):
    from transformers import BertForSequenceClassification, LlamaForSequenceClassification

    torch.manual_seed(0)
    if family == "bert":
        return BertForSequenceClassification(tiny_bert_config()).eval()
    return LlamaForSequenceClassification(tiny_llama_config(num_labels=2, num_key_value_heads=4)).eval()


def _randomised(model):
    """Every trainable tensor random: LoRA's B and an adapter's up start at zero, which would hide wrong slices."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 0.2)
    return model.eval()


def _adapter_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and "classifier" not in n and ".score." not in n)


@pytest.mark.parametrize("family,space_name", [("bert", "default"), ("llama", "default"), ("bert", "unified")])
def test_a_slice_computes_what_its_stand_alone_point_computes(family, space_name):
    """Logits of a slice equal the stand-alone point's with the sliced weights (searched ranks, targets, widths,
    locations, alpha, scaling and layers), and the analytic parameter counts are the built model's."""
    base = _models(family)
    space = SearchSpace.from_file(packaged_spaces()[space_name], base.config)
    super_adapter = SuperAdapter(space, "classification")
    model = _randomised(super_adapter.build(copy.deepcopy(base)))
    assert set(super_adapter.nested) == {"lora", "serial_adapter", "parallel_adapter"}
    roles = [r for r in space.arch.matrices if any(r in t for t in space.spec.modules["lora"].targets.choices)]
    assert super_adapter.largest.modules["lora"].targets == tuple(roles)   # the union of the choices
    per_layer = PeftPoint({"lora": ModuleChoice("lora", {0: 4, 1: 2}, ("query", "value"), {"alpha": 2.0}),
                           "parallel_adapter": ModuleChoice("parallel_adapter", {1: 2}, (),
                                                            {"location": "ffn", "scaling": 2.0})})
    points = [super_adapter.draw(np.random.default_rng(seed)) for seed in range(6)]
    points += [super_adapter.largest, super_adapter.smallest, per_layer]
    assert len({json.dumps(p.to_dict(), sort_keys=True) for p in points}) == len(points)
    ids = torch.randint(5, 1000, (3, 12))
    for point in points:
        super_adapter.pin(point)
        with torch.no_grad():
            sliced = model(input_ids=ids).logits
        alone = super_adapter.extract(point, copy.deepcopy(base)).eval()
        with torch.no_grad():
            expected = alone(input_ids=ids).logits
        torch.testing.assert_close(sliced, expected, rtol=1e-5, atol=1e-6,  # float sums over zero-padded ranks
                                   msg=lambda m, p=point: f"{p.describe()}: {m}")
        assert _adapter_params(alone) == count_trainable_params(point, base.config)
    super_adapter.pin(None)
    with torch.no_grad():   # switching back: the whole super-adapter again, which differs from every slice
        assert not torch.allclose(model(input_ids=ids).logits, sliced)


def test_a_sliced_lora_point_exports_as_plain_peft_that_loads_without_autopeft(tmp_path):
    base = _models("bert")
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    space = SearchSpace.from_file(packaged_spaces()["default"], base.config)
    super_adapter = SuperAdapter(space, "classification")
    _randomised(super_adapter.build(copy.deepcopy(base)))
    point = PeftPoint({"lora": ModuleChoice("lora", {0: 8, 1: 4}, ("query", "key", "value", "attention_output"),
                                            {"alpha": 2.0})})   # two ranks: rank_pattern / alpha_pattern
    alone = super_adapter.extract(point, copy.deepcopy(base)).eval()
    alone.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["rank_pattern"]
    ids = torch.randint(5, 1000, (2, 10))
    super_adapter.pin(point)
    with torch.no_grad():
        expected = super_adapter.model(input_ids=ids).logits
    script = (
        "import sys, json, torch\n"
        "from transformers import BertForSequenceClassification\n"
        "from peft import PeftModel\n"
        f"base = BertForSequenceClassification.from_pretrained({str(tmp_path / 'base')!r})\n"
        f"model = PeftModel.from_pretrained(base, {str(tmp_path / 'adapter')!r}).eval()\n"
        f"ids = torch.tensor({ids.tolist()})\n"
        "with torch.no_grad(): print(json.dumps(model(input_ids=ids).logits.tolist()))\n"
        "assert not any(name.startswith('autopeft') for name in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(loaded, expected, rtol=0, atol=1e-5)


def test_a_point_built_with_inherited_weights_starts_from_its_slice(tmp_path):
    """BuildContext.initial_weights from a saved super-adapter: a nested point is built with its slice (the logits
    of :meth:`SuperAdapter.extract`); a module type the super-adapter leaves out keeps its own initialisation."""
    from safetensors.torch import save_file

    from autopeft.builders import BuildContext, build_adapter
    from autopeft.priors.oneshot import SliceWeights
    from autopeft.priors.oneshot.train import WEIGHTS_FILE

    base = _models("bert")
    space = SearchSpace.from_file(packaged_spaces()["default"], base.config)
    super_adapter = SuperAdapter(space, "classification")
    _randomised(super_adapter.build(copy.deepcopy(base)))
    (tmp_path / "entry").mkdir()
    save_file({n: t.contiguous() for n, t in super_adapter.trainable_state().items()},
              str(tmp_path / "entry" / WEIGHTS_FILE))
    context = BuildContext(initial_weights=SliceWeights(tmp_path / "entry"))
    point = PeftPoint({"lora": ModuleChoice("lora", {0: 4, 1: 2}, ("query", "value"), {"alpha": 2.0}),
                       "serial_adapter": ModuleChoice("serial_adapter", {1: 6}, (), {})})
    inherited = build_adapter(point, base.config, "classification", context)(copy.deepcopy(base)).eval()
    expected = super_adapter.extract(point, copy.deepcopy(base)).eval()
    ids = torch.randint(5, 1000, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(inherited(input_ids=ids).logits, expected(input_ids=ids).logits, rtol=0, atol=0)
        scratch = build_adapter(point, base.config, "classification")(copy.deepcopy(base)).eval()
        assert not torch.allclose(scratch(input_ids=ids).logits, expected(input_ids=ids).logits)

    with_ia3 = PeftPoint({**point.modules, "ia3": ModuleChoice("ia3", {0: 1.0}, ("key", "value"), {})})
    built = build_adapter(with_ia3, base.config, "classification", context)(copy.deepcopy(base))
    own = {n: p for n, p in built.named_parameters() if p.requires_grad}
    ia3 = [p for n, p in own.items() if "ia3_l" in n]
    assert ia3 and all(torch.equal(p, torch.ones_like(p)) for p in ia3)   # IA3's own init: ones
    assert context.initial_weights.apply(with_ia3, built) == len(own) - len(ia3)


def _space(text: str, config):
    import yaml

    return SearchSpace(parse_space(yaml.safe_load("name: t\n" + text), "<test>"), config, "<test>")


def test_modules_that_do_not_nest_are_left_out_or_refused():
    config = tiny_bert_config()
    unified = SearchSpace.from_file(packaged_spaces()["unified"], config)
    nested, left_out = SuperAdapter.screened_modules(unified)
    assert set(nested) <= {"lora", "serial_adapter", "parallel_adapter"} and nested
    assert "prefix" in left_out and all(left_out.values())
    largest = SuperAdapter(unified, "classification").largest   # a searched location: one adapter per site
    assert {"serial_adapter@ffn", "serial_adapter@attention"} <= set(largest.modules)
    with pytest.raises(SpaceError, match="'prefix' cannot be nested .* always on"):
        SuperAdapter.screened_modules(_space("modules:\n  lora: {size: {grid: [2, 4]}}\n  prefix: {size: 4}\n",
                                             config))
    with pytest.raises(SpaceError, match="no module type of the space nests"):
        SuperAdapter.screened_modules(_space("modules:\n  ia3: {optional: true}\n", config))


FIDELITY = Fidelity(train_examples=96, max_length=32, batch_size=8, eval_examples=48)   # 12 steps


def test_a_super_adapter_trains_on_drawn_configurations_scores_them_and_is_cached(
        tiny_bert_dir, sst2, tmp_path, monkeypatch):  # noqa: F811
    from autopeft.models import get_base_model

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    runner = TrialRunner(get_base_model(tiny_bert_dir, "classification"), sst2)
    space = SearchSpace.from_file(packaged_spaces()["default"], runner.base.config)
    seen = []
    original = SuperAdapter.activate
    monkeypatch.setattr(SuperAdapter, "activate",
                        lambda self, point: (seen.append(point.describe()), original(self, point))[1])
    training = TrainingConfig(learning_rate=3e-3)
    oneshot = load_or_train_super_adapter(runner, space, FIDELITY, training, seed=1)
    assert not oneshot.cached and oneshot.meta["steps"] == 12
    assert len(set(seen)) >= 4   # the largest, the smallest and drawn configurations, not one network
    points = [oneshot.super_adapter.largest, oneshot.super_adapter.smallest,
              oneshot.super_adapter.draw(np.random.default_rng(3))]
    scores = [oneshot.score(p) for p in points]
    assert all(np.isfinite(s["eval_loss"]) and 0 <= s["accuracy"] <= 1 for s in scores)
    assert len({s["eval_loss"] for s in scores}) == 3
    assert oneshot.meta["largest_metrics"]["eval_loss"] == pytest.approx(scores[0]["eval_loss"], abs=1e-6)
    again = load_or_train_super_adapter(runner, space, FIDELITY, training, seed=1)
    assert again.cached
    for point, score in zip(points, scores):
        assert again.score(point) == pytest.approx(score, abs=1e-6)
    # a training continued from its checkpoint draws the configurations an uninterrupted one does
    half = Fidelity(**{**FIDELITY.to_dict(), "max_steps": 5, "schedule_steps": 12})
    train_super_adapter(runner, space, half, training, seed=1, checkpoint_to=tmp_path / "ckpt")
    resumed = train_super_adapter(runner, space, FIDELITY, training, seed=1, resume_from=tmp_path / "ckpt")
    assert resumed.meta["largest_metrics"]["eval_loss"] == pytest.approx(
        oneshot.meta["largest_metrics"]["eval_loss"], abs=1e-6)


ONESHOT_SPACE = """\
name: tiny-oneshot
placement: {mode: per_module}
modules:
  lora: {optional: true, targets: {choices: [[query, value], [query, key, value]]}, size: {grid: [2, 4, 8]}}
  serial_adapter: {optional: true, size: {grid: [2, 4, 8]}}
  ia3: {optional: true}
training:
  lr_scale: {low: 0.5, high: 2.0, log: true}
"""


def test_a_search_with_the_oneshot_prior_starts_from_the_screens_best_points(tmp_path, monkeypatch):
    """... and with --inherit-weights every trial starts from its slice of the cached super-adapter."""
    import optuna

    from autopeft.priors.oneshot import OneShot, SliceWeights
    from autopeft.search import records as R
    from autopeft.search.run import read_run_info, run_search
    from autopeft.search.settings import merge_settings
    from tests.search_helpers import write_tiny_model, write_tiny_task

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (tmp_path / "space.yaml").write_text(ONESHOT_SPACE)
    notes = []

    class Notes:
        on_note = staticmethod(notes.append)

        def on_trial(self, record, progress):
            pass

    # 16 epochs at lr 0.05 on a 0.2 init: the tiny model leaves the majority class (trivial points are no candidates)
    inputs = dict(model=write_tiny_model(tmp_path / "model", initializer_range=0.2),
                  dataset=write_tiny_task(tmp_path / "task"), space=str(tmp_path / "space.yaml"), trials=3,
                  sampler="random", baselines=False, quasi_random=0, final_seeds=0, max_length=16, batch_size=16,
                  fidelity="1", epochs=16, lr=5e-2, prior=["oneshot"], screen_epochs=1, screen_evaluations=25,
                  screen_examples=24, screen_candidates=2, inherit_weights=True, out=str(tmp_path / "run"))
    copied, scored_on = [], set()
    original = SliceWeights.apply
    monkeypatch.setattr(SliceWeights, "apply", lambda self, point, model: (
        copied.append((self.folder, point.describe(), original(self, point, model))), copied[-1][-1])[1])
    score = OneShot.score
    monkeypatch.setattr(OneShot, "score", lambda self, point, fidelity=None: (
        scored_on.add((fidelity or self.fidelity).eval_examples), score(self, point, fidelity))[1])
    run_search(merge_settings({}, inputs), Notes())
    assert scored_on == {24} and any("scored on 24 validation examples" in line for line in notes)
    assert any(line.startswith("one-shot screening leaves out ia3") for line in notes), notes
    assert any("super-adapter trained" in line for line in notes) and any("one-shot screen: 25 draws" in line
                                                                           for line in notes)
    info = read_run_info(tmp_path / "run")
    trials = optuna.load_study(study_name=R.rung_study_name(info.study_name, 0), storage=info.open_storage()).trials
    screened = [t for t in trials if t.user_attrs.get(R.ORIGIN) == "prior:oneshot"]
    assert len(screened) == 2 and all(t.user_attrs.get(R.STATUS) == "ok" for t in screened)
    for trial in screened:   # handed over as the screen scored them: no ia3, rates as the types have them
        assert "ia3" not in trial.user_attrs[R.POINT]["modules"] and trial.params["training.lr_scale"] == 1.0
    # inherited weights: the super-adapter's cache entry is in the settings the trials were built from (run.json)
    entry = info.settings["super_adapter"]
    assert entry.startswith(str(tmp_path / "cache" / "super_adapter")) and any("inherited weights" in n for n in notes)
    trained = [t for t in trials if t.user_attrs.get(R.STATUS) == "ok"]
    assert len(copied) == len(trained) >= 3 and all(str(folder) == entry and count > 0 for folder, _, count in copied)


def test_ray_workers_inherit_from_the_super_adapter_the_driver_recorded(tmp_path):
    """A worker rebuilds its evaluator from ``for_workers()`` settings: the driver's super-adapter entry travels
    there, and the oneshot prior hands its slices to the builders; without --inherit-weights it hands nothing."""
    from autopeft.priors.oneshot import SliceWeights
    from autopeft.search.priors.oneshot import OneShotPrior
    from autopeft.search.settings import SearchSettings, merge_settings

    settings = merge_settings({}, dict(model="m", dataset="d", prior=["oneshot"], inherit_weights=True))
    assert OneShotPrior(settings).build_context() == {}   # nothing trained yet
    settings.priors.super_adapter = str(tmp_path / "entry")
    worker = SearchSettings.model_validate(settings.for_workers())
    weights = OneShotPrior(worker).build_context()["initial_weights"]
    assert isinstance(weights, SliceWeights) and weights.folder == tmp_path / "entry"
    worker.priors.inherit_weights = False
    assert OneShotPrior(worker).build_context() == {}


def test_the_oneshot_command_scores_the_space_and_exports_loadable_slices(autopeft, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tests.cli_helpers import assert_one_line_error
    from tests.search_helpers import write_tiny_model, write_tiny_task

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path / "cache"))
    model = write_tiny_model(tmp_path / "model", initializer_range=0.2)
    dataset, out = write_tiny_task(tmp_path / "task"), tmp_path / "out"
    args = ["oneshot", "--model", model, "--dataset", dataset, "--out", out, "--max-length", "16", "--batch-size",
            "16", "--epochs", "16", "--lr", "5e-2", "--points", "6", "--export", "2"]
    done = autopeft(*args)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cached"] is False and len(summary["scores"]) >= 4
    assert [s["origin"] for s in summary["scores"][:3]] == [
        "baseline:lora", "baseline:pfeiffer", "baseline:parallel_adapter"]
    exported = [s for s in summary["scores"] if s["exported"]]
    # up to --export of the best, never one at the trivial score (most slices of this tiny model sit there)
    assert 1 <= len(exported) <= 2 and not any(s["trivial"] for s in exported), summary["scores"]
    for entry in exported:
        loaded = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(model),
                                           out / entry["exported"])
        assert sum(p.numel() for n, p in loaded.named_parameters() if "classifier" not in n
                   and any(k in n for k in ("lora_", "bottleneck_"))) == entry["params"]
    again = autopeft(*args)
    assert again.returncode == 0 and json.loads((out / "summary.json").read_text())["cached"] is True
    (tmp_path / "prefix.yaml").write_text("name: p\nmodules:\n  prefix: {size: 4}\n")
    assert_one_line_error(autopeft("oneshot", "--model", model, "--dataset", dataset, "--out", tmp_path / "o2",
                                   "--space", tmp_path / "prefix.yaml"), "'prefix' cannot be nested")
    assert_one_line_error(autopeft(*args[:-2], "--export", "-1"), "--points and --export must be >= 0")
