"""Verbalised classification: a labelled dataset read as a causal LM task (label words as the answers, no new head),
end to end on a tiny Llama: reading the task, tokenising it, scoring by the label words, a trial from the CLI, a
search, and the export's card and adapter."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from autopeft.data import load_task, tokenize_task
from autopeft.errors import DataError
from tests.cli_helpers import assert_one_line_error, run_main
from tests.conftest import SHARED_DATASETS, tiny_llama_config
from tests.search_helpers import VOCAB, write_tiny_task

WORDS = ("bad", "good")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The tiny sentiment task (labels 0/1) and a tiny Llama with the MiniLM tokenizer (eos = [SEP])."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from autopeft.models import resolve_model

    base = tmp_path_factory.mktemp("verbalized")
    torch.manual_seed(0)
    llama = LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                                               initializer_range=0.2))
    llama.save_pretrained(base / "llama")
    AutoTokenizer.from_pretrained(resolve_model("minilm").path).save_pretrained(base / "llama")
    return {"model": str(base / "llama"), "dataset": write_tiny_task(base / "task"), "base": base}


def test_a_labelled_dataset_read_as_causal_lm_is_verbalised_classification(inputs):
    named = load_task(inputs["dataset"], task="causal_lm")
    spec = named.spec
    assert spec.kind == "causal_lm" and spec.is_verbalized and spec.is_classification
    assert spec.verbalizer == ("0", "1") and spec.metric == "accuracy" and spec.num_labels == 0
    assert spec.metrics == ("accuracy", "macro_f1", "mcc", "eval_loss")
    worded = load_task(inputs["dataset"], verbalizer="bad, good", metric="mcc").spec
    assert worded.kind == "causal_lm" and worded.verbalizer == WORDS and worded.metric == "mcc"


@pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason="shared datasets not found")
def test_a_question_answer_dataset_stays_generative():
    spec = load_task(str(SHARED_DATASETS / "gsm8k"), task="causal_lm").spec
    assert not spec.is_verbalized and spec.response_column == "answer" and spec.metric == "exact_match"


@pytest.mark.parametrize("options, message", [
    (dict(verbalizer="bad,good,fine"), "3 word(s) for 2 classes"),
    (dict(verbalizer="good,good"), "repeats 'good'"),
    (dict(verbalizer="bad,good", response_column="sentence"), "does not go with --prompt-column/--response-column"),
    (dict(verbalizer="bad,good", task="regression"), "not a regression one"),
    (dict(verbalizer="bad,good", metric="exact_match"), "does not apply to a verbalised classification task"),
])
def test_verbalizer_mistakes_are_data_errors(inputs, options, message):
    with pytest.raises(DataError, match=re.escape(message)):
        load_task(inputs["dataset"], **options)


def test_real_valued_labels_have_no_words(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tscore\n" + "".join(f"s {i}\t{i / 3:.2f}\n" for i in range(40)))
    with pytest.raises(DataError, match="no label words"):
        load_task(str(tmp_path / "train.tsv"), task="causal_lm")


@pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason="shared datasets not found")
def test_an_alias_brings_its_label_words():
    assert load_task("trec", task="causal_lm").spec.verbalizer == (
        "abbreviation", "description", "entity", "human", "location", "number")


def test_prompts_end_with_the_choices_and_the_loss_is_on_the_word_and_eos(inputs):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(inputs["model"])
    data = load_task(inputs["dataset"], verbalizer="bad,good")
    tokenized = tokenize_task(data, tokenizer, max_length=32)
    split = tokenized.train
    words = [tokenizer.convert_tokens_to_ids(w) for w in WORDS]
    assert tokenized.choice_token_ids == tuple(words)
    assert np.array_equal(split.classes, np.asarray(data.train["label"]))
    for row in range(3):
        ids, labels = split.input_ids[row].tolist(), split.labels[row].tolist()
        answer = [i for i, label in enumerate(labels) if label != -100]
        assert [ids[i] for i in answer] == [words[split.classes[row]], tokenizer.sep_token_id]  # word + eos
        assert labels[: answer[0]] == [-100] * answer[0]
        assert tokenizer.decode(ids[: answer[0]]).endswith("answer ( bad / good ) : [SEP]")


def test_label_words_that_share_their_first_token_are_refused_before_training(inputs):
    from autopeft.models import get_base_model
    from autopeft.trial import TrialRunner

    data = load_task(inputs["dataset"], verbalizer="xylophonea,xylophoneb")  # BERT: x ##yl ##ophone ##a / ##b
    with pytest.raises(DataError, match="start with the same token"):
        TrialRunner(get_base_model(inputs["model"], "causal_lm"), data)


def test_the_prediction_is_the_likeliest_label_word_right_after_the_prompt():
    from autopeft.trial.runner import verbalized_predictions

    logits = torch.zeros(2, 5, 10)
    labels = torch.full((2, 5), -100)
    labels[0, 3:] = torch.tensor([7, 2])   # prompt of 3 tokens: the answer's first token is predicted at 2
    labels[1, 2:4] = torch.tensor([8, 2])  # prompt of 2 tokens: at 1
    logits[0, 2, 8] = 5.0   # row 0 says word 1 ...
    logits[0, 3, 7] = 9.0   # ... (a later position does not count)
    logits[1, 1, 7] = 1.0   # row 1 says word 0
    logits[1, 1, 3] = 9.0   # a token that is no label word does not count
    assert verbalized_predictions(logits, labels, (7, 8)).tolist() == [1, 0]


def test_trial_search_and_export_on_a_tiny_llama(inputs, capfd, tmp_path):
    """From the CLI: a trial, then a one-trial search and its export; the adapter loads with PEFT, generates, and
    the card's code classifies by the label words."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common = ["--model", inputs["model"], "--dataset", inputs["dataset"], "--verbalizer", "bad,good",
              "--max-length", "32", "--batch-size", "16"]
    done = run_main(["trial", *common, "--epochs", "4", "--lr", "5e-3", "--json", tmp_path / "trial.json"], capfd)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "trial.json").read_text())
    assert record["status"] == "ok" and {"accuracy", "macro_f1", "mcc", "eval_loss"} <= set(record["metrics"])
    assert 0.5 <= record["trivial_metric"] < 1  # the majority class of the tiny task's validation rows

    space = tmp_path / "space.yaml"
    space.write_text("name: tiny-lora\nmodules:\n  lora:\n    targets: [query, value]\n    size: 4\n")
    run = tmp_path / "run"
    done = run_main(["search", *common, "--space", space, "--trials", "1", "--sampler", "random", "--no-baselines",
                     "--quasi-random", "0", "--final-seeds", "1", "--fidelity", "1", "--epochs", "8", "--lr", "2e-2",
                     "--out", run, "-q"], capfd)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "run.json").read_text())["settings"]["verbalizer"] == ["bad", "good"]
    done = run_main(["export", run, "--out", tmp_path / "export"], capfd)
    assert done.returncode == 0, done.stderr
    folder = next(p for p in (tmp_path / "export").iterdir() if p.is_dir())
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    card = (folder / "README.md").read_text()
    assert "`0` → `bad`, `1` → `good`" in card and "text-generation" in card

    tokenizer = AutoTokenizer.from_pretrained(inputs["model"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(inputs["model"]), str(folder)).eval()
    prompt = tokenizer("the movie was good\nAnswer (bad / good):", return_tensors="pt", return_token_type_ids=False)
    generated = model.generate(**prompt, max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 2
    (code,) = re.findall(r"```python\n(.*?)```", card, re.S)
    namespace: dict = {}
    code = code.replace("base_model = 'llama'", f"base_model = {inputs['model']!r}").replace(
        f"adapter = {folder.name!r}", f"adapter = {str(folder)!r}")
    exec(compile(code.replace("print(", "answer = ("), "card", "exec"), namespace)  # noqa: S102 - our own card
    assert namespace["answer"] in WORDS


def test_a_verbalizer_the_dataset_cannot_take_is_a_one_line_error_before_the_model_loads(inputs, capfd):
    done = run_main(["trial", "--model", "no/such-model", "--dataset", inputs["dataset"], "--verbalizer", "a,b,c"],
                    capfd)
    assert_one_line_error(done, "3 word(s) for 2 classes")
