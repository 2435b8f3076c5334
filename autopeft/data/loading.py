"""`load_task`: read a dataset into a TaskData with train / validation / test splits.

Sources, tried in this order:
- a local file (csv, tsv, json, jsonl, parquet): the train split; validation and test are carved;
- a local folder of split files: `train.*`, `dev.*` | `validation.*` | `valid.*` | `val.*`,
  `test.*` (HF-style shards `train-00000-of-00002.parquet` are joined);
- a dataset alias (`sst2`, `rte`, `trec`; `autopeft/data/aliases.py`): its local copy under
  `$AUTOPEFT_DATASETS`, `./datasets` or `../shared/datasets`, else the Hub's copy;
- anything else is a Hub id, loaded with `datasets.load_dataset(dataset, dataset_config)`.
  A string that looks like a path (starts with `.`, `/` or `~`, has a data-file extension, or has
  more than one `/`) is never sent to the Hub: it is reported as a missing file or folder.

Split rule: a validation or test split counts only when it is labelled.
- validation and test both labelled: used as they are (STS-B);
- only validation (GLUE: unlabelled or missing test): dev becomes `test`, validation is carved;
- only test (TREC, GSM8K): `test` kept, validation carved;
- neither (Code Alpaca, a single file): test is carved first, then validation from the rest.
Each carve is `validation_fraction` of the original train size, at most `max_validation` rows,
seeded, and stratified by label for classification when every class has two rows or more.

TSV files are read without quote handling (GLUE text has literal quotes). A csv/tsv file whose
first row holds a number is taken to have no header: see `headerless_column_names`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from sklearn.model_selection import train_test_split

from autopeft.data.aliases import resolve_dataset_alias
from autopeft.data.tasks import TaskData, TaskSpec, check_verbalizer, infer_spec, require_column
from autopeft.errors import DataError

BUILDER_BY_EXTENSION = {
    "csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet",
}
SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "dev", "valid", "val"),
    "test": ("test",),
}
# GLUE CoLA ships without a header: source, acceptability label, original mark, sentence.
COLA_COLUMNS = ("source", "label", "original_label", "sentence")

_FORMAT_VERSION = 1  # bump when processing changes, so fingerprints (and caches on them) change
_FULL_HASH_LIMIT = 64 * 2**20  # larger files are fingerprinted by size + first and last MiB
_TASK_CACHE_SIZE = 8
_task_cache: OrderedDict[str, TaskData] = OrderedDict()
_SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class _Source:
    kind: str  # "file" | "folder" | "hub"
    name: str
    location: str  # path or hub id
    config: str | None = None
    split_files: tuple[tuple[str, tuple[Path, ...]], ...] = ()  # local sources only

    def signature(self) -> dict[str, Any]:
        """What identifies the data: file names and contents, or the hub id and config."""
        if self.kind == "hub":
            return {"hub": self.location, "config": self.config}
        return {
            split: [[path.name, _file_digest(path)] for path in paths]
            for split, paths in self.split_files
        }


def load_task(
    dataset: str | os.PathLike[str],
    *,
    dataset_config: str | None = None,
    task: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    prompt_columns: str | Sequence[str] | None = None,
    response_column: str | None = None,
    metric: str | None = None,
    verbalizer: str | Sequence[str] | None = None,
    validation_fraction: float = 0.1,
    max_validation: int | None = 2000,
    seed: int = 0,
) -> TaskData:
    """Load `dataset` as a task; repeated calls with the same arguments and files are cached.

    ``verbalizer`` (label words, one per class in label-id order; a string may list them comma-separated) or
    ``task="causal_lm"`` on a labelled dataset makes verbalised classification (see :mod:`autopeft.data.tasks`);
    without words, the alias's (``sst2``: negative, positive) or the label names are the answers.
    """
    _check_split_options(validation_fraction, max_validation)
    alias = resolve_dataset_alias(str(dataset)) if dataset_config is None else None
    label_words = alias.label_words if alias is not None else {}
    if alias is not None:  # `sst2`: the local copy, or the Hub's with its columns (flags given still win)
        dataset, dataset_config = alias.dataset, alias.dataset_config
        text_column = text_column or alias.columns.get("text_column")
        text_pair_column = text_pair_column or alias.columns.get("text_pair_column")
        label_column = label_column or alias.columns.get("label_column")
    source = _resolve_source(str(dataset), dataset_config)
    spec_options = dict(
        task=task, text_column=text_column, text_pair_column=text_pair_column,
        label_column=label_column, response_column=response_column, metric=metric,
        prompt_columns=_column_tuple(prompt_columns), verbalizer=_column_tuple(verbalizer),
    )
    split_options = dict(fraction=validation_fraction, cap=max_validation, seed=seed)
    fingerprint = _fingerprint(source, {**spec_options, **split_options})
    if fingerprint in _task_cache:
        _task_cache.move_to_end(fingerprint)
        return _task_cache[fingerprint]

    splits = _read_source(source)
    spec = infer_spec(splits["train"], name=source.name, **spec_options)
    splits = _labelled_splits(splits, spec, source.name)
    splits, spec = _encode_labels(splits, spec, source.name)
    if spec.is_verbalized:
        spec = replace(spec, verbalizer=spec.verbalizer or _default_words(spec.label_names, label_words))
        check_verbalizer(spec)
    _check_learnable(splits["train"], spec, source.name)
    train, validation, test, split_sources = _arrange_splits(splits, spec, **split_options)
    data = TaskData(
        spec=spec, train=train, validation=validation, test=test, name=source.name,
        fingerprint=fingerprint, split_sources=split_sources,
    )
    _task_cache[fingerprint] = data
    if len(_task_cache) > _TASK_CACHE_SIZE:
        _task_cache.popitem(last=False)
    return data


def clear_task_cache() -> None:
    _task_cache.clear()


def column_values(dataset: datasets.Dataset, column: str) -> list[Any]:
    """A column as a Python list; via Arrow, which is much faster than iterating a Column."""
    return dataset.with_format("arrow")[column].to_pylist()


def headerless_column_names(first_row: Sequence[str]) -> tuple[str, ...] | None:
    """Column names for a csv/tsv file without a header, or None when `first_row` is a header.

    A header names columns, so a first row with a number in it is data. Such files get the GLUE
    CoLA names when they have its layout (4 fields, the second 0 or 1), `text`/`label` when they
    have two fields of which exactly one is a number, and `column_0`, `column_1`, ... otherwise.
    """
    is_number = [bool(_NUMBER.match(field.strip())) for field in first_row]
    if not any(is_number):
        return None
    if len(first_row) == 4 and first_row[1].strip() in ("0", "1"):
        return COLA_COLUMNS
    if len(first_row) == 2 and is_number[0] != is_number[1]:
        return ("label", "text") if is_number[0] else ("text", "label")
    return tuple(f"column_{i}" for i in range(len(first_row)))


# --- where the data is -------------------------------------------------------------------------


def _resolve_source(dataset: str, config: str | None) -> _Source:
    path = Path(dataset).expanduser()
    if path.is_file() or path.is_dir():
        if config is not None:
            raise DataError(
                f"--dataset-config applies to Hub datasets only, not to local '{dataset}'"
            )
        if path.is_file():
            split_files = (("train", (path,)),)
            return _Source("file", _file_task_name(path), str(path), split_files=split_files)
        split_files = _folder_split_files(path)
        return _Source("folder", path.resolve().name, str(path), split_files=split_files)
    if _looks_like_path(dataset):
        raise DataError(f"dataset file or folder not found: {dataset}")
    return _Source("hub", _hub_task_name(dataset, config), dataset, config=config)


def _looks_like_path(dataset: str) -> bool:
    return (
        dataset.startswith((".", "/", "~"))
        or "\\" in dataset
        or dataset.count("/") > 1
        or _extension(Path(dataset)) in BUILDER_BY_EXTENSION
    )


def _file_task_name(path: Path) -> str:
    """`data/glue_sst2/train.tsv` -> "glue_sst2"; `reviews.csv` -> "reviews"."""
    stem = path.stem.lower()
    is_split_file = any(stem in names for names in SPLIT_NAMES.values())
    return path.resolve().parent.name if is_split_file else path.stem


def _hub_task_name(dataset: str, config: str | None) -> str:
    """`nyu-mll/glue` + `sst2` -> "glue_sst2"."""
    base = dataset.rstrip("/").split("/")[-1]
    return f"{base}_{config}" if config else base


def _folder_split_files(folder: Path) -> tuple[tuple[str, tuple[Path, ...]], ...]:
    files_by_split: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        split = _split_of_file(path) if path.is_file() else None
        if split is not None:
            files_by_split.setdefault(split, []).append(path)
    if not files_by_split:
        data_files = [p for p in sorted(folder.iterdir())
                      if p.is_file() and _extension(p) in BUILDER_BY_EXTENSION]
        if len(data_files) == 1:  # one file (e.g. all.tsv): every split is carved from it, as for a single file
            return (("train", (data_files[0],)),)
    if "train" not in files_by_split:
        raise DataError(
            f"no train file in folder {folder} (expected train.*, dev.* or validation.*, test.*, or one data file, "
            f"with extension {', '.join(BUILDER_BY_EXTENSION)})"
        )
    for split, paths in files_by_split.items():
        bases = {_SHARD_SUFFIX.sub("", p.stem.lower()) + p.suffix.lower() for p in paths}
        if len(bases) > 1:
            names = ", ".join(p.name for p in paths)
            raise DataError(f"folder {folder} has more than one {split} file: {names}")
    return tuple(
        (split, tuple(files_by_split[split])) for split in SPLIT_NAMES if split in files_by_split
    )


def _split_of_file(path: Path) -> str | None:
    if _extension(path) not in BUILDER_BY_EXTENSION:
        return None
    base = _SHARD_SUFFIX.sub("", path.stem.lower())
    return next((split for split, names in SPLIT_NAMES.items() if base in names), None)


def _extension(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


# --- reading ------------------------------------------------------------------------------------


def _read_source(source: _Source) -> dict[str, datasets.Dataset]:
    if source.kind == "hub":
        return _read_hub(source.location, source.config)
    return {split: _read_files(paths) for split, paths in source.split_files}


def _read_files(paths: tuple[Path, ...]) -> datasets.Dataset:
    extension = _extension(paths[0])
    if extension not in BUILDER_BY_EXTENSION:
        raise DataError(
            f"unsupported file type '.{extension}' for {paths[0]} "
            f"(expected one of: {', '.join(BUILDER_BY_EXTENSION)})"
        )
    try:
        with _quiet_progress():
            return datasets.load_dataset(
                BUILDER_BY_EXTENSION[extension],
                data_files={"train": [str(p) for p in paths]},
                split="train",
                **_reader_options(paths[0], extension),
            )
    except Exception as error:
        raise DataError(f"cannot read {paths[0]}: {_root_reason(error)}") from error


def _reader_options(path: Path, extension: str) -> dict[str, Any]:
    if extension not in ("csv", "tsv"):
        return {}
    # Only empty cells are missing: "NA" or "null" in text stay text.
    options: dict[str, Any] = {"keep_default_na": False, "na_values": [""]}
    if extension == "tsv":
        options.update(delimiter="\t", quoting=csv.QUOTE_NONE)
    names = headerless_column_names(_first_row(path, extension))
    if names is not None:
        options.update(header=None, column_names=list(names))
    return options


def _first_row(path: Path, extension: str) -> list[str]:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        line = handle.readline().rstrip("\r\n")
    if extension == "tsv":
        return line.split("\t")
    return next(csv.reader([line]), [])


def _read_hub(dataset: str, config: str | None) -> dict[str, datasets.Dataset]:
    where = f"'{dataset}'" + (f" (config '{config}')" if config else "")
    try:
        with _quiet_progress():
            loaded = datasets.load_dataset(dataset, config)
    except Exception as error:
        reason = _first_line(error)
        raise DataError(f"cannot load dataset {where} from the Hub: {reason}") from error
    splits = {}
    for split, names in SPLIT_NAMES.items():
        found = next((name for name in names if name in loaded), None)
        if found is not None:
            splits[split] = loaded[found]
    if "train" not in splits:
        raise DataError(f"dataset {where} has no train split (splits: {', '.join(loaded)})")
    return splits


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide datasets' progress bars while reading, restoring the caller's setting after."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _root_reason(error: BaseException) -> str:
    """The innermost cause's first line: datasets wraps a parser's error in "An error occurred while
    generating the dataset", which says nothing of what is wrong with the file."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    return f"{type(error).__name__}: {_first_line(error)}"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# --- labels and splits --------------------------------------------------------------------------


