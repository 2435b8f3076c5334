import copy

import pytest
import torch
from peft import PeftModel, get_peft_model

from autopeft.errors import AutopeftError
from autopeft.tuners.lofit import (
    HeadRanking,
    LofitConfig,
    LofitLayer,
    fold_offsets_into_bias,
    head_norms,
    lofit_l1_penalty,
)

HEAD_DIM = 8  # both fixtures: hidden 32, 4 heads


def lofit_layers(model: torch.nn.Module) -> list[LofitLayer]:
    return [module for module in model.modules() if isinstance(module, LofitLayer)]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_zero_scale_and_offset_leave_outputs_exactly_unchanged(request, fixture):
    base = request.getfixturevalue(fixture)
    input_ids = torch.randint(3, 1000, (2, 6))
    with torch.no_grad():
        reference = base(input_ids=input_ids).logits
    model = get_peft_model(base, LofitConfig(scale_init_std=0.0)).eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=input_ids).logits, reference)


@pytest.mark.parametrize(
    ("heads", "train_scale", "train_offset", "n_selected"),
    [
        (None, True, True, 2 * 4),
        ({0: [1, 3], 1: [2]}, True, True, 3),
        ([[0], []], True, False, 1),  # list form; layer 1 has no heads and is not adapted
        ({"1": [0, 1, 2]}, False, True, 3),  # string keys, as after a JSON round trip
    ],
)
def test_trainable_count_matches_formula(tiny_llama, heads, train_scale, train_offset, n_selected):
    config = LofitConfig(heads=heads, train_scale=train_scale, train_offset=train_offset)
    model = get_peft_model(tiny_llama, config)
    assert model.get_nb_trainable_parameters()[0] == n_selected * HEAD_DIM * (train_scale + train_offset)
    assert len(lofit_layers(model)) == (2 if heads is None else len(config.heads))


def test_invalid_selections_are_rejected(tiny_llama):
    with pytest.raises(AutopeftError):
        LofitConfig(train_scale=False, train_offset=False)
    with pytest.raises(AutopeftError):
        get_peft_model(copy.deepcopy(tiny_llama), LofitConfig(heads={0: [4]}))  # only heads 0..3 exist
    with pytest.raises(AutopeftError):
        get_peft_model(tiny_llama, LofitConfig(heads={0: [1], 2: [0]}))  # only layers 0 and 1 exist


def test_one_step_changes_only_selected_heads(tiny_bert):
    model = get_peft_model(tiny_bert, LofitConfig(heads={0: [1, 3], 1: [2]}, scale_init_std=0.0))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=torch.randint(3, 1000, (2, 6)), labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()

    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(".lofit_scale." in name or ".lofit_offset." in name for name in changed)
    for layer_index, layer in enumerate(lofit_layers(model)):
        scale, offset = layer.scale_and_offset("default", torch.float32)
        touched = {0: [1, 3], 1: [2]}[layer_index]
        untouched = [head for head in range(4) if head not in touched]
        for vector in (scale, offset):
            per_head = vector.view(4, HEAD_DIM)
            assert (per_head[untouched] == 0).all() and (per_head[touched] != 0).any()


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_save_and_load_reproduce_outputs(request, fixture, tmp_path):
    base = request.getfixturevalue(fixture)
    fresh_base = copy.deepcopy(base)
    model = get_peft_model(base, LofitConfig(heads={0: [0, 2], 1: [3]}, scale_init_std=0.1)).eval()
    with torch.no_grad():
        for layer in lofit_layers(model):
            layer.lofit_offset["default"].normal_(0, 0.1)
    input_ids = torch.randint(3, 1000, (2, 6))
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))

    loaded = PeftModel.from_pretrained(fresh_base, tmp_path).eval()
    with torch.no_grad():
        actual = loaded(input_ids=input_ids).logits
    assert (actual - expected).abs().max() <= 1e-5


def test_offsets_fold_into_bias_and_merge_adds_llama_bias(tiny_llama):
    model = get_peft_model(tiny_llama, LofitConfig(heads={0: [1], 1: [0, 2]}, scale_init_std=0.2)).eval()
    with torch.no_grad():
        for layer in lofit_layers(model):
            layer.lofit_offset["default"].normal_(0, 0.3)
    x = torch.randn(3, 32)
    biases = fold_offsets_into_bias(model)
    assert sorted(biases) == ["model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"]
    layer = model.base_model.model.model.layers[1].self_attn.o_proj
    scale, _ = layer.scale_and_offset("default", torch.float32)
    with torch.no_grad():  # W diag(1 + A) x + folded bias == adapted projection
        bias = biases["model.layers.1.self_attn.o_proj"]
        folded = torch.nn.functional.linear(x * (1 + scale), layer.base_layer.weight, bias)
        torch.testing.assert_close(folded, layer(x), atol=1e-6, rtol=0)

    input_ids = torch.randint(3, 1000, (2, 6))
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
    merged = model.merge_and_unload()
    assert merged.model.layers[1].self_attn.o_proj.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=input_ids).logits, expected, atol=1e-5, rtol=0)


def test_strong_l1_drives_most_head_norms_to_zero(tiny_llama):
    input_ids = torch.randint(3, 1000, (2, 8))

    def train_scales(base: torch.nn.Module, l1_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = get_peft_model(base, LofitConfig(train_offset=False, scale_init_std=0.5))
        start = head_norms(model)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
        for _ in range(40):
            optimizer.zero_grad()
            loss = model(input_ids=input_ids, labels=input_ids).loss + l1_lambda * lofit_l1_penalty(model)
            loss.backward()
            optimizer.step()
        return start, head_norms(model)

    start, free = train_scales(copy.deepcopy(tiny_llama), l1_lambda=0.0)
    _, sparse = train_scales(tiny_llama, l1_lambda=10.0)
    assert sparse.shape == (2, 4) and start.mean() > 1.0
    assert (free > 0.5 * start.mean()).all()  # the task alone keeps the heads in use
    assert (sparse < 0.1 * start.mean()).float().mean() >= 0.75


def test_head_ranking_top_k_and_json_round_trip(tmp_path):
    ranking = HeadRanking.from_tensor("tiny", torch.tensor([[0.1, 0.9, 0.0, 0.5], [0.7, 0.2, 0.9, 0.3]]))
    assert ranking.top_k(1) == {0: [1]}  # tie at 0.9: lower layer first
    assert ranking.top_k(4) == {0: [1, 3], 1: [0, 2]}
    ranking.save(tmp_path / "ranking.json")
    assert HeadRanking.load(tmp_path / "ranking.json") == ranking
    with pytest.raises(AutopeftError):
        ranking.top_k(9)
    assert LofitConfig(heads=ranking.top_k(3)).heads == {0: [1], 1: [0, 2]}
