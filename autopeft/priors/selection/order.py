"""One cached ranking per (strategy, seed, data): every selection size afterwards is a free cut of it.

Also the helpers that turn loaded tasks into selection inputs: :func:`task_texts`, :func:`task_labels` and
:func:`pool_from_datasets` (a pool made of other datasets' training texts).
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from autopeft.data import TaskData, format_prompt, load_task
from autopeft.data.loading import column_values
from autopeft.errors import AutopeftError
from autopeft.priors.cache import atomic_folder, cached_path, read_entry
from autopeft.priors.selection.base import SelectionInputs, get_strategy
from autopeft.priors.selection.embeddings import texts_digest

ORDER_VERSION = 1  # part of the cache key: bump when a strategy's definition changes without a settings change
ORDER_FILE = "order.safetensors"
META_FILE = "meta.json"


def texts_fingerprint(texts: list[str]) -> str:
    """A stable hash of the texts, in order."""
    return texts_digest(list(texts))


def selection_fingerprint(inputs: SelectionInputs, embedding: dict | None = None) -> dict:
    """Everything about the data that decides a ranking: pool texts and labels, target texts, the embedder.

    ``embedding``: what identifies the embedding function (e.g. ``{"model": encoder_signature(m),
    "max_length": 128}``); ``None`` when no embeddings are used. Pass the result to :func:`load_or_compute_order`.
    """
    labels = None
    if inputs.pool_labels is not None:
        array = np.ascontiguousarray(inputs.pool_labels)
        labels = hashlib.sha256(str(array.dtype).encode() + array.tobytes()).hexdigest()[:16]
    target = None
    if inputs.target_texts is not None:
        target = "pool" if inputs.target_is_pool else texts_fingerprint(inputs.target_texts)
    return {"pool": texts_fingerprint(inputs.pool_texts), "pool_size": len(inputs), "labels": labels,
            "target": target, "embedding": embedding}


def load_or_compute_order(strategy: str, inputs: SelectionInputs, seed: int, *,
                          fingerprint: dict) -> tuple[np.ndarray, dict, bool]:
    """The strategy's full ranking of the pool, from the cache or computed and cached; and its meta and a hit flag.

    ``fingerprint`` must identify the data (see :func:`selection_fingerprint`); the strategy's own settings are
    added to the key here. The inputs are checked first, so a missing target or label is an error even when a
    ranking is cached. ``meta`` holds the strategy, seed, pool size, seconds and what the strategy reported.
    """
    from safetensors.numpy import load_file, save_file

    chosen = get_strategy(strategy)
    chosen.check(inputs)
    folder = cached_path("selection", strategy=chosen.name, seed=int(seed), fingerprint=fingerprint,
                         settings=chosen.settings(), version=ORDER_VERSION)

    def read(entry):
        return load_file(str(entry / ORDER_FILE))["order"], json.loads((entry / META_FILE).read_text())

    cached = read_entry(folder, read)
    if cached is not None:
        order, meta = cached
        if len(order) != len(inputs):
            raise AutopeftError(f"the cached '{chosen.name}' ranking has {len(order)} entries but the pool has "
                                f"{len(inputs)}: the fingerprint does not identify the pool")
        return order, meta, True
    start = time.perf_counter()
    order = chosen.order(inputs, seed)
    meta = {"strategy": chosen.name, "seed": int(seed), "pool_size": len(inputs),
            "target_size": None if inputs.target_texts is None else len(inputs.target_texts),
            "settings": chosen.settings(), "seconds": round(time.perf_counter() - start, 3),
            "info": chosen.info, "version": ORDER_VERSION}
    with atomic_folder(folder) as staging:
        save_file({"order": np.ascontiguousarray(order, dtype=np.int64)}, str(staging / ORDER_FILE),
                  metadata={"format": "autopeft-selection-order"})
        (staging / META_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
    return order, json.loads((folder / META_FILE).read_text()), False


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def task_texts(task: TaskData, split: str = "train") -> list[str]:
    """The text of every example of a split: the text (+ " " + the pair); causal LM: prompt + response."""
    dataset = _split(task, split)
    spec = task.spec
    if spec.kind == "causal_lm" and not spec.is_verbalized:
        prompts = [format_prompt(spec, row) for row in dataset.select_columns(list(spec.prompt_columns))]
        responses = column_values(dataset, spec.response_column)
        return [prompt + ("" if response is None else str(response)) for prompt, response in zip(prompts, responses)]
    texts = [_as_text(text) for text in column_values(dataset, spec.text_column)]
    if spec.text_pair_column is None:
        return texts
    pairs = column_values(dataset, spec.text_pair_column)
    return [f"{text} {_as_text(pair)}" for text, pair in zip(texts, pairs)]


def task_labels(task: TaskData, split: str = "train") -> np.ndarray | None:
    """Class ids (int64; verbalised classification too) or regression targets (float32) of a split; None for
    causal LM."""
    dataset = _split(task, split)
    if task.spec.kind == "causal_lm" and not task.spec.is_verbalized:
        return None
    values = column_values(dataset, task.spec.label_column)
    return np.asarray(values, dtype=np.float32 if task.spec.kind == "regression" else np.int64)


def pool_from_datasets(paths: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """The training texts of other datasets, concatenated: (texts, sources).

    Each dataset is read with :func:`autopeft.data.load_task` (kind and columns detected as for ``--dataset``)
    and contributes :func:`task_texts` of its train split (labels are not used: the pool is unlabelled).
    ``sources[i]`` is (dataset name, row index in that dataset's train split as ``load_task`` returns it,
    i.e. after its held-out splits were carved off).
    """
    if not paths:
        raise AutopeftError("the pool needs at least one dataset")
    texts: list[str] = []
    sources: list[tuple[str, int]] = []
    for path in paths:
        task = load_task(path)
        part = task_texts(task, "train")
        texts.extend(part)
        sources.extend((task.name, row) for row in range(len(part)))
    return texts, sources


def _split(task: TaskData, split: str):
    dataset = getattr(task, split, None) if split in ("train", "validation", "test") else None
    if dataset is None:
        raise AutopeftError(f"task '{task.name}' has no split '{split}'")
    return dataset


def _as_text(value) -> str:
    return "" if value is None else str(value)


__all__ = [
    "load_or_compute_order",
    "pool_from_datasets",
    "selection_fingerprint",
    "task_labels",
    "task_texts",
    "texts_fingerprint",
]
