"""``dsir``: Data Selection with Importance Resampling (Xie et al., NeurIPS 2023), hashed n-gram features.

Every text becomes counts of its lower-cased word-and-punctuation unigrams and bigrams hashed into
:data:`BUCKETS` buckets (scikit-learn's ``HashingVectorizer``: MurmurHash3, stable across processes). Two
bag-of-n-gram distributions over the buckets are fitted, one on the target texts and one on the pool, as the
reference ``HashedNgramDSIR`` does by default: bucket frequencies, ``log(p + 1e-8)`` (:data:`LOG_FLOOR`), no
smoothing (:data:`TARGET_SMOOTHING` pseudo-counts on the target side only). An example's log importance weight
is ``Σ_ngrams (log p_target(b) − log p_pool(b))`` over its n-grams (counts · log-ratio), i.e.
``log p_target(x) − log p_pool(x)`` under the two bag-of-n-gram models. Resampling without replacement in
proportion to the weights is done
with the Gumbel top-k trick: rank by ``log w + Gumbel noise`` (seeded), highest first; the first N of
that order are a weighted sample of size N.

When the target *is* the pool (``autopeft select-data`` without ``--pool``), the two models coincide, the
weights are all 1, and the ranking is a random permutation: DSIR has nothing to prefer.
"""

from __future__ import annotations

import numpy as np

from autopeft.priors.selection.base import SelectionInputs, SelectionStrategy, register

BUCKETS = 10_000
TARGET_SMOOTHING = 0.0  # Laplace pseudo-count added to the target's bucket counts (the reference's default)
LOG_FLOOR = 1e-8  # log(p + LOG_FLOOR): an n-gram the target never has costs about log(1e-8) = -18.4
TOKEN_PATTERN = r"(?u)\w+|[^\w\s]+"  # words and runs of punctuation, like NLTK's WordPunct tokenizer


def hashed_ngram_counts(texts: list[str], buckets: int = BUCKETS):
    """A sparse ``[len(texts), buckets]`` matrix of hashed unigram + bigram counts."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(
        n_features=buckets, ngram_range=(1, 2), alternate_sign=False, norm=None, lowercase=True,
        token_pattern=TOKEN_PATTERN, dtype=np.float64,
    )
    return vectorizer.transform(texts)


def bucket_log_probabilities(counts, smoothing: float = 0.0) -> np.ndarray:
    totals = np.asarray(counts.sum(axis=0)).ravel() + smoothing
    return np.log(totals / max(totals.sum(), 1e-300) + LOG_FLOOR)


@register
class DSIRStrategy(SelectionStrategy):
    name = "dsir"
    needs_target = True

    def settings(self) -> dict:
        return {"buckets": BUCKETS, "target_smoothing": TARGET_SMOOTHING, "log_floor": LOG_FLOOR, "ngrams": 2,
                "tokens": TOKEN_PATTERN}

    def _order(self, inputs: SelectionInputs, seed: int) -> np.ndarray:
        pool_counts = hashed_ngram_counts(inputs.pool_texts)
        target_counts = pool_counts if inputs.target_is_pool else hashed_ngram_counts(inputs.target_texts)
        log_ratio = (bucket_log_probabilities(target_counts, TARGET_SMOOTHING)
                     - bucket_log_probabilities(pool_counts))
        log_weights = np.asarray(pool_counts @ log_ratio).ravel()
        keys = log_weights + np.random.default_rng(seed).gumbel(size=len(log_weights))
        self.info.update(log_weight_min=float(log_weights.min()), log_weight_max=float(log_weights.max()),
                         log_weight_mean=float(log_weights.mean()))
        return np.argsort(-keys, kind="stable")
