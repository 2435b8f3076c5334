import json

import pytest
import torch
from peft import PeftConfig, get_peft_model
from tuner_checks import (
    BERT_HEAD_PARAMS,
    HIDDEN,
    LAYERS,
    bottleneck_params,
    build_bert,
    build_llama,
    check_lifecycle,
    input_ids,
    logits,
)

from autopeft.errors import AutopeftError
from autopeft.tuners.bottleneck import BottleneckConfig, BottleneckLayer

# BERT's FFN output is `layer.N.output.dense`; the attention block has an `output.dense` of its own
BERT_FFN_OUT = dict(target_modules=["output.dense"], exclude_modules=["attention.output.dense"])
BERT_PARALLEL = dict(BERT_FFN_OUT, placement="parallel", input_modules={"output.dense": "intermediate"})

CASES = {
    # name: (build, config kwargs, head params); every case adapts width 32 -> 32 with m=8 in both layers
    "bert-serial": (build_bert, dict(BERT_FFN_OUT, task_type="SEQ_CLS"), BERT_HEAD_PARAMS),
    "bert-parallel": (build_bert, dict(BERT_PARALLEL, task_type="SEQ_CLS"), BERT_HEAD_PARAMS),
    "llama-serial": (build_llama, dict(target_modules=["down_proj"], task_type="CAUSAL_LM"), 0),
    "llama-parallel": (build_llama, dict(target_modules=["mlp"], placement="parallel", task_type="CAUSAL_LM"), 0),
}


@pytest.mark.parametrize("case", CASES)
def test_lifecycle(case, tmp_path):
    build, kwargs, head_params = CASES[case]
    config = BottleneckConfig(bottleneck_size=8, **kwargs)
    adapter_params = LAYERS * bottleneck_params(HIDDEN, 8, HIDDEN)
    loaded = check_lifecycle(build, config, adapter_params, head_params, tmp_path)
    assert isinstance(loaded.peft_config["default"], BottleneckConfig)
    assert loaded.peft_config["default"].placement == config.placement


def test_size_pattern_and_layers_to_transform(tiny_llama):
    config = BottleneckConfig(
        target_modules=["down_proj", "o_proj"],
        layers_to_transform=[1],
        bottleneck_size=8,
        size_pattern={r"layers\.1\.self_attn\.o_proj": 3},
    )
    model = get_peft_model(tiny_llama, config)
    wrapped = {n: m for n, m in model.named_modules() if isinstance(m, BottleneckLayer)}
    assert sorted(n.split("model.layers.")[1] for n in wrapped) == ["1.mlp.down_proj", "1.self_attn.o_proj"]
    expected = bottleneck_params(HIDDEN, 8, HIDDEN) + bottleneck_params(HIDDEN, 3, HIDDEN)
    assert model.get_nb_trainable_parameters()[0] == expected


def test_parallel_adapter_reads_the_input_module(tiny_bert):
    model = get_peft_model(tiny_bert, BottleneckConfig(bottleneck_size=4, init_weights=False, **BERT_PARALLEL))
    layer = model.base_model.model.bert.encoder.layer[0]
    adapter = layer.output.dense
    seen = {}
    layer.intermediate.register_forward_pre_hook(lambda m, args: seen.update(ffn_input=args[0]))
    adapter.base_layer.register_forward_hook(lambda m, args, out: seen.update(dense=out))
    adapter.register_forward_hook(lambda m, args, out: seen.update(adapted=out))
    logits(model, input_ids())

    down, up = adapter.bottleneck_parallel_down["default"], adapter.bottleneck_parallel_up["default"]
    expected = seen["dense"] + 4.0 * up(torch.relu(down(seen["ffn_input"])))  # default parallel scaling is 4
    torch.testing.assert_close(seen["adapted"], expected)
    assert adapter.bottleneck_input["default"].tensor is None  # the captured input is not kept after use


def test_serial_adapter_reads_the_output(tiny_llama):
    model = get_peft_model(tiny_llama, BottleneckConfig(target_modules=["down_proj"], init_weights=False))
    adapter = model.base_model.model.model.layers[0].mlp.down_proj
    seen = {}
    adapter.base_layer.register_forward_hook(lambda m, args, out: seen.update(base=out))
    adapter.register_forward_hook(lambda m, args, out: seen.update(adapted=out))
    logits(model, input_ids())
    down, up = adapter.bottleneck_serial_down["default"], adapter.bottleneck_serial_up["default"]
    torch.testing.assert_close(seen["adapted"], seen["base"] + up(torch.relu(down(seen["base"]))))


def test_disable_and_unload_restore_the_base_model(tiny_bert):
    ids = input_ids()
    reference = logits(tiny_bert, ids)
    model = get_peft_model(tiny_bert, BottleneckConfig(bottleneck_size=4, init_weights=False, **BERT_PARALLEL))
    assert not torch.allclose(logits(model, ids), reference)
    with model.disable_adapter():
        assert torch.equal(logits(model, ids), reference)
    with pytest.raises(AutopeftError, match="cannot be merged"):
        model.merge_and_unload()

    base = model.unload()
    assert not any(isinstance(m, BottleneckLayer) for m in base.modules())
    # the input-capture hooks on `intermediate` are gone with the adapters
    assert all(not layer.intermediate._forward_pre_hooks for layer in base.bert.encoder.layer)
    assert torch.equal(logits(base, ids), reference)


def test_unload_a_wrapped_block(tiny_llama):
    ids = input_ids()
    reference = logits(tiny_llama, ids)
    config = BottleneckConfig(target_modules=["mlp"], placement="parallel", init_weights=False)
    model = get_peft_model(tiny_llama, config)
    base = model.unload()
    assert type(base.model.layers[0].mlp).__name__ == "LlamaMLP"
    assert torch.equal(logits(base, ids), reference)


def test_config_serialises_to_json_and_back():
    config = BottleneckConfig(bottleneck_size=16, size_pattern={"layers.0.mlp": 4}, **BERT_PARALLEL)
    assert config.scaling == 4.0
    data = json.loads(json.dumps({k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}))
    restored = PeftConfig.from_peft_type(**data)
    assert isinstance(restored, BottleneckConfig)
    assert restored.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(placement="sideways"), "placement"),
        (dict(input_modules={"output.dense": "intermediate"}), "only applies to parallel"),
        (dict(bottleneck_size=0), "positive int"),
        (dict(size_pattern={"mlp": 0}, placement="parallel"), "positive int"),
        (dict(non_linearity="not-an-activation"), "non_linearity"),
        (dict(target_modules=".*mlp", layers_to_transform=[0]), "list-form"),
    ],
)
def test_invalid_configs_are_refused(kwargs, message):
    with pytest.raises(AutopeftError, match=message):
        BottleneckConfig(**kwargs)


def test_unmatched_input_module_is_refused(tiny_bert):
    config = BottleneckConfig(placement="parallel", input_modules={"output.dense": "no_such_module"}, **BERT_FFN_OUT)
    with pytest.raises(AutopeftError, match="no_such_module"):
        get_peft_model(tiny_bert, config)
