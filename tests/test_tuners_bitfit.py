import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file
from tuner_checks import (
    BERT_BIASES_PER_LAYER,
    BERT_HEAD_PARAMS,
    LAYERS,
    LLAMA_BIASES_PER_LAYER,
    build_bert,
    build_llama,
    check_lifecycle,
    input_ids,
    logits,
    train_one_step,
)

from autopeft.errors import AutopeftError
from autopeft.tuners.bitfit import BitFitConfig, BitFitLayer

CASES = {
    "bert": (build_bert, dict(target_modules=r".*encoder\.layer\.\d+\..*", task_type="SEQ_CLS"),
             LAYERS * BERT_BIASES_PER_LAYER, BERT_HEAD_PARAMS),
    "llama": (build_llama, dict(target_modules=r".*layers\.\d+\..*", task_type="CAUSAL_LM"),
              LAYERS * LLAMA_BIASES_PER_LAYER, 0),
}


@pytest.mark.parametrize("case", CASES)
def test_lifecycle(case, tmp_path):
    build, kwargs, adapter_params, head_params = CASES[case]
    check_lifecycle(build, BitFitConfig(**kwargs), adapter_params, head_params, tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    # only the bias deltas (and the classification head) are saved, never a base weight
    assert all(key.endswith("bitfit_bias") or ".classifier." in key for key in saved)
    assert sum(t.numel() for k, t in saved.items() if k.endswith("bitfit_bias")) == adapter_params


def test_layers_to_transform_selects_one_layer(tiny_bert):
    config = BitFitConfig(target_modules=["query", "key", "value", "dense", "LayerNorm"], layers_to_transform=[1])
    model = get_peft_model(tiny_bert, config)
    # pooler.dense and embeddings.LayerNorm match by name but belong to no layer, so they are left alone
    assert all(".layer.1." in name for name in model.targeted_module_names)
    assert len(model.targeted_module_names) == 8
    assert model.get_nb_trainable_parameters()[0] == BERT_BIASES_PER_LAYER


def test_targeted_names_list_only_adapted_modules(tiny_llama):
    model = get_peft_model(tiny_llama, BitFitConfig(target_modules=r".*layers\.0\..*"))
    assert len(model.targeted_module_names) == 9  # 7 Linear + 2 RMSNorm; self_attn, mlp, act_fn are skipped
    assert all(isinstance(model.base_model.model.get_submodule(n), BitFitLayer) for n in model.targeted_module_names)


def test_add_missing_bias_false_skips_bias_free_modules(tiny_llama):
    with pytest.raises(AutopeftError, match="with a bias"):
        get_peft_model(tiny_llama, BitFitConfig(target_modules=r".*layers\.\d+\..*", add_missing_bias=False))


def test_add_missing_bias_false_keeps_existing_biases(tiny_bert):
    config = BitFitConfig(target_modules=r".*encoder\.layer\.\d+\..*", add_missing_bias=False)
    model = get_peft_model(tiny_bert, config)
    assert model.get_nb_trainable_parameters()[0] == LAYERS * BERT_BIASES_PER_LAYER


def test_merge_folds_the_deltas_into_the_biases(tiny_bert):
    ids = input_ids()
    model = get_peft_model(tiny_bert, BitFitConfig(target_modules=r".*encoder\.layer\.\d+\..*", init_weights=False))
    adapted = logits(model, ids)
    merged = model.merge_and_unload()
    assert not any(isinstance(m, BitFitLayer) for m in merged.modules())
    torch.testing.assert_close(logits(merged, ids), adapted)


def test_merge_needs_a_bias_of_its_own(tiny_llama):
    model = get_peft_model(tiny_llama, BitFitConfig(target_modules=["q_proj"]))
    with pytest.raises(AutopeftError, match="no bias of its own"):
        model.merge_and_unload()


def test_only_bias_deltas_train(tiny_bert):
    model = get_peft_model(tiny_bert, BitFitConfig(target_modules=["query"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith("bitfit_bias.default") for n in trainable)
    frozen_bias = model.base_model.model.bert.encoder.layer[0].attention.self.query.base_layer.bias.clone()
    train_one_step(model, input_ids())
    assert torch.equal(model.base_model.model.bert.encoder.layer[0].attention.self.query.base_layer.bias, frozen_bias)


def test_regex_with_layers_to_transform_is_refused():
    with pytest.raises(AutopeftError, match="list-form"):
        BitFitConfig(target_modules=".*query", layers_to_transform=[0])