def _labelled_splits(
    splits: dict[str, datasets.Dataset], spec: TaskSpec, name: str
) -> dict[str, datasets.Dataset]:
    """Keep train plus the validation/test splits that carry targets; check their input columns."""
    target = spec.label_column or spec.response_column
    if not _is_labelled(splits["train"], target, _target_kind(spec)):
        raise DataError(
            f"the train split of '{name}' has rows without a value in column '{target}'"
        )
    kept = {"train": splits["train"]}
    for split in ("validation", "test"):
        if split in splits and _is_labelled(splits[split], target, _target_kind(spec)):
            for column in _input_columns(spec):
                require_column(splits[split].column_names, column, f"{split} split", name)
            kept[split] = splits[split]
    return kept


def _target_kind(spec: TaskSpec) -> str:
    """What the target column holds: class labels (verbalised classification too), numbers, or response texts."""
    return "classification" if spec.is_classification else spec.kind


def _default_words(label_names: Sequence[str], alias_words: dict[str, str]) -> tuple[str, ...]:
    """The alias's word for each label name, else the name itself (``not_entailment`` -> ``not entailment``)."""
    return tuple(alias_words.get(str(name), str(name).replace("_", " ").strip()) for name in label_names)


def _check_learnable(train: datasets.Dataset, spec: TaskSpec, name: str) -> None:
    """Refuse data no model can learn from: every trial would score the trivial predictor (or 1.0)."""
    for column in [*_input_columns(spec), *([spec.response_column] if spec.response_column else [])]:
        values = column_values(train, column)
        if not any(v is not None and str(v).strip() for v in values):
            raise DataError(f"column '{column}' of '{name}' is empty in every train row: nothing to learn from")
    if spec.is_classification:
        distinct = set(column_values(train, spec.label_column))
        if len(distinct) < 2:
            label = spec.label_names[next(iter(distinct))] if distinct and spec.label_names else distinct
            raise DataError(f"the train split of '{name}' has a single class ({label!s} in column "
                            f"'{spec.label_column}'): a classifier needs at least two")
    elif spec.kind == "regression":
        targets = np.asarray(column_values(train, spec.label_column), dtype=float)
        if len(targets) and np.ptp(targets) == 0:
            raise DataError(f"every train label of '{name}' (column '{spec.label_column}') is {targets[0]:g}: "
                            "a regression target must vary")


