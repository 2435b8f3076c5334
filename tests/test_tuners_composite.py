import json

import pytest
import torch
from peft import IA3Config, LNTuningConfig, LoraConfig, PeftModel, PrefixTuningConfig, get_peft_model
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import ModulesToSaveWrapper
from safetensors.torch import load_file, save_file
from tuner_checks import (
    BERT_BIASES_PER_LAYER,
    BERT_HEAD_PARAMS,
    HIDDEN,
    LAYERS,
    LLAMA_BIASES_PER_LAYER,
    LLAMA_KV,
    bottleneck_params,
    build_bert,
    build_llama,
    check_lifecycle,
    input_ids,
    logits,
    train_one_step,
)

from autopeft.errors import AutopeftError
from autopeft.tuners.bitfit import BitFitConfig, BitFitLayer
from autopeft.tuners.bottleneck import BottleneckConfig, BottleneckLayer
from autopeft.tuners.composite import CompositeConfig

BERT_FFN_OUT = dict(target_modules=["output.dense"], exclude_modules=["attention.output.dense"])
ADAPTER = bottleneck_params(HIDDEN, 8, HIDDEN)
LORA_QV_BERT = LAYERS * 2 * 4 * (HIDDEN + HIDDEN)
LORA_QV_LLAMA = LAYERS * 4 * ((HIDDEN + HIDDEN) + (HIDDEN + LLAMA_KV))


def bert_parallel_adapter() -> BottleneckConfig:
    """A fresh config each time: tests mutate component configs."""
    return BottleneckConfig(
        placement="parallel", input_modules={"output.dense": "intermediate"}, bottleneck_size=8, **BERT_FFN_OUT
    )


def bert_mix() -> CompositeConfig:
    # listed outermost-first on purpose: the composite injects BitFit, then LoRA, then the adapter
    return CompositeConfig(
        task_type="SEQ_CLS",
        components=[
            bert_parallel_adapter(),
            BitFitConfig(target_modules=r".*encoder\.layer\.\d+\..*"),
            LoraConfig(r=4, target_modules=["query", "value"]),
        ],
    )


def llama_mix() -> CompositeConfig:
    return CompositeConfig(
        task_type="CAUSAL_LM",
        components=[
            BottleneckConfig(placement="parallel", target_modules=["mlp"], bottleneck_size=8),
            BitFitConfig(target_modules=r".*layers\.\d+\..*"),
            LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
        ],
    )


def bert_autopeft_space() -> CompositeConfig:
    # AutoPEFT's SA + PA on the FFN share `output.dense`; LoRA on attention
    serial = BottleneckConfig(bottleneck_size=8, **BERT_FFN_OUT)
    lora = LoraConfig(r=4, target_modules=["query", "value"])
    return CompositeConfig(task_type="SEQ_CLS", components=[serial, bert_parallel_adapter(), lora])


CASES = {
    "bert": (build_bert, bert_mix, LORA_QV_BERT + LAYERS * (ADAPTER + BERT_BIASES_PER_LAYER), BERT_HEAD_PARAMS),
    "llama": (build_llama, llama_mix, LORA_QV_LLAMA + LAYERS * (ADAPTER + LLAMA_BIASES_PER_LAYER), 0),
    "bert-sa-pa": (build_bert, bert_autopeft_space, LORA_QV_BERT + LAYERS * 2 * ADAPTER, BERT_HEAD_PARAMS),
}


@pytest.mark.parametrize("case", CASES)
def test_lifecycle(case, tmp_path):
    build, make_config, adapter_params, head_params = CASES[case]
    config = make_config()
    loaded = check_lifecycle(build, config, adapter_params, head_params, tmp_path)

    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "AUTOPEFT"
    assert [c["peft_type"] for c in saved["components"]] == [c.peft_type for c in config.components]
    restored = loaded.peft_config["default"]
    assert isinstance(restored, CompositeConfig)
    assert [type(c) for c in restored.components] == [type(c) for c in config.components]


def test_shared_modules_nest_innermost_first(tiny_bert):
    model = get_peft_model(tiny_bert, bert_mix())
    layer = model.base_model.model.bert.encoder.layer[0]
    query = layer.attention.self.query
    assert isinstance(query, LoraLinear) and isinstance(query.base_layer, BitFitLayer)
    assert isinstance(layer.output.dense, BottleneckLayer) and isinstance(layer.output.dense.base_layer, BitFitLayer)
    assert isinstance(layer.intermediate.dense, BitFitLayer)


