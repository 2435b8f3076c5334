import copy
import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from autopeft.errors import AutopeftError
from autopeft.tuners.sparse import MASKS_FROM_CHECKPOINT, SparseConfig, SparseLayer, SparseMask, random_mask


def sparse_layers(model: torch.nn.Module) -> dict[str, SparseLayer]:
    return {
        name.removeprefix("base_model.model."): module
        for name, module in model.named_modules()
        if isinstance(module, SparseLayer)
    }


def uneven_mask(model: torch.nn.Module) -> SparseMask:
    """Different sizes per module, as a sensitivity-based mask would have."""
    mask = random_mask(model, ["query", "value", "v_proj", "down_proj"], density=0.05, seed=1)
    first = next(iter(mask.indices))
    mask.indices[first] = mask.indices[first][:3]
    return mask


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_zero_deltas_leave_outputs_exactly_unchanged(request, fixture):
    base = request.getfixturevalue(fixture)
    input_ids = torch.randint(3, 1000, (2, 6))
    with torch.no_grad():
        reference = base(input_ids=input_ids).logits
    model = get_peft_model(base, SparseConfig(density=0.05)).eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=input_ids).logits, reference)


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_trainable_count_is_total_mask_size(request, fixture):
    base = request.getfixturevalue(fixture)
    mask = uneven_mask(base)
    model = get_peft_model(base, SparseConfig(masks=mask))
    assert model.get_nb_trainable_parameters()[0] == mask.num_entries()
    assert set(sparse_layers(model)) == set(mask.indices)


def test_random_density_matches_random_mask(tiny_llama):
    targets = ["q_proj", "down_proj"]
    expected = random_mask(tiny_llama, targets, density=0.1, seed=7)
    model = get_peft_model(tiny_llama, SparseConfig(target_modules=targets, density=0.1, mask_seed=7))
    layers = sparse_layers(model)
    assert set(layers) == set(expected.indices)
    for name, layer in layers.items():
        assert torch.equal(layer.sparse_indices["default"], expected.indices[name])
        assert layer.sparse_indices["default"].numel() == round(0.1 * layer.get_base_layer().weight.numel())
    assert model.get_nb_trainable_parameters()[0] == expected.num_entries()


def test_one_step_changes_only_masked_weight_entries(tiny_bert):
    model = get_peft_model(tiny_bert, SparseConfig(masks=uneven_mask(tiny_bert)))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=torch.randint(3, 1000, (2, 6)), labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()

    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(".sparse_delta." in name for name in changed)
    for layer in sparse_layers(model).values():
        weight = layer.get_base_layer().weight
        with torch.no_grad():
            difference = layer.effective_weight(weight, ["default"]) - weight
        differing = difference.flatten().nonzero().flatten()
        assert torch.equal(differing, layer.sparse_indices["default"])  # every masked entry moved, nothing else


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_save_and_load_reproduce_outputs_from_adapter_folder_alone(request, fixture, tmp_path):
    base = request.getfixturevalue(fixture)
    fresh_base = copy.deepcopy(base)
    mask = uneven_mask(base)
    model = get_peft_model(base, SparseConfig(masks=mask)).eval()
    with torch.no_grad():
        for layer in sparse_layers(model).values():
            layer.sparse_delta["default"].normal_(0, 0.5)
    input_ids = torch.randint(3, 1000, (2, 6))
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
    model.save_pretrained(tmp_path)

    assert not list(tmp_path.glob("*.bin"))
    saved = load_file(tmp_path / "adapter_model.safetensors")
    saved_indices = {key: value for key, value in saved.items() if ".sparse_indices" in key}
    assert len(saved_indices) == len(mask) and all(v.dtype == torch.int64 for v in saved_indices.values())
    assert json.loads((tmp_path / "adapter_config.json").read_text())["masks"] == MASKS_FROM_CHECKPOINT

    loaded = PeftModel.from_pretrained(fresh_base, tmp_path).eval()
    for name, layer in sparse_layers(loaded).items():
        assert torch.equal(layer.sparse_indices["default"], mask.indices[name])
    with torch.no_grad():
        actual = loaded(input_ids=input_ids).logits
    assert (actual - expected).abs().max() <= 1e-5


def test_merge_and_unload_matches_adapter(tiny_llama):
    model = get_peft_model(tiny_llama, SparseConfig(density=0.05)).eval()
    with torch.no_grad():
        for layer in sparse_layers(model).values():
            layer.sparse_delta["default"].normal_(0, 0.5)
    input_ids = torch.randint(3, 1000, (2, 6))
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=input_ids).logits, expected, atol=1e-5, rtol=0)


def test_mask_safetensors_round_trip_and_validation(tiny_bert, tmp_path):
    mask = random_mask(tiny_bert, ["query"], density=0.1, seed=3)
    mask.save(tmp_path / "mask.safetensors")
    loaded = SparseMask.load(tmp_path / "mask.safetensors")
    assert loaded.indices.keys() == mask.indices.keys()
    assert all(torch.equal(loaded.indices[name], mask.indices[name]) for name in mask.indices)

    pattern = SparseMask({r"bert\.encoder\.layer\.\d+\.attention\.self\.key": torch.tensor([5, 1])})
    assert torch.equal(pattern.lookup("bert.encoder.layer.1.attention.self.key"), torch.tensor([1, 5]))
    with pytest.raises(AutopeftError):
        SparseMask({"a": torch.tensor([1, 1])})
    with pytest.raises(AutopeftError):
        out_of_range = {"bert.encoder.layer.0.attention.self.key": torch.tensor([10**6])}
        get_peft_model(tiny_bert, SparseConfig(masks=out_of_range))
