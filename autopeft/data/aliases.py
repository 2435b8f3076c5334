"""Dataset aliases: short names (``sst2``, ``rte``, ``cola``, ``trec``) for tasks the README and the demo use.

An alias resolves to a local copy when one exists — a folder named ``alias.folder`` under one of
:func:`dataset_roots` — and to the Hub's copy otherwise, with the column hints the Hub copy needs.
A path that exists under the alias's name (a folder called ``sst2`` in the working folder) wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DATASETS_ENV = "AUTOPEFT_DATASETS"
"""Folders (separated by the platform's path separator) that hold local copies of the aliased datasets."""


@dataclass(frozen=True)
class DatasetAlias:
    folder: str                      # the local copy's folder name under a dataset root
    hub_id: str                      # the Hub's copy
    hub_config: str | None = None
    hub_columns: dict[str, str] = field(default_factory=dict)   # load_task keyword -> column, for the Hub copy
    description: str = ""
    # label name (the local copy's or the Hub's) -> the word a causal LM answers with (verbalised classification)
    label_words: dict[str, str] = field(default_factory=dict)


DATASET_ALIASES: dict[str, DatasetAlias] = {
    "sst2": DatasetAlias("glue_sst2", "nyu-mll/glue", "sst2", {"text_column": "sentence", "label_column": "label"},
                         "GLUE SST-2: binary sentiment of movie-review sentences",
                         {"0": "negative", "1": "positive"}),
    "rte": DatasetAlias("glue_rte", "nyu-mll/glue", "rte",
                        {"text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "label"},
                        "GLUE RTE: textual entailment of sentence pairs",
                        {"entailment": "yes", "not_entailment": "no"}),
    "cola": DatasetAlias("glue_cola", "nyu-mll/glue", "cola", {"text_column": "sentence", "label_column": "label"},
                         "GLUE CoLA: grammatical acceptability of sentences",
                         {"0": "unacceptable", "1": "acceptable"}),
    "trec": DatasetAlias("trec", "CogComp/trec", None, {"text_column": "text", "label_column": "coarse_label"},
                         "TREC: 6-way question type classification",
                         {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human",
                          "LOC": "location", "NUM": "number"}),
}


def dataset_roots() -> list[Path]:
    """Where local copies are looked for: ``$AUTOPEFT_DATASETS``, then ``./datasets`` and ``../shared/datasets``."""
    configured = [Path(p).expanduser() for p in os.environ.get(DATASETS_ENV, "").split(os.pathsep) if p]
    return [*configured, Path("datasets"), Path("..") / "shared" / "datasets"]


@dataclass(frozen=True)
class ResolvedDataset:
    dataset: str                     # a local folder or a Hub id
    dataset_config: str | None
    columns: dict[str, str]          # column hints for load_task (Hub copies only)
    local: bool
    label_words: dict[str, str] = field(default_factory=dict)   # DatasetAlias.label_words


def resolve_dataset_alias(name: str) -> ResolvedDataset | None:
    """The local copy or Hub copy behind an alias; None when ``name`` is not an alias or is an existing path."""
    alias = DATASET_ALIASES.get(name.lower())
    if alias is None or Path(name).expanduser().exists():
        return None
    for root in dataset_roots():
        if (root / alias.folder).is_dir():
            return ResolvedDataset(str((root / alias.folder).resolve()), None, {}, True, dict(alias.label_words))
    return ResolvedDataset(alias.hub_id, alias.hub_config, dict(alias.hub_columns), False, dict(alias.label_words))