def test_parallel_block_wraps_adapters_inside_it(tiny_llama):
    model = get_peft_model(tiny_llama, llama_mix())
    mlp = model.base_model.model.model.layers[0].mlp
    assert isinstance(mlp, BottleneckLayer) and isinstance(mlp.base_layer.down_proj, BitFitLayer)


def test_serial_then_parallel_on_one_module(tiny_bert):
    serial = BottleneckConfig(bottleneck_size=4, init_weights=False, **BERT_FFN_OUT)
    parallel = BottleneckConfig(
        placement="parallel", input_modules={"output.dense": "intermediate"}, bottleneck_size=4, init_weights=False,
        **BERT_FFN_OUT,
    )
    model = get_peft_model(tiny_bert, CompositeConfig(components=[parallel, serial]))
    layer = model.base_model.model.bert.encoder.layer[1]
    adapter = layer.output.dense
    seen = {}
    layer.intermediate.register_forward_pre_hook(lambda m, args: seen.update(ffn_input=args[0]))
    adapter.base_layer.register_forward_hook(lambda m, args, out: seen.update(base=out))
    adapter.register_forward_hook(lambda m, args, out: seen.update(adapted=out))
    logits(model, input_ids())

    def run(placement, h):
        down = getattr(adapter, f"bottleneck_{placement}_down")["default"]
        return getattr(adapter, f"bottleneck_{placement}_up")["default"](torch.relu(down(h)))

    # y = f(x) + SA(f(x)) + 4 * PA(x): the serial adapter sees the FFN output, the parallel one the FFN input
    expected = seen["base"] + run("serial", seen["base"]) + 4.0 * run("parallel", seen["ffn_input"])
    torch.testing.assert_close(seen["adapted"], expected)


def test_peft_ia3_and_ln_tuning_components(tmp_path):
    config = CompositeConfig(
        task_type="SEQ_CLS",
        components=[
            IA3Config(target_modules=["key", "value"], feedforward_modules=[]),
            LNTuningConfig(target_modules=["output.LayerNorm"]),
            BitFitConfig(target_modules=["key", "value"]),
        ],
    )
    ia3 = 2 * HIDDEN  # one scale per output feature of key and value
    ln_tuning = 2 * 2 * HIDDEN  # weight + bias of both LayerNorms named output.LayerNorm in each layer
    check_lifecycle(build_bert, config, LAYERS * (ia3 + ln_tuning + 2 * HIDDEN), BERT_HEAD_PARAMS, tmp_path)


def test_merge_composes_inner_first(tiny_bert):
    ids = input_ids()
    config = CompositeConfig(
        components=[
            IA3Config(target_modules=["key", "value"], feedforward_modules=[], init_ia3_weights=False),
            LoraConfig(r=4, target_modules=["query"], init_lora_weights=False),
            BitFitConfig(target_modules=["query", "key", "value"], init_weights=False),
        ]
    )
    model = get_peft_model(tiny_bert, config)
    adapted = logits(model, ids)
    model.merge_adapter()
    torch.testing.assert_close(logits(model, ids), adapted)
    model.unmerge_adapter()
    torch.testing.assert_close(logits(model, ids), adapted)
    merged = model.merge_and_unload()
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    torch.testing.assert_close(logits(merged, ids), adapted)


def test_merge_refused_with_bottleneck(tiny_bert):
    model = get_peft_model(tiny_bert, bert_mix())
    with pytest.raises(AutopeftError, match="cannot merge"):
        model.merge_and_unload()


@pytest.mark.parametrize("build, make_config", [(build_llama, llama_mix), (build_bert, bert_mix)])
def test_disable_and_unload_restore_the_base_model(build, make_config):
    ids = input_ids()
    base = build()
    reference = logits(base, ids)
    config = make_config()
    for component in config.components:
        component.init_weights = False  # bottleneck and bitfit start non-trivial
    model = get_peft_model(base, config)
    assert not torch.allclose(logits(model, ids), reference)
    with model.disable_adapter():
        assert torch.equal(logits(model, ids), reference)
    unloaded = model.unload()
    assert not any(isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper)) for m in unloaded.modules())
    assert torch.equal(logits(unloaded, ids), reference)


def test_missing_adapter_keys_warn(tmp_path):
    model = get_peft_model(build_bert(), bert_mix())
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "adapter_model.safetensors")
    dropped = next(key for key in weights if "bottleneck_parallel_up" in key)
    del weights[dropped]
    save_file(weights, tmp_path / "adapter_model.safetensors")
    with pytest.warns(UserWarning, match="missing adapter keys"):
        PeftModel.from_pretrained(build_bert(), tmp_path)