def _input_columns(spec: TaskSpec) -> list[str]:
    columns = [spec.text_column, spec.text_pair_column, *spec.prompt_columns]
    return [c for c in columns if c is not None]


def _is_labelled(dataset: datasets.Dataset, column: str, kind: str) -> bool:
    """Every row has a target. GLUE on the Hub marks unlabelled test rows with -1."""
    if column not in dataset.column_names or len(dataset) == 0:
        return False
    values = dataset.with_format("arrow")[column]
    if values.null_count:
        return False
    if kind == "causal_lm":
        return True
    python_values = values.to_pylist()
    if any(isinstance(v, float) and np.isnan(v) for v in python_values):
        return False
    return not all(v == -1 for v in python_values)


def _encode_labels(
    splits: dict[str, datasets.Dataset], spec: TaskSpec, name: str
) -> tuple[dict[str, datasets.Dataset], TaskSpec]:
    """Classification: labels -> ids 0..K-1 (ClassLabel); regression: labels -> float32."""
    column = spec.label_column
    if spec.kind == "regression":
        try:
            with _quiet_progress():
                as_float = datasets.Value("float32")
                cast = {s: ds.cast_column(column, as_float) for s, ds in splits.items()}
        except (ValueError, TypeError) as error:
            raise DataError(f"label column '{column}' of '{name}' is not numeric") from error
        return cast, spec
    if not spec.is_classification:
        return splits, spec

    feature = splits["train"].features[column]
    if isinstance(feature, datasets.ClassLabel):  # Hub datasets already carry ids and names
        return splits, replace(spec, label_names=tuple(feature.names))
    values = {s: column_values(ds, column) for s, ds in splits.items()}
    # Sorted unique values, so ids do not depend on row order; numbers sort before strings.
    distinct = sorted(set().union(*values.values()), key=lambda v: (isinstance(v, str), v))
    label_names = tuple(_label_name(v) for v in distinct)
    label_id = {value: i for i, value in enumerate(distinct)}
    label_feature = datasets.ClassLabel(names=list(label_names))
    encoded = {
        s: ds.remove_columns(column).add_column(
            column, [label_id[v] for v in values[s]], feature=label_feature
        )
        for s, ds in splits.items()
    }
    return encoded, replace(spec, label_names=label_names)


