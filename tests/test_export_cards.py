"""`autopeft export`: model cards, plain-PEFT folders where the point allows, portable base ids, `--merged` notes
and label names. Real (tiny) searches: a LoRA point, a LoRA + bottleneck mix, a point without a final stage."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.search_helpers import write_tiny_model, write_tiny_task

REPO = Path(__file__).resolve().parents[1]
LABELS = ("negative", "positive")
SPACES = {
    "lora": "name: tiny-lora\nmodules:\n  lora:\n    targets: [query, value]\n    size: 4\n",
    "mix": "name: tiny-mix\nmodules:\n  lora:\n    targets: [query, value]\n    size: 4\n"
           "  serial_adapter:\n    location: ffn\n    size: 8\n",
}
AUTOPEFT_IMPORT = "import autopeft  # registers autopeft's PEFT methods"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny BERT (its 0.2 init learns the task in 8 epochs) and the tiny task with named labels."""
    base = tmp_path_factory.mktemp("export-inputs")
    task = Path(write_tiny_task(base / "task"))
    for split in task.glob("*.tsv"):
        split.write_text(split.read_text().replace("\t0\n", f"\t{LABELS[0]}\n").replace("\t1\n", f"\t{LABELS[1]}\n"))
    return {"model": write_tiny_model(base / "model", initializer_range=0.2), "dataset": str(task), "base": base}


def search(inputs, space: str, final_seeds: int) -> Path:
    import optuna

    from autopeft.search.run import run_search
    from autopeft.search.settings import merge_settings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = inputs["base"] / f"{space}-{final_seeds}"
    (inputs["base"] / f"{space}.yaml").write_text(SPACES[space])
    run_search(merge_settings({}, dict(
        model=inputs["model"], dataset=inputs["dataset"], space=str(inputs["base"] / f"{space}.yaml"), trials=1,
        sampler="random", baselines=False, quasi_random=0, final_seeds=final_seeds, max_length=16, batch_size=16,
        fidelity=[1.0], lr=5e-2, epochs=8, out=str(folder))))
    return folder


@pytest.fixture(scope="module")
def lora_run(inputs):
    return search(inputs, "lora", final_seeds=2)


@pytest.fixture(scope="module")
def mix_run(inputs):
    return search(inputs, "mix", final_seeds=1)


def exported(autopeft, run: Path, out: Path, *flags):
    done = autopeft("export", run, "--out", out, *flags)
    assert done.returncode == 0, done.stderr
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return done, folder


