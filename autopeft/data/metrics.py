"""Task metrics: classification (accuracy, macro F1, MCC), regression (Pearson, Spearman) and
exact match of final answers for generation (GSM8K). All are higher-is-better except losses."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

from autopeft.data.tasks import FINAL_ANSWER_MARKER, TaskSpec

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "macro_f1": True,
    "mcc": True,
    "pearson": True,
    "spearman": True,
    "exact_match": True,
    "eval_loss": False,
}
# A plain number or one with thousands separators; "$" is removed before matching.
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def is_higher_better(metric_name: str) -> bool:
    """False for eval_loss (and any "*loss"), True for the other known metrics."""
    name = metric_name.strip().lower()
    if name in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[name]
    if name.endswith("loss"):
        return False
    if name.startswith("eval_") and name[len("eval_") :] in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[name[len("eval_") :]]
    raise ValueError(f"unknown metric '{metric_name}' (known: {', '.join(HIGHER_IS_BETTER)})")


def compute_metrics(spec: TaskSpec, predictions: Any, references: Any) -> dict[str, float]:
    """Every metric of the task's kind (its primary one included, except eval_loss).

    classification (verbalised too): predictions are class ids or logits (argmax is taken over the last axis);
    regression: predicted values, shape (n,) or (n, 1); causal_lm: generated texts.
    """
    if spec.is_classification:
        return classification_metrics(predictions, references)
    if spec.kind == "regression":
        return regression_metrics(predictions, references)
    return {"exact_match": exact_match(predictions, references)}


def classification_metrics(predictions: Any, references: Any) -> dict[str, float]:
    predicted = np.asarray(predictions)
    if predicted.ndim == 2:
        predicted = predicted.argmax(axis=-1)
    predicted = predicted.astype(np.int64)
    expected = np.asarray(references, dtype=np.int64)
    _check_same_length(predicted, expected)
    with warnings.catch_warnings():  # sklearn warns when a class is never predicted
        warnings.simplefilter("ignore")
        macro_f1 = f1_score(expected, predicted, average="macro", zero_division=0)
        mcc = matthews_corrcoef(expected, predicted)
    return {
        "accuracy": float(np.mean(predicted == expected)),
        "macro_f1": _finite(macro_f1),
        "mcc": _finite(mcc),
    }


def regression_metrics(predictions: Any, references: Any) -> dict[str, float]:
    predicted = np.asarray(predictions, dtype=np.float64).reshape(-1)
    expected = np.asarray(references, dtype=np.float64).reshape(-1)
    _check_same_length(predicted, expected)
    return {
        "pearson": _correlation(stats.pearsonr, predicted, expected),
        "spearman": _correlation(stats.spearmanr, predicted, expected),
    }


def extract_final_number(text: str | None) -> str | None:
    """The answer number of a solution text, normalised ("1,234.50" -> "1234.5", "$18" -> "18").

    GSM8K style: the number after the last '####'; without '####', the last number in the text.
    """
    if not text:
        return None
    text = text.replace("$", "")
    marker = text.rfind(FINAL_ANSWER_MARKER)
    if marker >= 0:
        found = _NUMBER.search(text[marker + len(FINAL_ANSWER_MARKER) :])
        return _normalise_number(found.group()) if found else None
    numbers = _NUMBER.findall(text)
    return _normalise_number(numbers[-1]) if numbers else None


def exact_match(predicted_texts: Sequence[str], reference_texts: Sequence[str]) -> float:
    """Share of predictions that match their reference.

    When a reference has a final number, the predicted final number must equal it; otherwise
    the texts must be equal up to surrounding and repeated whitespace.
    """
    if len(predicted_texts) != len(reference_texts):
        raise ValueError(
            f"{len(predicted_texts)} predictions for {len(reference_texts)} references"
        )
    if not reference_texts:
        return 0.0
    hits = sum(_answers_match(p, r) for p, r in zip(predicted_texts, reference_texts))
    return hits / len(reference_texts)


def _answers_match(predicted: str, reference: str) -> bool:
    expected = extract_final_number(reference)
    if expected is not None:
        return extract_final_number(predicted) == expected
    return " ".join((predicted or "").split()) == " ".join((reference or "").split())


def _normalise_number(number: str) -> str:
    number = number.replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    if "." not in number:
        number = str(int(number))  # drops leading zeros and turns "-0" into "0"
    return number


def _correlation(
    correlate: Callable[[np.ndarray, np.ndarray], Any], predicted: np.ndarray, expected: np.ndarray
) -> float:
    """Correlation, or 0.0 where it is undefined (fewer than 2 values, a constant side)."""
    if len(predicted) < 2 or np.ptp(predicted) == 0 or np.ptp(expected) == 0:
        return 0.0
    return _finite(correlate(predicted, expected)[0])


def _finite(value: Any) -> float:
    value = float(value)
    return value if np.isfinite(value) else 0.0


def _check_same_length(predicted: np.ndarray, expected: np.ndarray) -> None:
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} references")
    if len(expected) == 0:
        raise ValueError("no examples to score")


def input_blind_loss(spec: TaskSpec, train_labels: Sequence[Any], eval_labels: Sequence[Any],
                     vocab_size: int | None = None) -> float:
    """The eval loss of predicting without looking at the input: the yardstick for divergence.

    The worse of two input-blind predictors, because a freshly initialised head starts at the second:
    classification: the train class frequencies (add-one smoothed) or uniform over the classes (ln K);
    regression: the train mean or zero (mean squared error); causal LM: uniform over the vocabulary
    (ln V). A trial far above this has learned something worse than nothing.
    """
    if spec.kind == "causal_lm":
        if not vocab_size:
            raise ValueError("the input-blind loss of a causal LM needs the vocabulary size")
        return float(np.log(vocab_size))
    eval_values = np.asarray(eval_labels)
    if spec.kind == "regression":
        targets = eval_values.astype(float)
        mean = float(np.mean(np.asarray(train_labels, dtype=float)))
        return float(max(np.mean((targets - mean) ** 2), np.mean(targets**2)))
    classes = max(spec.num_labels, int(np.max(train_labels)) + 1, int(np.max(eval_values)) + 1)
    counts = np.bincount(np.asarray(train_labels, dtype=int), minlength=classes) + 1.0
    prior = float(-np.mean(np.log(counts / counts.sum())[eval_values.astype(int)]))
    return max(prior, float(np.log(classes)))


CORRELATION_METRICS = ("mcc", "pearson", "spearman")
"""Metrics whose input-blind score is 0 and whose standard error under no association is about 1/sqrt(n)."""


@dataclass(frozen=True)
class TrivialScore:
    """What a predictor that ignores its input scores on an evaluation subset, and the margin to beat it.

    ``stderr`` is the standard error of the metric at that score on the subset's ``examples``: a rate
    (accuracy, macro F1) has sqrt(p(1-p)/n), at least 1/n; a correlation (MCC, Pearson, Spearman) has
    about 1/sqrt(n) when there is no association (n·MCC² is the 2x2 table's chi-square); a loss has no margin
    (a trial must be below the input-blind or base model's loss). A score that does not beat the trivial one
    by more than ``stderr`` is trivial: at that eval size it cannot be told apart from ignoring the input.
    """

    metric: str
    value: float
    stderr: float
    examples: int

    @property
    def higher_is_better(self) -> bool:
        return is_higher_better(self.metric)

    def is_trivial(self, score: float) -> bool:
        if not math.isfinite(score):
            return True
        if self.higher_is_better:
            return not score > self.value + self.stderr
        return not score < self.value - self.stderr


def metric_stderr(metric: str, value: float, examples: int) -> float:
    """The standard error of ``metric`` at ``value`` over ``examples`` scored examples (:class:`TrivialScore`)."""
    n = max(int(examples), 1)
    name = metric.removeprefix("eval_")
    if name.endswith("loss"):
        return 0.0
    if name in CORRELATION_METRICS:
        return 1.0 / math.sqrt(n)
    p = min(max(value, 0.0), 1.0)
    return max(math.sqrt(p * (1 - p) / n), 1.0 / n)


def trivial_score(spec: TaskSpec, train_labels: Sequence[Any], eval_labels: Sequence[Any],
                  metric: str | None = None) -> TrivialScore:
    """The score of the input-blind predictor on ``eval_labels`` (classification or regression).

    classification (verbalised too: the classes are its label words): the best constant answer (each metric's
    maximum over answering one class always, scored by
    :func:`compute_metrics`: the accuracy is the evaluated examples' majority share, MCC is 0), its eval loss the
    train class frequencies' cross-entropy (add-one smoothed);
    regression: always the train mean (Pearson/Spearman are undefined, so 0), its loss that predictor's mean
    squared error. A causal LM's trivial score is its base model's own eval loss, which takes the model
    (:meth:`autopeft.trial.TrialRunner.trivial_score`; :func:`loss_trivial_score`).
    """
    if spec.kind == "causal_lm" and not spec.is_verbalized:
        raise ValueError("a causal LM's trivial score is the base model's eval loss (loss_trivial_score)")
    metric = metric or spec.metric
    train = np.asarray(train_labels)
    expected = np.asarray(eval_labels)
    if len(expected) == 0 or len(train) == 0:
        raise ValueError("no examples to score")
    if spec.kind == "regression":
        mean = float(np.mean(train.astype(float)))
        scores = {"eval_loss": float(np.mean((expected.astype(float) - mean) ** 2)),
                  **regression_metrics(np.full(len(expected), mean), expected)}
    else:
        classes = max(len(spec.label_names), int(np.max(train)) + 1, int(np.max(expected)) + 1)
        counts = np.bincount(train.astype(int), minlength=classes)
        smoothed = (counts + 1.0) / (counts + 1.0).sum()
        # the best constant answer on the scored examples, not only the train split's majority: where the two
        # differ (a small or shifted split), a model that always answers the other class has still learned nothing
        constant = [classification_metrics(np.full(len(expected), label), expected) for label in range(classes)]
        scores = {"eval_loss": float(-np.mean(np.log(smoothed[expected.astype(int)]))),
                  **{name: max(c[name] for c in constant) for name in constant[0]}}
    if metric not in scores:
        raise ValueError(f"no trivial score for metric '{metric}' of a {spec.kind} task")
    value = scores[metric]
    return TrivialScore(metric, value, metric_stderr(metric, value, len(expected)), len(expected))


def loss_trivial_score(loss: float, examples: int) -> TrivialScore:
    """A trivial eval loss (a causal LM's base model before training): a trial must end below it."""
    return TrivialScore("eval_loss", float(loss), 0.0, examples)
