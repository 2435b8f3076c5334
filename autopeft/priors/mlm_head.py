"""A trained masked-LM head for the masked-LM warm-up of encoders whose checkpoint ships without one.

GOT-D continues pre-training with the model's own MLM head. Sentence-embedding and classification checkpoints
(all-MiniLM-L6-v2, any ``*ForSequenceClassification``) have none, and an untrained head's first hundreds of steps
pull the adapter toward whatever that head needs instead of toward the pool's language. So the warm-up's head
starts from (1) the checkpoint's own head where its safetensors hold one (BERT's ``cls.predictions``), else (2) a
head fitted on the frozen model: dense -> GELU -> LayerNorm -> the tied input embeddings, only the head training
(:func:`autopeft.trial.warmup.fit_masked_lm_head`), on a seeded sample of the warm-up pool. Either is saved as a
small safetensors file in the cache, keyed by the model's files and the texts, and every trial's warm-up starts
from it (``Warmup.head_file``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from autopeft.priors.cache import atomic_folder, cached_path, read_entry

HEAD_VERSION = 1
HEAD_FILE = "mlm_head.safetensors"
FACTS_FILE = "facts.json"
FIT_TEXTS = 4000  # pool texts the head is fitted on (seeded sample): 500 steps, ~80 s for MiniLM on 2 cores
logger = logging.getLogger("autopeft.warmup")


def checkpoint_head(folder: str | Path) -> dict | None:
    """The MLM head tensors a local checkpoint's safetensors hold, under :class:`MaskedLMHead`'s names; None if
    it has none (or not all of them)."""
    from safetensors import safe_open

    from autopeft.trial.warmup import CHECKPOINT_HEAD_NAMES

    found = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), "pt") as weights:
            for key in weights.keys():
                if key in CHECKPOINT_HEAD_NAMES:
                    found[CHECKPOINT_HEAD_NAMES[key]] = weights.get_tensor(key)
    return found if len(found) == len(CHECKPOINT_HEAD_NAMES) else None


def cached_masked_lm_head(model: str, texts: list[str], *, max_length: int = 128, seed: int = 0) -> tuple[Path, dict]:
    """(head file, facts) for ``model``'s masked-LM warm-up: its checkpoint's head, else one fitted on a seeded
    sample of up to :data:`FIT_TEXTS` of ``texts``; cached."""
    from safetensors.torch import save_file

    from autopeft.priors.selection.embeddings import encoder_signature, load_encoder, texts_digest

    rows = np.sort(np.random.default_rng(seed).permutation(len(texts))[:FIT_TEXTS])
    sample = [texts[i] for i in rows]
    folder = cached_path("mlm-head", version=HEAD_VERSION, model=encoder_signature(model), texts=texts_digest(sample),
                         max_length=int(max_length), seed=int(seed))

    def read(entry: Path) -> tuple[Path, dict]:
        facts = json.loads((entry / FACTS_FILE).read_text())
        if not (entry / HEAD_FILE).is_file():
            raise ValueError("no head file")
        return entry / HEAD_FILE, facts

    cached = read_entry(folder, read)
    if cached is not None:
        return cached
    encoder, tokenizer, source = load_encoder(model)
    state = checkpoint_head(source.path) if source.is_local else None
    if state is not None:
        facts = {"source": "checkpoint"}
    else:
        head, facts = _fit(encoder, tokenizer, sample, max_length=max_length, seed=seed)
        state = head.trained_state()
        facts = {"source": "fitted on the frozen model", "texts": len(sample), **facts}
    with atomic_folder(folder) as staging:
        save_file({name: value.contiguous() for name, value in state.items()}, str(staging / HEAD_FILE),
                  metadata={"format": "autopeft-mlm-head"})
        (staging / FACTS_FILE).write_text(json.dumps(facts, indent=1))
    logger.info("masked-LM head for %s: %s", source.name, facts)
    return folder / HEAD_FILE, facts


def _fit(encoder, tokenizer, texts: list[str], *, max_length: int, seed: int):
    from autopeft.trial.warmup import fit_masked_lm_head

    device = next(encoder.parameters()).device
    return fit_masked_lm_head(encoder, tokenizer, texts, max_length=max_length, seed=seed, device=device)