def front_matter(card: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert match, card[:200]
    return yaml.safe_load(match.group(1))


def card_code(card: str) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", card, re.S)
    return code


def run_python(script: str, cwd: Path, with_autopeft: bool) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"}
    if with_autopeft:
        env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def local_paths(text: str, *paths) -> list[str]:
    return [str(p) for p in paths if str(p) in text]


def test_lora_point_is_plain_peft_with_a_portable_card_and_a_merged_model_with_label_names(
        autopeft, inputs, lora_run, tmp_path):
    done, folder = exported(autopeft, lora_run, tmp_path / "export", "--merged")
    assert "not merged" not in done.stderr
    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "peft" and "lora" in meta["tags"] and "base_model" not in meta  # not a Hub id
    assert "import autopeft" not in card and "pip install autopeft" not in card
    assert "`negative`" in card and "`positive`" in card and "classification" in card
    assert re.search(r"\| validation \| accuracy \| [\d.]+ ± [\d.]+ \|", card)  # two seeds: mean ± std
    assert "seeds 0, 1" in card and "final#" in card and "lora:" in card  # how it was found; the point's YAML
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "model"
    for text in (card, json.dumps(config), (folder / "metrics.json").read_text()):
        assert not local_paths(text, inputs["base"], tmp_path, REPO)
    assert json.loads((folder / "metrics.json").read_text())["loads_with"] == "peft"

    merged = json.loads((folder / "merged" / "config.json").read_text())
    assert merged["id2label"] == {"0": "negative", "1": "positive"}
    assert merged["label2id"] == {"negative": 0, "positive": 1}

    # the card's own code, in a process where autopeft cannot be imported (its base: the tiny model's folder)
    code = card_code(card).replace("base_model = 'model'", f"base_model = {inputs['model']!r}")
    script = "import sys\nsys.modules['autopeft'] = None  # import autopeft fails\n" + code + \
             "\nassert not any(name.startswith('autopeft') for name in sys.modules if sys.modules[name])\n"
    done = run_python(script, folder.parent, with_autopeft=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() in LABELS


def test_mix_with_a_bottleneck_adapter_card_imports_autopeft_and_its_code_loads(autopeft, inputs, mix_run, tmp_path):
    done, folder = exported(autopeft, mix_run, tmp_path / "export", "--merged")
    card = (folder / "README.md").read_text()
    assert AUTOPEFT_IMPORT in card and "pip install autopeft" in card
    meta = front_matter(card)
    assert meta["library_name"] == "peft" and {"autopeft", "lora", "bottleneck"} <= set(meta["tags"])
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "AUTOPEFT"
    assert json.loads((folder / "metrics.json").read_text())["loads_with"] == "autopeft"
    assert not local_paths(card + (folder / "adapter_config.json").read_text(), inputs["base"], tmp_path, REPO)

    # --merged: the console names the point it could not fold in, and why (one line per point)
    assert not (folder / "merged").exists()
    lines = [line for line in done.stderr.splitlines() if line.startswith("not merged:")]
    assert len(lines) == 1 and folder.name in lines[0] and "cannot be folded" in lines[0], done.stderr
    assert "No `merged/` copy: not mergeable" in card

    # without autopeft PEFT does not know the method; the card's code (import autopeft first) loads it
    code = card_code(card).replace("base_model = 'model'", f"base_model = {inputs['model']!r}")
    assert code.startswith(AUTOPEFT_IMPORT)
    without = code.split("\n", 1)[1].split("model = PeftModel")[0]  # the card's code up to loading, sans import
    script = (f"import sys\n{without}\nsys.modules['autopeft'] = None\n"
              "try:\n    PeftModel.from_pretrained(model, adapter)\nexcept KeyError as exc:\n"
              "    print('without autopeft: KeyError', exc)\nelse:\n    raise SystemExit('loaded without autopeft')\n"
              f"del sys.modules['autopeft']\n{code}")
    done = run_python(script, folder.parent, with_autopeft=True)
    assert done.returncode == 0, done.stderr[-2000:]
    first, label = done.stdout.strip().splitlines()
    assert first == "without autopeft: KeyError 'AUTOPEFT'" and label in LABELS


def test_a_point_without_an_adapter_gets_a_card_saying_why_and_a_merge_note(autopeft, inputs, tmp_path):
    run = search(inputs, "lora", final_seeds=0)
    done, folder = exported(autopeft, run, tmp_path / "export", "--merged")
    card = (folder / "README.md").read_text()
    assert "library_name" not in front_matter(card) and "holds no adapter" in card and "--final-seeds 0" in card
    assert "## Loading" not in card and not (folder / "adapter_config.json").exists()
    lines = [line for line in done.stderr.splitlines() if line.startswith("not merged:")]
    assert len(lines) == 1 and folder.name in lines[0] and "no trained adapter" in lines[0], done.stderr


def test_base_models_are_named_by_portable_ids(tmp_path):
    from autopeft.export.card import BaseModelId, portable_model_id

    assert portable_model_id("minilm").id == "sentence-transformers/all-MiniLM-L6-v2"
    smollm2 = portable_model_id("smollm2-135m")
    assert smollm2.id == "HuggingFaceTB/SmolLM2-135M-Instruct" and smollm2.on_hub and "GGUF" in smollm2.note
    assert portable_model_id("org/some-model") == BaseModelId("org/some-model", True)  # a Hub id as it is

    recorded = tmp_path / "copy"
    recorded.mkdir()
    (recorded / "config.json").write_text(json.dumps({"_name_or_path": "org/original"}))
    assert (portable_model_id(str(recorded)).id, portable_model_id(str(recorded)).on_hub) == ("org/original", True)
    local = tmp_path / "my-bert"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path / "elsewhere")}))
    for name in (str(local), str(tmp_path / "gone" / "my-bert"), "./my-bert"):
        named = portable_model_id(name)
        assert named.id == "my-bert" and not named.on_hub and str(tmp_path) not in named.id + named.note


@pytest.mark.parametrize("host", ["lora", "ia3"])
def test_lora_or_ia3_with_ln_tuning_exports_as_plain_peft_with_the_same_outputs(tmp_path, host):
    import copy

    from peft import PeftModel, get_peft_model
    from transformers import BertForSequenceClassification

    from autopeft.builders.build import build_peft_config
    from autopeft.export.plain import autopeft_methods, make_plain
    from autopeft.space.point import PeftPoint
    from tests.conftest import tiny_bert_config

    config = tiny_bert_config()
    torch.manual_seed(0)
    base = BertForSequenceClassification(config).eval()
    modules = {"ln_tuning": {"layers": [1]}, host: (
        {"layers": [0, 1], "size": {0: 4, 1: 2}, "targets": ["query", "value"]} if host == "lora"
        else {"layers": [0], "targets": ["key", "value", "ffn_out"]})}
    peft_config = build_peft_config(PeftPoint.from_dict({"modules": modules}), config, "classification")
    assert peft_config.peft_type == "AUTOPEFT"
    model = get_peft_model(copy.deepcopy(base), peft_config)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data.normal_(std=0.5)  # trained-looking weights, norms included
    model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter").eval()(input_ids=ids).logits

    assert "modules_to_save" in make_plain(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == host.upper() and not autopeft_methods(saved)
    assert "bert.encoder.layer.1.output.LayerNorm" in saved["modules_to_save"]
    with torch.no_grad():
        plain = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter").eval()(input_ids=ids).logits
    assert torch.equal(plain, expected)


def test_mixes_plain_peft_cannot_express_stay_autopeft(tmp_path):
    from autopeft.export.plain import make_plain, plain_form

    lora = {"peft_type": "LORA", "target_modules": ["query"]}
    for components in ([lora, {"peft_type": "BOTTLENECK"}], [lora, {"peft_type": "IA3"}],
                       [{"peft_type": "BITFIT"}, {"peft_type": "LN_TUNING"}]):
        assert plain_form({"peft_type": "AUTOPEFT", "components": components}, {}) is None
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "BOTTLENECK"}))
    assert make_plain(tmp_path) is None
