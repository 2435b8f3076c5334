"""Module types: one registered file each says everything the search needs (autopeft.modules)."""

import pytest
from peft import LNTuningConfig

from autopeft.builders import build_peft_config
from autopeft.errors import SpaceError
from autopeft.modules import MODULE_TYPES, ModuleType, get_module_type, register
from autopeft.modules.base import LearningRate
from autopeft.space import SearchSpace, count_trainable_params, parse_space
from tests.conftest import tiny_bert_config, tiny_llama_config


def test_every_module_type_declares_what_the_search_needs():
    assert list(MODULE_TYPES) == ["lora", "ia3", "serial_adapter", "parallel_adapter", "prefix", "bitfit",
                                  "ln_tuning", "lofit", "sparse"]
    for name, kind in MODULE_TYPES.items():
        assert kind.name == name and get_module_type(name) is kind
        rate = kind.learning_rate
        assert 0 < rate.low <= rate.default <= rate.high and rate.source
    # learning rates of the module types span two orders of magnitude (issue 17 searches within each type's range)
    defaults = [kind.learning_rate.default for kind in MODULE_TYPES.values()]
    assert max(defaults) / min(defaults) >= 10


def test_one_default_per_concept():
    """The defaults a decoded point gets are the module type's, and the builder honours them."""
    config = tiny_bert_config()
    spec = parse_space({"name": "x", "modules": {"lora": {"size": 4}, "parallel_adapter": {"size": 8}}}, "x")
    point = SearchSpace(spec, config).decode({})
    assert point.modules["lora"].options == get_module_type("lora").options == {"alpha": 2.0}
    assert point.modules["lora"].targets == get_module_type("lora").targets
    assert point.modules["parallel_adapter"].options == {"location": "ffn", "scaling": 4.0}
    lora, adapter = build_peft_config(point, config, "classification").components
    assert lora.lora_alpha == 2.0 * 4 and adapter.scaling == 4.0


def test_a_field_the_module_type_lacks_is_an_error_not_ignored():
    config = tiny_bert_config()
    for module, field, message in [("prefix", {"alpha": 2.0}, "'prefix' has no option 'alpha'"),
                                   ("serial_adapter", {"scaling": 4.0}, "'serial_adapter' has no option 'scaling'"),
                                   ("prefix", {"targets": ["query"]}, "'prefix' has no target matrices")]:
        spec = parse_space({"name": "x", "modules": {module: {"size": 4, **field}}}, "x")
        with pytest.raises(SpaceError, match=message):
            SearchSpace(spec, config)
    spec = parse_space({"name": "x", "modules": {"bitfit": {}}}, "x")
    with pytest.raises(SpaceError, match="no bias vectors"):
        SearchSpace(spec, tiny_llama_config())


def test_a_new_module_type_is_one_registered_class():
    """Registering a type makes it usable by spaces, parameter counts and builders with no other change."""

    class FinalNorm(ModuleType):   # LN tuning of each layer's last norm only
        name = "final_norm"
        learning_rate = LearningRate(1e-3, 1e-4, 1e-2, source="test")

        def count_params(self, module, arch, dims, shapes):
            return 2 * dims.hidden * len(module.sizes)

        def build(self, module, target, context):
            norm = target.arch.layer_norms[-1]
            return [LNTuningConfig(target_modules=target.arch.layer_regex(module.layers, [norm]),
                                   task_type=target.task_type)]

    register(FinalNorm)
    try:
        config = tiny_bert_config()
        spec = parse_space({"name": "x", "placement": {"mode": "per_module"}, "modules": {"final_norm": {}}}, "x")
        space = SearchSpace(spec, config)
        params = {f"final_norm.layer_{layer}": int(layer == 1) for layer in range(config.num_hidden_layers)}
        point = space.decode(params)
        assert point.describe() == "final_norm on 1 layer(s)"
        assert count_trainable_params(point, config) == 2 * config.hidden_size
        from peft import get_peft_model
        from transformers import AutoModelForSequenceClassification
        model = get_peft_model(AutoModelForSequenceClassification.from_config(config),
                               build_peft_config(point, config, "classification"))
        trainable = {n for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n}
        assert sum(p.numel() for n, p in model.named_parameters() if n in trainable) == 2 * config.hidden_size
    finally:
        MODULE_TYPES.pop("final_norm")


def test_sparse_with_a_sensitivity_map_and_per_layer_densities_builds_every_group():
    """Each density group takes its own matrices' top entries (the second group once looked up full names as
    layer-relative ones and failed)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from autopeft.modules import BuildContext
    from autopeft.priors.sensitivity import SensitivityMap
    from autopeft.space import ModuleChoice, PeftPoint

    config = tiny_bert_config()
    model = AutoModelForSequenceClassification.from_config(config)
    names = [f"bert.encoder.layer.{layer}.attention.self.value" for layer in range(config.num_hidden_layers)]
    generator = torch.Generator().manual_seed(0)
    scores = {name: torch.rand(dict(model.named_modules())[name].weight.shape, generator=generator) for name in names}
    sensitivity = SensitivityMap("m", scores, {"modules": {name: [i, "value"] for i, name in enumerate(names)}})
    densities = {layer: (0.1 if layer % 2 else 0.2) for layer in range(config.num_hidden_layers)}
    point = PeftPoint({"sparse": ModuleChoice("sparse", densities, ("value",))})
    configs = build_peft_config(point, config, "classification", BuildContext(sensitivity=sensitivity)).components
    assert sorted(len(c.target_modules) for c in configs) == [config.num_hidden_layers // 2] * 2
    for component in configs:
        for name, chosen in component.masks.indices.items():
            expected = sensitivity.top_fraction_mask([name], component.density).indices[name]
            assert torch.equal(chosen, expected)
    assert count_trainable_params(point, config) == sum(len(i) for c in configs for i in c.masks.indices.values())
