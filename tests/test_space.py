from pathlib import Path

import numpy as np
import optuna
import pytest

from autopeft.errors import SpaceError
from autopeft.space import SearchSpace, count_trainable_params, parse_space, read_space_file
from tests.conftest import tiny_bert_config, tiny_llama_config

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("space", sorted(p.name for p in SPACES.glob("*.yaml")))
def test_shipped_spaces_bind_to_both_families(space):
    for config in (tiny_bert_config(hidden_size=64, intermediate_size=128), tiny_llama_config(hidden_size=128)):
        bound = SearchSpace.from_file(SPACES / space, config)
        assert bound.dimensions and bound.cardinality() > 1


def test_autopeft_space_matches_the_paper(tmp_path):
    config = tiny_bert_config(hidden_size=768 // 8, num_attention_heads=4, intermediate_size=128, num_hidden_layers=3)
    space = SearchSpace.from_file(SPACES / "autopeft.yaml", config)
    names = [d.name for d in space.dimensions]
    assert names == ["layer_0", "layer_1", "layer_2", "serial_adapter.size_level", "parallel_adapter.size_level",
                     "prefix.size_level"]
    # grid rescaled from hidden 768 to 96: 768 -> 96, small sizes merge at 1
    assert space.grids["serial_adapter"][-1] == 96 and space.grids["serial_adapter"][0] == 0
    assert space.cardinality() == 2**3 * len(space.grids["serial_adapter"]) ** 3


def test_conditional_dimensions_only_exist_when_parent_is_on():
    space = SearchSpace.from_file(SPACES / "unified.yaml", tiny_bert_config())
    params = {d.name: 0 for d in space.dimensions if d.name.endswith(".on")}
    active = space.active_params({**params, "lora.size_level": 2})
    assert "lora.size_level" not in active
    params["lora.on"] = 1
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    point = space.suggest(trial)
    for dim in space.dimensions:
        assert (dim.name in point) == dim.active(point)


def test_suggest_and_sample_agree_with_distributions():
    space = SearchSpace.from_file(SPACES / "lora.yaml", tiny_llama_config(hidden_size=128))
    rng = np.random.default_rng(0)
    for _ in range(20):
        params = space.sample(rng)
        assert space.validate_params(params) == params
        point = space.decode(params)
        for module in point.modules.values():
            assert all(size in space.grids["lora"] for size in module.sizes.values())


def test_analytic_count_for_a_hand_computed_lora_point():
    config = tiny_bert_config()  # hidden 32, 2 layers
    space = parse_space({"name": "t", "modules": {"lora": {"targets": ["query", "value"], "size": 4}}}, "t")
    point = SearchSpace(space, config).decode({})
    assert count_trainable_params(point, config) == 2 * 2 * 4 * (32 + 32)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nmodules: {lora: {size: 4}\n", "invalid YAML"),
        ("name: x\nmodules: {dora: {size: 4}}\n", "field 'modules': .*unknown module type"),
        ("name: x\nmodules: {lora: {size: 4, targets: [querry]}}\n", "field 'modules.lora.targets'"),
        ("name: x\nmodules: {lora: {size: {grid: [-1, 2]}}}\n", "field 'modules.lora.size.grid'"),
        ("name: x\nmodules: {lora: {size: 4, colour: red}}\n", "field 'modules.lora.colour'"),
        ("name: x\nmodules: {lora: {size: 4096}}\n", "does not fit the model"),
        ("name: x\nmodules: {lora: {}}\n", "needs a size"),
        ("name: x\nmodules: {ia3: {size: 3}}\n", "has no size"),
        ("name: x\nplacement: {layers: [0, 7]}\nmodules: {ia3: {}}\n", "layer\\(s\\) \\[7\\] do not exist"),
        ("name: x\nmodules: {lofit: {size: {grid: [1, 100]}}}\n", "heads \\(K\\) 100 does not fit"),
    ],
)
def test_invalid_spaces_give_one_line_errors_naming_file_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError, match=message) as info:
        SearchSpace.from_file(path, tiny_bert_config())
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bitfit_is_rejected_for_a_model_without_biases(tmp_path):
    path = write(tmp_path, "name: x\nmodules: {bitfit: {}}\n")
    with pytest.raises(SpaceError, match="no bias vectors"):
        SearchSpace.from_file(path, tiny_llama_config())


def test_missing_space_file():
    with pytest.raises(SpaceError, match="does not exist"):
        read_space_file("nope.yaml")


def test_describe_tells_points_apart_by_their_searched_rates():
    from autopeft.space.point import PeftPoint

    modules = {"lora": {"type": "lora", "layers": [0, 1], "size": 8, "targets": ["query", "value"]}}
    assert PeftPoint.from_dict({"modules": modules}).describe() == "lora size 8 on query/value of 2 layer(s)"
    assert PeftPoint.from_dict({"modules": modules, "training": {"lr_scale": 1.4142}}).describe() == \
        "lora size 8 on query/value of 2 layer(s); lr x1.4"
    modules["lora"]["lr"] = 0.003
    assert (PeftPoint.from_dict({"modules": modules}).describe()
            == "lora size 8 on query/value of 2 layer(s) at lr 0.003")
