"""A task-tuned embedding model for data selection: the model being tuned, after a short fit on the target task.

GOT-D (Kang et al., ICLR 2024) embeds pool and target with a model fine-tuned on the target task, so that
distances reflect what the task cares about (sentiment for SST-2) rather than topic or length. Untuned sentence
embeddings put an SST-2 sentence as close to a TREC question as to another review.

:func:`task_tuned_encoder` fits LoRA r8 on the query and value projections of every layer (with the task's
head, or the LM loss on the answer for a causal LM) on up to ``examples`` rows of the task's train split for
``epochs`` at LoRA's default rate, folds the LoRA weights in (``merge_and_unload``) and saves the merged model
as a plain Hugging Face folder in the cache (safetensors, with its tokenizer). That folder is then an embedding
model like any other, ``cached_embeddings(str(folder), texts)``, and its files key the embedding and ranking
caches, so a retuned encoder never reuses the untuned one's rankings. LoRA rather than full fine-tuning: it is the
product's own cheapest well-tested fit (MiniLM, 2,000 SST-2 examples: ~15 s on 2 cores) and its rate is known.

``--embedding-model tuned`` (``search``, ``select-data``) asks for it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from autopeft.errors import AutopeftError
from autopeft.priors.cache import atomic_folder, cached_path, read_entry

TUNED = "tuned"  # the --embedding-model value that asks for the task-tuned encoder of --model
TUNED_VERSION = 1  # part of the cache key: bump when the fit changes
TUNED_RANK = 8
MARK_FILE = "tuned.json"
logger = logging.getLogger("autopeft.selection")


def task_tuned_encoder(model: str, task, *, examples: int = 2000, epochs: float = 2.0, seed: int = 0,
                       max_length: int = 128, rows=None, trust_remote_code: bool = False) -> Path:
    """The cache folder of ``model`` fitted on ``task`` (see the module docstring): computed once per
    (model files, task data, fit settings), then read from the cache. ``rows``: fit on these rows of the train
    split only (e.g. a target slice), else on a seeded draw of ``examples`` rows."""
    import json

    import numpy as np

    from autopeft.priors.selection.embeddings import encoder_signature

    if examples < 1 or not epochs > 0:
        raise AutopeftError(f"the tuned encoder needs examples >= 1 and epochs > 0, got {examples} and {epochs}")
    rows = None if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    folder = cached_path("tuned-encoder", version=TUNED_VERSION, model=encoder_signature(model),
                         task=task.fingerprint, examples=int(examples), epochs=float(epochs), seed=int(seed),
                         max_length=int(max_length), rank=TUNED_RANK,
                         rows=None if rows is None else rows.tolist())

    def read(entry: Path) -> Path:
        facts = json.loads((entry / MARK_FILE).read_text())
        if not (entry / "config.json").is_file() or facts.get("version") != TUNED_VERSION:
            raise ValueError("not a complete tuned encoder")
        return entry

    cached = read_entry(folder, read)
    if cached is not None:
        return cached
    facts = _fit_and_merge(model, task, folder, examples=examples, epochs=epochs, seed=seed, max_length=max_length,
                           rows=rows, trust_remote_code=trust_remote_code)
    logger.info("tuned the embedding model on %s: %s", task.name, facts)
    return folder


def _fit_and_merge(model: str, task, folder: Path, *, examples: int, epochs: float, seed: int, max_length: int,
                   rows, trust_remote_code: bool) -> dict:
    import json

    from peft import PeftModel

    from autopeft.builders import build_adapter
    from autopeft.models import get_base_model
    from autopeft.modules import get_module_type
    from autopeft.space.point import ModuleChoice, PeftPoint
    from autopeft.trial import Fidelity, TrainingConfig, TrialRunner

    spec = task.spec
    base = get_base_model(model, spec.kind, num_labels=max(spec.num_labels, 1), trust_remote_code=trust_remote_code)
    layers = int(base.config.num_hidden_layers)
    point = PeftPoint({"lora": ModuleChoice("lora", {layer: TUNED_RANK for layer in range(layers)},
                                            ("query", "value"), {"alpha": 2.0})})
    rate = get_module_type("lora").default_rate(TUNED_RANK)
    fidelity = Fidelity(train_examples=min(int(examples), len(task.train)), epochs=float(epochs),
                        max_length=int(max_length), eval_examples=min(256, len(task.validation)))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autopeft-tuned-") as scratch:
        result = TrialRunner(base, task).run(build_adapter(point, base.config, spec.kind), fidelity, seed,
                                             TrainingConfig(learning_rate=rate), train_indices=rows, save_dir=scratch)
        if not result.ok:
            raise AutopeftError(f"fitting the embedding model on '{task.name}' failed: {result.reason}")
        merged = PeftModel.from_pretrained(base.fresh_copy(0), scratch).merge_and_unload()
        examples = len(rows) if rows is not None else fidelity.train_size(len(task.train))
        facts = {"version": TUNED_VERSION, "model": model, "task": task.name, "examples": examples,
                 "epochs": float(epochs), "learning_rate": rate, "seed": int(seed),
                 "validation": {k: round(float(v), 4) for k, v in result.metrics.items()},
                 "seconds": round(time.perf_counter() - start, 1)}
        with atomic_folder(folder) as staging:
            merged.base_model.save_pretrained(staging, safe_serialization=True)  # the encoder: what embeds
            base.tokenizer.save_pretrained(staging)
            (staging / MARK_FILE).write_text(json.dumps(facts, indent=1))
    return facts


def is_tuned(choice: str | None) -> bool:
    """Whether an ``--embedding-model`` value asks for the task-tuned encoder."""
    return choice is not None and choice.strip().lower() == TUNED


def embedding_model_for(choice: str | None, model: str, task, *, max_length: int = 128,
                        trust_remote_code: bool = False) -> str:
    """What ``--embedding-model`` names, as something :func:`cached_embeddings` loads: ``None`` -> ``model``;
    ``tuned`` -> the folder of :func:`task_tuned_encoder` (fitted now if not cached); anything else as given."""
    if choice is None:
        return model
    if is_tuned(choice):
        return str(task_tuned_encoder(model, task, max_length=max_length, trust_remote_code=trust_remote_code))
    return choice
