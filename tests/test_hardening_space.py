"""Search-space inputs: every shipped space works with `space show|sample` on both families; bad input is one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from autopeft.errors import SpaceError
from autopeft.space import SearchSpace, parse_space, read_space_file
from tests.cli_helpers import assert_one_line_error
from tests.conftest import tiny_bert_config, tiny_llama_config

SPACES = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Both families: the offline MiniLM alias (BERT) and a tiny random Llama config in a folder."""
    llama = tmp_path_factory.mktemp("llama")
    tiny_llama_config(hidden_size=128).save_pretrained(llama)
    return {"bert": "minilm", "llama": str(llama)}


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("space", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_shows_and_samples_on_both_families(autopeft, models, space, family):
    done = autopeft("space", "show", space, "--model", models[family], "--samples", "20")
    assert done.returncode == 0, done.stderr
    assert "space size" in done.stdout and "trainable parameters" in done.stdout
    done = autopeft("space", "sample", space, "--model", models[family], "-n", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("# point") == 3


def test_the_largest_point_of_a_space_with_several_categoricals_decodes():
    from autopeft.cli.space import _largest_point
    from autopeft.space import count_trainable_params

    space = SearchSpace.from_file(next(p for p in SPACES if p.name == "unified.yaml"), tiny_bert_config())
    largest = _largest_point(space)
    assert {"lora.alpha", "lora.targets", "serial_adapter.location"} <= set(largest)
    assert count_trainable_params(space.decode(largest), space.model_config) > 0


@pytest.mark.parametrize("args, message", [
    (["space", "show", "{lora}", "--model", "minilm", "--samples", "0"], "--samples must be at least 1, got 0"),
    (["space", "show", "{lora}", "--model", "minilm", "--samples", "-3"], "--samples must be at least 1"),
    (["space", "sample", "{lora}", "--model", "minilm", "-n", "0"], "-n must be at least 1, got 0"),
    (["space", "show", "{binary}", "--model", "minilm"], "is not a text file"),
    (["space", "sample", "{zero}", "--model", "minilm"],
     "field 'modules.lora.size.grid': a grid needs at least one size > 0"),
])
def test_bad_space_command_input_is_one_line(autopeft, tmp_path, args, message):
    binary = tmp_path / "space.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    zero = tmp_path / "zero.yaml"
    zero.write_text("name: z\nmodules:\n  lora:\n    size: {grid: [0]}\n")
    paths = {"{lora}": str(SPACES[1]), "{binary}": str(binary), "{zero}": str(zero)}
    done = autopeft(*[paths.get(a, a) for a in args])
    assert_one_line_error(done, message)
    if "{binary}" in args:
        assert str(binary) in done.stderr


@pytest.mark.parametrize("size, message", [
    ("{grid: [0]}", "a grid needs at least one size > 0"),
    ("{grid: [0, 0], tie: per_layer}", "a grid needs at least one size > 0"),
    ("{grid: [1, .inf]}", "sizes must be finite"),
    ("{grid: [2, 4], scale_to_hidden: 0}", "field 'modules.lora.size.scale_to_hidden'"),
    ("0", "a fixed size must be a number > 0"),
    ("-4", "a fixed size must be a number > 0"),
    ("true", "a size must be a number or {grid: [...]}"),
])
def test_sizes_that_never_switch_a_module_on_are_rejected_by_the_schema(size, message):
    with pytest.raises(SpaceError, match="field 'modules.lora.size") as info:
        parse_space({"name": "x", "modules": {"lora": yaml.safe_load(f"size: {size}")}}, "x.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_grid_with_an_off_size_and_a_real_one_is_still_fine():
    spec = parse_space({"name": "x", "modules": {"lora": {"size": {"grid": [0, 4]}}}}, "x.yaml")
    assert SearchSpace(spec, tiny_bert_config()).grids["lora"] == [0, 4]


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not a text file (not UTF-8)"),
    (b"name: x\x00\nmodules: {ia3: {}}\n", "is not a text file (it holds NUL bytes)"),
    (b"name: x\x01\nmodules: {ia3: {}}\n", "invalid YAML"),
])
def test_a_binary_space_file_is_a_space_error_naming_it(tmp_path, content, message):
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    with pytest.raises(SpaceError, match=re.escape(message)) as info:
        read_space_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_folder_given_as_the_space_file(tmp_path):
    with pytest.raises(SpaceError, match="is a folder, not a YAML file"):
        read_space_file(tmp_path)


def test_search_with_an_all_zero_grid_fails_before_writing_anything(autopeft, tmp_path):
    from tests.search_helpers import write_tiny_model, write_tiny_task

    space = tmp_path / "zero.yaml"
    space.write_text("name: z\nmodules:\n  lora:\n    size: {grid: [0]}\n")
    out = tmp_path / "run"
    done = autopeft("search", "--model", write_tiny_model(tmp_path / "model"), "--dataset",
                    write_tiny_task(tmp_path / "task"), "--space", space, "--trials", "1", "--out", out)
    assert_one_line_error(done, "a grid needs at least one size > 0")
    assert not out.exists() or not any(out.iterdir())


def test_decoding_a_point_without_a_needed_parameter_is_a_space_error():
    space = SearchSpace.from_file(next(p for p in SPACES if p.name == "unified.yaml"), tiny_bert_config())
    with pytest.raises(SpaceError, match="point is missing parameter 'lora.alpha'"):
        space.decode({"lora.on": 1, "lora.size_level": 0, "lora.targets": "query+value", "lora.layer_0": 1})
