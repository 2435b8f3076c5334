"""`tokenize_task`: tokenise every split of a TaskData once, unpadded, for `batching.collate`.

Classification / regression: `tokenizer(text[, pair], truncation=True, max_length=...)` with the
tokenizer's own special tokens; labels are int64 class ids or float32 targets.

Causal LM: input_ids = prompt_ids + response_ids + [eos], labels are -100 on the prompt so the
loss covers the response (and eos) only. Prompt templates (`format_prompt`):
- instruction data (Alpaca):
  "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
  (the Input block is left out when the input is empty);
- question data (GSM8K): "Question: {question}\nAnswer: ";
- any other prompt columns: their non-empty values, one per line, then a newline.
Examples longer than max_length keep at least a quarter of max_length of response tokens; the
prompt loses tokens from the left first (`fit_causal_example`).

Verbalised classification (`TaskSpec.is_verbalized`): the prompt is the text (and its pair, on the
next line), then "Answer ({word_0} / {word_1} / ...):"; the response is " {word}" and eos, trained
like any causal example. `TokenizedTask.choice_token_ids` holds each word's first token: the
classes are told apart by that token's logit right after the prompt (`verbalized_predictions`), so
the words must differ in their first token.

Results are cached in-process by (data fingerprint, tokenizer name + class + size, max_length).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from autopeft.data.loading import column_values
from autopeft.data.tasks import TaskData, TaskSpec
from autopeft.errors import DataError

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips

_TOKENIZED_CACHE_SIZE = 4
_tokenized_cache: OrderedDict[tuple, TokenizedTask] = OrderedDict()


@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous; compare rows instead
class RaggedArray:
    """Rows of different lengths stored flat (values + offsets): compact and quick to pickle.

    `ragged[i]` is a NumPy view of row i; `tolist()` gives plain lists of ints.
    """

    values: np.ndarray
    offsets: np.ndarray  # row i is values[offsets[i]:offsets[i + 1]]

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]], dtype: Any = np.int64) -> RaggedArray:
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = itertools.chain.from_iterable(rows)
        values = np.fromiter(flat, dtype=dtype, count=int(offsets[-1]))
        return cls(values=values, offsets=offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        row = range(len(self))[index]  # IndexError and negative indices as for a list
        return self.values[self.offsets[row] : self.offsets[row + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def tolist(self) -> list[list[int]]:
        return [row.tolist() for row in self]


@dataclass(eq=False)
class TokenizedSplit:
    """One split, unpadded. For causal_lm, `labels` is ragged like `input_ids`."""

    kind: str
    input_ids: RaggedArray
    labels: np.ndarray | RaggedArray  # int64 ids | float32 targets | per-token ids (-100 on prompt)
    lengths: np.ndarray
    token_type_ids: RaggedArray | None = None  # when the tokenizer makes them (BERT)
    prompt_ids: RaggedArray | None = None  # causal_lm: the (truncated) prompt, for generation
    responses: list[str] | None = None  # causal_lm: raw reference responses, for exact match
    classes: np.ndarray | None = None  # verbalised classification: the class id of each example

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(eq=False)
class TokenizedTask:
    """Every split of a task, tokenised. Cached by `tokenize_task`: treat as read-only."""

    spec: TaskSpec
    name: str
    fingerprint: str  # the TaskData's
    max_length: int
    pad_token_id: int  # the tokenizer's pad token, else its eos (the model side is the runner's)
    train: TokenizedSplit
    validation: TokenizedSplit
    test: TokenizedSplit | None
    choice_token_ids: tuple[int, ...] = ()  # verbalised classification: each label word's first token

    def __getitem__(self, name: str) -> TokenizedSplit:
        """`tokenized["validation"]`; KeyError for an unknown or absent split."""
        if name not in ("train", "validation", "test") or getattr(self, name) is None:
            raise KeyError(f"no split '{name}' in tokenized task '{self.name}'")
        return getattr(self, name)


def tokenize_task(data: TaskData, tokenizer: Any, max_length: int) -> TokenizedTask:
    """Tokenise train, validation and test of `data`; cached, so call it freely."""
    if max_length < 2:
        raise DataError(f"max_length must be at least 2, got {max_length}")
    # A tokenizer built in memory has no name: fall back to the object's identity.
    tokenizer_name = tokenizer.name_or_path or f"object-{id(tokenizer)}"
    key = (data.fingerprint, tokenizer_name, type(tokenizer).__name__, len(tokenizer), max_length)
    if key in _tokenized_cache:
        _tokenized_cache.move_to_end(key)
        return _tokenized_cache[key]

    choices = choice_token_ids(data.spec, tokenizer) if data.spec.is_verbalized else ()
    if data.spec.is_verbalized:
        tokenize_split = _tokenize_verbalized
    else:
        tokenize_split = _tokenize_causal if data.spec.kind == "causal_lm" else _tokenize_labelled
    datasets_by_split = {"train": data.train, "validation": data.validation, "test": data.test}
    splits = {
        name: None if dataset is None else tokenize_split(dataset, data.spec, tokenizer, max_length)
        for name, dataset in datasets_by_split.items()
    }
    tokenized = TokenizedTask(
        spec=data.spec, name=data.name, fingerprint=data.fingerprint, max_length=max_length,
        pad_token_id=_pad_token_id(tokenizer), choice_token_ids=choices, **splits,
    )
    _tokenized_cache[key] = tokenized
    if len(_tokenized_cache) > _TOKENIZED_CACHE_SIZE:
        _tokenized_cache.popitem(last=False)
    return tokenized


def clear_tokenization_cache() -> None:
    _tokenized_cache.clear()


def format_prompt(spec: TaskSpec, example: Mapping[str, Any]) -> str:
    """The prompt text of one causal-LM example (templates in the module docstring)."""
    fields = [_as_text(example.get(column)) for column in spec.prompt_columns]
    if spec.prompt_columns[0] == "instruction":
        prompt = f"### Instruction:\n{fields[0]}\n\n"
        extra = "\n\n".join(f for f in fields[1:] if f.strip())
        if extra:
            prompt += f"### Input:\n{extra}\n\n"
        return prompt + "### Response:\n"
    if spec.prompt_columns == ("question",):
        return f"Question: {fields[0]}\nAnswer: "
    return "".join(f"{field}\n" for field in fields if field.strip())


def verbalized_prompt(spec: TaskSpec, text: str, pair: str | None = None) -> str:
    """The prompt of one verbalised classification example (template in the module docstring)."""
    lines = [text] + ([pair] if pair is not None else [])
    return "\n".join(lines) + f"\nAnswer ({' / '.join(spec.verbalizer)}):"


def verbalized_response(word: str) -> str:
    """The answer text after the prompt: a space, then the label word (eos follows as a token)."""
    return f" {word}"


def fit_causal_example(
    prompt_ids: list[int], response_ids: list[int], max_length: int
) -> tuple[list[int], list[int]]:
    """Trim (prompt, response) to fit max_length together.

    The response keeps what room the whole prompt leaves, but never less than
    min(len(response), max(1, max_length // 4)) tokens; the prompt then loses its leftmost tokens.
    """
    if len(prompt_ids) + len(response_ids) <= max_length:
        return prompt_ids, response_ids
    min_response = min(len(response_ids), max(1, max_length // 4))
    response_ids = response_ids[: max(min_response, max_length - len(prompt_ids))]
    prompt_room = max_length - len(response_ids)
    return prompt_ids[max(0, len(prompt_ids) - prompt_room) :], response_ids


def _tokenize_labelled(
    dataset: datasets.Dataset, spec: TaskSpec, tokenizer: Any, max_length: int
) -> TokenizedSplit:
    texts = _texts(dataset, spec.text_column)
    pairs = _texts(dataset, spec.text_pair_column) if spec.text_pair_column else None
    encoded = tokenizer(
        texts, pairs, truncation=True, max_length=max_length, return_attention_mask=False
    )
    input_ids = RaggedArray.from_rows(encoded["input_ids"])
    token_type_rows = encoded.get("token_type_ids")
    label_dtype = np.float32 if spec.kind == "regression" else np.int64
    return TokenizedSplit(
        kind=spec.kind,
        input_ids=input_ids,
        labels=np.asarray(column_values(dataset, spec.label_column), dtype=label_dtype),
        lengths=input_ids.lengths,
        token_type_ids=None if token_type_rows is None else RaggedArray.from_rows(token_type_rows),
    )


def _tokenize_causal(
    dataset: datasets.Dataset, spec: TaskSpec, tokenizer: Any, max_length: int
) -> TokenizedSplit:
    prompt_values = {column: column_values(dataset, column) for column in spec.prompt_columns}
    prompts = [
        format_prompt(spec, dict(zip(prompt_values, row))) for row in zip(*prompt_values.values())
    ]
    responses = _texts(dataset, spec.response_column)
    # No truncation here (fit_causal_example trims); verbose=False hides the too-long warning.
    plain = dict(return_attention_mask=False, verbose=False)
    prompt_rows = tokenizer(prompts, **plain)["input_ids"]
    response_rows = tokenizer(responses, add_special_tokens=False, **plain)["input_ids"]
    return _causal_split(spec, prompt_rows, response_rows, _eos_token_ids(tokenizer), max_length, responses)


def _causal_split(spec: TaskSpec, prompt_rows, response_rows, eos: list[int], max_length: int,
                  responses: list[str], classes: np.ndarray | None = None) -> TokenizedSplit:
    """Prompt + response + eos per example, fitted to ``max_length``; the loss on the response and eos only."""
    input_rows, label_rows, kept_prompts = [], [], []
    for prompt, response in zip(prompt_rows, response_rows):
        prompt, response = fit_causal_example(prompt, response + eos, max_length)
        input_rows.append(prompt + response)
        label_rows.append([IGNORE_INDEX] * len(prompt) + response)
        kept_prompts.append(prompt)
    input_ids = RaggedArray.from_rows(input_rows)
    return TokenizedSplit(
        kind=spec.kind,
        input_ids=input_ids,
        labels=RaggedArray.from_rows(label_rows),
        lengths=input_ids.lengths,
        prompt_ids=RaggedArray.from_rows(kept_prompts),
        responses=responses,
        classes=classes,
    )


def _tokenize_verbalized(
    dataset: datasets.Dataset, spec: TaskSpec, tokenizer: Any, max_length: int
) -> TokenizedSplit:
    texts = _texts(dataset, spec.text_column)
    pairs = _texts(dataset, spec.text_pair_column) if spec.text_pair_column else [None] * len(texts)
    classes = np.asarray(column_values(dataset, spec.label_column), dtype=np.int64)
    plain = dict(return_attention_mask=False, verbose=False)
    prompt_rows = tokenizer([verbalized_prompt(spec, t, p) for t, p in zip(texts, pairs)], **plain)["input_ids"]
    word_rows = tokenizer([verbalized_response(w) for w in spec.verbalizer], add_special_tokens=False,
                          **plain)["input_ids"]
    return _causal_split(spec, prompt_rows, [word_rows[label] for label in classes], _eos_token_ids(tokenizer),
                         max_length, [spec.verbalizer[c] for c in classes], classes)


def choice_token_ids(spec: TaskSpec, tokenizer: Any) -> tuple[int, ...]:
    """Each label word's first token after the prompt; a DataError when two words share it."""
    rows = tokenizer([verbalized_response(w) for w in spec.verbalizer], add_special_tokens=False)["input_ids"]
    if any(not row for row in rows):
        raise DataError("a --verbalizer word tokenises to nothing")
    first = tuple(int(row[0]) for row in rows)
    for i, token in enumerate(first):
        twin = first.index(token)
        if twin != i:
            piece = tokenizer.convert_ids_to_tokens(token)
            raise DataError(f"label words '{spec.verbalizer[twin]}' and '{spec.verbalizer[i]}' start with the same "
                            f"token ({piece!r}), so a causal LM cannot tell them apart by their first token; "
                            "pass --verbalizer with words that start differently")
    return first


def _texts(dataset: datasets.Dataset, column: str) -> list[str]:
    return [_as_text(value) for value in column_values(dataset, column)]


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


def _eos_token_ids(tokenizer: Any) -> list[int]:
    """[eos], or [sep] for encoder tokenizers (BERT) that have no eos; [] when neither exists."""
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return [token_id]
    return []


def _pad_token_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    eos = _eos_token_ids(tokenizer)
    return eos[0] if eos else 0
