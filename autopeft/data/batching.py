"""Length-grouped batches (little padding, still random for training) and right-padding collate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from autopeft.data.tokenize import IGNORE_INDEX, RaggedArray, TokenizedSplit

MEGA_BATCH_FACTOR = 50  # training batches are length-sorted within windows of 50 batches


def length_grouped_batches(
    lengths: Sequence[int] | np.ndarray, batch_size: int, *, seed: int, shuffle: bool = True
) -> list[np.ndarray]:
    """Index batches that cover every example exactly once.

    shuffle=True (training): shuffle indices, cut them into mega-batches of 50 * batch_size, sort
    each by length (longest first), split into batches and shuffle the batch order; all seeded.
    shuffle=False (evaluation): sort everything by length, longest first, for minimal padding.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = np.asarray(lengths)
    if not shuffle:
        return _split(_longest_first(np.arange(len(lengths)), lengths), batch_size)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    mega = batch_size * MEGA_BATCH_FACTOR
    batches = [
        batch
        for start in range(0, len(order), mega)
        for batch in _split(_longest_first(order[start : start + mega], lengths), batch_size)
    ]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(
    split: TokenizedSplit, indices: Sequence[int] | np.ndarray, pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad the rows `indices` of `split` to the longest of them.

    Returns input_ids, attention_mask, token_type_ids (when the split has them) and labels:
    int64 class ids, float32 regression targets, or causal token labels padded with -100.
    """
    indices = np.asarray(indices, dtype=np.int64)
    width = int(split.lengths[indices].max()) if len(indices) else 0
    batch = {
        "input_ids": _pad(split.input_ids, indices, width, pad_token_id),
        "attention_mask": _attention_mask(split.lengths[indices], width),
    }
    if split.token_type_ids is not None:
        batch["token_type_ids"] = _pad(split.token_type_ids, indices, width, 0)
    if split.kind == "causal_lm":
        batch["labels"] = _pad(split.labels, indices, width, IGNORE_INDEX)
    else:
        dtype = torch.float32 if split.kind == "regression" else torch.long
        batch["labels"] = torch.as_tensor(split.labels[indices], dtype=dtype)
    return batch


def _longest_first(indices: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    # Stable sort, so equal lengths keep their (shuffled or original) order.
    return indices[np.argsort(-lengths[indices], kind="stable")]


def _split(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]


def _pad(rows: RaggedArray, indices: np.ndarray, width: int, value: int) -> torch.Tensor:
    padded = np.full((len(indices), width), value, dtype=np.int64)
    for position, index in enumerate(indices):
        row = rows[index]
        padded[position, : len(row)] = row
    return torch.from_numpy(padded)


def _attention_mask(lengths: np.ndarray, width: int) -> torch.Tensor:
    return torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))
