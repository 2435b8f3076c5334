import copy

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model, inject_adapter_in_model

from autopeft.tuners.prefix import PrefixConfig, PrefixLayer


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def prefix_count(layers: int, tokens: int, kv_heads: int, head_dim: int) -> int:
    return layers * 2 * tokens * kv_heads * head_dim


@pytest.mark.parametrize(
    ("fixture", "kv_heads"), [("tiny_bert", 4), ("tiny_llama", 2)]  # Llama fixture: GQA with 2 KV heads
)
def test_trainable_count_matches_formula(request, fixture, kv_heads):
    model = get_peft_model(request.getfixturevalue(fixture), PrefixConfig(num_virtual_tokens=5))
    trainable_params, _ = model.get_nb_trainable_parameters()
    assert trainable_params == prefix_count(layers=2, tokens=5, kv_heads=kv_heads, head_dim=8)


def test_layers_to_transform_and_projection_counts(tiny_llama):
    config = PrefixConfig(num_virtual_tokens=3, layers_to_transform=[1])
    only_layer_1 = get_peft_model(copy.deepcopy(tiny_llama), config)
    assert only_layer_1.get_nb_trainable_parameters()[0] == prefix_count(layers=1, tokens=3, kv_heads=2, head_dim=8)
    assert [name for name, m in only_layer_1.named_modules() if isinstance(m, PrefixLayer)] == [
        "base_model.model.model.layers.1.self_attn.prefix_kv_layer"
    ]

    config = PrefixConfig(num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=16)
    projected = get_peft_model(tiny_llama, config)
    hidden, encoder, kv_width = 32, 16, 2 * 2 * 8
    per_layer = 3 * hidden + (hidden * encoder + encoder) + (encoder * kv_width + kv_width)
    assert projected.get_nb_trainable_parameters()[0] == 2 * per_layer


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_padding_in_batch_matches_example_alone(request, fixture, attn_implementation):
    base = request.getfixturevalue(fixture)
    input_ids = torch.randint(3, 1000, (2, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 4:] = 0  # second example: 4 real tokens, right-padded
    model = get_peft_model(base, PrefixConfig(num_virtual_tokens=4, init_std=0.5)).eval()
    # switching after injection must still be honoured underneath the prefix
    model.base_model.model.set_attn_implementation(attn_implementation)

    with torch.no_grad():
        batched = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        alone = model(input_ids=input_ids[1:, :4], output_hidden_states=True)
    batched_states = batched.hidden_states[-1][1, :4]
    torch.testing.assert_close(batched_states, alone.hidden_states[-1][0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_prefix_changes_outputs_and_disabling_restores_them(request, fixture):
    base = request.getfixturevalue(fixture)
    input_ids = torch.randint(3, 1000, (2, 6))
    with torch.no_grad():
        reference = base(input_ids=input_ids, output_hidden_states=True).hidden_states[-1]
    model = get_peft_model(base, PrefixConfig(num_virtual_tokens=4)).eval()
    with torch.no_grad():
        prefixed = model(input_ids=input_ids, output_hidden_states=True).hidden_states[-1]
        with model.disable_adapter():
            disabled = model(input_ids=input_ids, output_hidden_states=True).hidden_states[-1]
    assert (prefixed - reference).abs().max() > 1e-3
    assert torch.equal(disabled, reference)


def test_cached_decoding_matches_full_forward(tiny_llama):
    model = get_peft_model(tiny_llama, PrefixConfig(num_virtual_tokens=3, init_std=0.5)).eval()
    input_ids = torch.randint(3, 1000, (1, 8))
    with torch.no_grad():
        full = model(input_ids=input_ids).logits
        prompt = model(input_ids=input_ids[:, :7], use_cache=True)
        step = model(input_ids=input_ids[:, 7:], cache=prompt.past_key_values, use_cache=True).logits
    torch.testing.assert_close(step[:, 0], full[:, 7], atol=1e-5, rtol=0)


def test_one_step_changes_only_prefix_parameters(tiny_bert):
    model = get_peft_model(tiny_bert, PrefixConfig(num_virtual_tokens=2))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=torch.randint(3, 1000, (2, 6)), labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == set(trainable(model))
    assert changed and all(".prefix_kv_layer.prefix_" in name for name in changed)


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_save_and_load_reproduce_outputs(request, fixture, tmp_path):
    base = request.getfixturevalue(fixture)
    fresh_base = copy.deepcopy(base)
    model = get_peft_model(base, PrefixConfig(num_virtual_tokens=3, prefix_projection=True)).eval()
    input_ids = torch.randint(3, 1000, (2, 6))
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))

    loaded = PeftModel.from_pretrained(fresh_base, tmp_path).eval()
    with torch.no_grad():
        actual = loaded(input_ids=input_ids).logits
    assert (actual - expected).abs().max() <= 1e-5


@pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")
@pytest.mark.parametrize("prefix_first", [True, False])
def test_composes_with_lora_in_either_order(tiny_bert, prefix_first):
    configs = [("prefix", PrefixConfig(num_virtual_tokens=2)), ("lora", LoraConfig(r=2, target_modules=["query"]))]
    for adapter_name, config in configs if prefix_first else configs[::-1]:
        model = inject_adapter_in_model(config, tiny_bert, adapter_name=adapter_name)
    attention = model.bert.encoder.layer[0].attention.self
    assert isinstance(attention.prefix_kv_layer, PrefixLayer)
    assert hasattr(attention.query, "lora_A")  # LoRA still reached the projection inside the prefixed attention
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.randint(3, 1000, (2, 5))).logits).all()


def test_unload_restores_the_base_model(tiny_llama):
    input_ids = torch.randint(3, 1000, (1, 5))
    with torch.no_grad():
        reference = tiny_llama(input_ids=input_ids).logits
    unloaded = get_peft_model(tiny_llama, PrefixConfig()).unload()
    attention = unloaded.model.layers[0].self_attn
    assert not hasattr(attention, "prefix_kv_layer") and attention.config is unloaded.config
    with torch.no_grad():
        assert torch.equal(unloaded(input_ids=input_ids).logits, reference)
