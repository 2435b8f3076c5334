"""autopeft.data.metrics on hand-computed examples."""

import math
import warnings

import numpy as np
import pytest

from autopeft.data import (
    TaskSpec,
    compute_metrics,
    exact_match,
    extract_final_number,
    is_higher_better,
)

CLASSIFICATION = TaskSpec(
    kind="classification", text_column="t", label_column="l", label_names=("a", "b")
)
REGRESSION = TaskSpec(kind="regression", text_column="t", label_column="l", metric="pearson")
CAUSAL = TaskSpec(
    kind="causal_lm", prompt_columns=("question",), response_column="answer", metric="exact_match"
)


def test_classification_metrics_by_hand():
    # references 0 1 1 0, predictions 0 1 0 0: TP=1 TN=2 FP=0 FN=1 (class 1 positive)
    metrics = compute_metrics(CLASSIFICATION, [0, 1, 0, 0], [0, 1, 1, 0])
    assert metrics["accuracy"] == pytest.approx(0.75)
    # class 0: P=2/3 R=1 F1=0.8; class 1: P=1 R=1/2 F1=2/3
    assert metrics["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert metrics["mcc"] == pytest.approx(2 / math.sqrt(12))  # (1*2 - 0*1) / sqrt(1*2*2*3)


def test_classification_accepts_logits():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [0.5, 0.2]])
    assert compute_metrics(CLASSIFICATION, logits, [0, 1, 1])["accuracy"] == pytest.approx(2 / 3)


def test_constant_predictions_score_zero_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classification = compute_metrics(CLASSIFICATION, [1, 1, 1, 1], [0, 1, 1, 0])
        regression = compute_metrics(REGRESSION, [2.0, 2.0, 2.0], [1.0, 2.0, 3.5])
    assert classification["mcc"] == 0.0 and classification["accuracy"] == 0.5
    assert regression == {"pearson": 0.0, "spearman": 0.0}


def test_regression_metrics_by_hand():
    perfect = compute_metrics(REGRESSION, np.array([[1.0], [2.0], [3.0]]), [2.0, 4.0, 6.0])
    assert perfect["pearson"] == pytest.approx(1.0) and perfect["spearman"] == pytest.approx(1.0)
    monotone = compute_metrics(REGRESSION, [1.0, 2.0, 3.0], [1.0, 4.0, 9.0])
    assert monotone["spearman"] == pytest.approx(1.0)
    assert monotone["pearson"] == pytest.approx(0.9897433, abs=1e-6)  # 8 / sqrt(2 * 32.667)
    reversed_ = compute_metrics(REGRESSION, [3.0, 2.0, 1.0], [1.0, 2.0, 3.0])
    assert reversed_["pearson"] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "text, number",
    [
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
        ("#### 1,000", "1000"),
        ("#### -3", "-3"),
        ("The total is $1,234.50.", "1234.5"),
        ("It costs 18.00 dollars", "18"),
        ("3 apples and 5 pears", "5"),
        ("Answer: 007", "7"),
        ("no number here", None),
        ("#### ", None),
        ("", None),
    ],
)
def test_extract_final_number(text, number):
    assert extract_final_number(text) == number


def test_exact_match():
    predictions = ["The answer is 72.", "#### 10", "so 5 in total", "Paris"]
    references = ["48 + 24 = 72\n#### 72", "#### 11", "#### 5.0", "  Paris "]
    assert exact_match(predictions, references) == pytest.approx(3 / 4)
    assert compute_metrics(CAUSAL, predictions[:2], references[:2]) == {"exact_match": 0.5}
    assert exact_match([], []) == 0.0
    with pytest.raises(ValueError):
        exact_match(["1"], [])


def test_is_higher_better():
    assert not is_higher_better("eval_loss")
    higher = ("accuracy", "macro_f1", "mcc", "pearson", "spearman", "exact_match")
    assert all(is_higher_better(m) for m in higher)
    assert is_higher_better("eval_accuracy")
    with pytest.raises(ValueError):
        is_higher_better("bleu")