@pytest.mark.parametrize(
    "components, message",
    [
        ([LoraConfig(target_modules=["query"]), LoraConfig(r=4, target_modules=["query"])], "arbitrary"),
        ([LNTuningConfig(target_modules=["output.LayerNorm"]), BitFitConfig(target_modules=["LayerNorm"])],
         "to itself"),
        ([LNTuningConfig(target_modules=["attention.output"]), LoraConfig(target_modules=["dense"])], "would copy"),
        ([BottleneckConfig(**BERT_FFN_OUT), BottleneckConfig(**BERT_FFN_OUT)], "already has a serial"),
        ([LoraConfig(target_modules=["no_such_module"])], "matched no module"),
        ([BottleneckConfig(target_modules=["intermediate", "intermediate.dense"])], "module containing it"),
        ([LoraConfig(target_modules=["classifier"])], "modules_to_save"),
    ],
)
def test_unsupported_combinations_are_refused(tiny_bert, components, message):
    with pytest.raises(ValueError, match=message):
        get_peft_model(tiny_bert, CompositeConfig(task_type="SEQ_CLS", components=components))


@pytest.mark.parametrize(
    "component, message",
    [
        (PrefixTuningConfig(num_virtual_tokens=4, task_type="SEQ_CLS"), "prompt-learning"),
        (LoraConfig(target_modules=["query"], bias="all"), "bitfit"),
        (LoraConfig(target_modules=["query"], modules_to_save=["classifier"]), "modules_to_save"),
        (LoraConfig(), "explicit target_modules"),
        ({"peft_type": "NOT_A_METHOD"}, "unknown component"),
        (CompositeConfig(components=[LoraConfig(target_modules=["query"])]), "do not nest"),
    ],
)
def test_invalid_components_are_refused(component, message):
    with pytest.raises(AutopeftError, match=message):
        CompositeConfig(components=[component])


def test_second_adapter_is_refused(tiny_bert):
    model = get_peft_model(tiny_bert, bert_mix())
    with pytest.raises(AutopeftError, match="only adapter"):
        model.add_adapter("other", bert_mix())


# where the colleague's methods go: prefix on self-attention, LoFiT and sparse on the attention output projection
SITES = {
    "bert": dict(attention="attention.self", attention_out="attention.output.dense", ffn_in="intermediate.dense"),
    "llama": dict(attention="self_attn", attention_out="o_proj", ffn_in="up_proj"),
}


def every_method(arch: str) -> CompositeConfig:
    """LoRA and each of autopeft's methods in one adapter (prefix tuning is not an identity at init)."""
    from autopeft.tuners.lofit import LofitConfig
    from autopeft.tuners.prefix import PrefixConfig
    from autopeft.tuners.sparse import SparseConfig

    mix, sites = (bert_mix() if arch == "bert" else llama_mix()), SITES[arch]
    return CompositeConfig(
        task_type=mix.task_type,
        components=mix.components + [
            PrefixConfig(num_virtual_tokens=3, target_modules=[sites["attention"]]),
            LofitConfig(target_modules=[sites["attention_out"]], heads={0: [0, 1], 1: [2]}),
            SparseConfig(target_modules=[sites["attention_out"], sites["ffn_in"]], density=0.1),
        ],
    )


@pytest.mark.parametrize("arch, build", [("bert", build_bert), ("llama", build_llama)])
def test_every_method_in_one_adapter(arch, build, tmp_path):
    ids = input_ids()
    model = get_peft_model(build(), every_method(arch))
    train_one_step(model, ids)
    trained = logits(model, ids)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(build(), tmp_path)
    assert (logits(loaded, ids) - trained).abs().max().item() <= 1e-5
    unloaded = loaded.unload()
    assert not any(isinstance(m, BaseTunerLayer) for m in unloaded.modules())


def test_lora_and_ia3_on_one_module_nest_in_a_fixed_order(tiny_bert):
    """Every ranked method has its own rank, so a shared module gets one order: IA3 scales LoRA's output."""
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.lora import LoraLayer

    config = CompositeConfig(task_type="SEQ_CLS", components=[
        IA3Config(target_modules=["query"], feedforward_modules=[]), LoraConfig(target_modules=["query"])])
    model = get_peft_model(tiny_bert, config)
    query = model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, IA3Layer) and isinstance(query.base_layer, LoraLayer)