def _label_name(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _arrange_splits(
    splits: dict[str, datasets.Dataset],
    spec: TaskSpec,
    *,
    fraction: float,
    cap: int | None,
    seed: int,
) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset, dict[str, str]]:
    """Apply the split rule of the module docstring."""
    train, validation, test = splits["train"], splits.get("validation"), splits.get("test")
    size = _holdout_size(len(train), fraction, cap)
    carves_needed = (validation is None or test is None) + (validation is None and test is None)
    if len(train) - carves_needed * size < 1:
        raise DataError(
            f"the train split has too few rows ({len(train)}) to carve held-out splits from"
        )

    sources = {"train": "train"}
    if validation is not None and test is not None:
        sources.update(validation="validation", test="test")
        return train, validation, test, sources
    if validation is not None:
        test, sources["test"] = validation, "validation/dev (test split missing or unlabelled)"
    elif test is not None:
        sources["test"] = "test"
    else:
        train, test, how = _carve(train, size, spec, seed)
        sources["test"] = f"carved from train ({len(test)} rows, {how}, seed {seed})"
    train, validation, how = _carve(train, size, spec, seed)
    sources["validation"] = f"carved from train ({len(validation)} rows, {how}, seed {seed})"
    sources["train"] = f"train minus carved rows ({len(train)} rows)"
    return train, validation, test, sources


def _holdout_size(train_rows: int, fraction: float, cap: int | None) -> int:
    size = max(1, round(train_rows * fraction))
    return size if cap is None else min(size, cap)


def _carve(
    dataset: datasets.Dataset, size: int, spec: TaskSpec, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    """Split `size` rows off `dataset` (seeded; stratified by label when every class allows it)."""
    labels = _stratification_labels(dataset, spec, size)
    kept, held = train_test_split(
        np.arange(len(dataset)), test_size=size, random_state=seed, shuffle=True, stratify=labels
    )
    how = "random" if labels is None else "stratified"
    return (
        dataset.select(np.sort(kept), keep_in_memory=True),
        dataset.select(np.sort(held), keep_in_memory=True),
        how,
    )


def _stratification_labels(
    dataset: datasets.Dataset, spec: TaskSpec, size: int
) -> np.ndarray | None:
    if not spec.is_classification:
        return None
    labels = np.asarray(column_values(dataset, spec.label_column), dtype=np.int64)
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    # sklearn needs two rows per class and room for one of each class on both sides.
    feasible = counts.min() >= 2 and size >= len(counts) and len(labels) - size >= len(counts)
    return labels if feasible else None


def _column_tuple(columns: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Prompt columns as a tuple; a single string may list them comma-separated."""
    if not columns:
        return None
    if isinstance(columns, str):
        columns = columns.split(",")
    return tuple(c.strip() for c in columns if c.strip()) or None


def _check_split_options(fraction: float, cap: int | None) -> None:
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must be between 0 and 1 (exclusive), got {fraction}")
    if cap is not None and cap < 1:
        raise DataError(f"max validation size must be at least 1, got {cap}")


# --- fingerprints -------------------------------------------------------------------------------


def _fingerprint(source: _Source, options: dict[str, Any]) -> str:
    # The name is in: it picks defaults (CoLA's metric) and is shown in reports.
    payload = {
        "version": _FORMAT_VERSION,
        "name": source.name,
        "source": source.signature(),
        "options": options,
    }
    encoded = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    """Content hash; files over 64 MiB are sampled (size + first and last MiB) to stay fast."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        if size <= _FULL_HASH_LIMIT:
            digest.update(handle.read())
        else:
            digest.update(handle.read(2**20))
            handle.seek(-(2**20), os.SEEK_END)
            digest.update(handle.read())
    return digest.hexdigest()
