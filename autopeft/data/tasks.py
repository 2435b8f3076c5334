"""Task descriptions: what to predict from which columns, and how a model on it is scored.

`infer_spec` decides the task kind, the columns and the primary metric from the train split and
the user's flags. Detection is by column name only (see the `*_COLUMNS` / `*_LAYOUTS` tables);
the one value-based rule is regression, chosen when the label column holds non-integer floats.

A labelled dataset read as `causal_lm` (`--task causal_lm`, or `--verbalizer`) is *verbalised
classification*: each example becomes a prompt (the text, then the answer choices) and the label's
word as the response, trained with the language-modelling loss and no new head, and scored by which
label word the model finds most likely (`TaskSpec.verbalizer`). This is how decoder LMs are tuned
as classifiers (PET, LM-BFF, LoFiT's setting), and how their users would tune them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import datasets
import numpy as np

from autopeft.errors import DataError

KINDS = ("classification", "regression", "causal_lm")

# The first metric of each kind is its default; eval_loss is always available.
METRICS_BY_KIND: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1", "mcc", "eval_loss"),
    "regression": ("pearson", "spearman", "eval_loss"),
    "causal_lm": ("eval_loss", "exact_match"),
}
# A verbalised classification task is a causal LM scored like a classifier.
VERBALIZED_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "mcc", "eval_loss")

# Sentence-pair layouts are tried before single text columns, so QNLI-like data keeps both parts.
TEXT_PAIR_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("question", "passage"),
)
TEXT_COLUMNS = (
    "sentence", "text", "question", "sentence1", "premise", "content", "review", "document",
    "tweet", "title",
)
LABEL_COLUMNS = (
    "label", "labels", "score", "coarse_label", "target", "class", "category", "sentiment", "y",
)
# (prompt columns, response column); a layout matches when every one of its columns exists.
CAUSAL_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("question",), "answer"),
    (("instruction", "input"), "output"),
    (("instruction",), "output"),
    (("prompt",), "response"),
    (("prompt",), "completion"),
)
# GSM8K marks the final answer with this; its presence makes exact match the default metric.
FINAL_ANSWER_MARKER = "####"


@dataclass(frozen=True)
class TaskSpec:
    """What the model predicts and from which columns."""

    kind: str  # "classification" | "regression" | "causal_lm"
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    prompt_columns: tuple[str, ...] = ()  # causal_lm: ("question",) or ("instruction", "input")
    response_column: str | None = None
    label_names: tuple[str, ...] = ()  # classification: id -> name
    metric: str = "accuracy"  # primary metric; higher is better except eval_loss
    # verbalised classification (causal_lm over a label column): the answer word of each class id; filled by the
    # loader from --verbalizer, else the dataset alias's words, else the label names
    verbalizer: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(
                f"unknown task kind '{self.kind}' (expected one of: {', '.join(KINDS)})"
            )

    @property
    def is_verbalized(self) -> bool:
        """A causal LM trained on a labelled dataset: label words as the answers, scored as a classifier."""
        return self.kind == "causal_lm" and self.label_column is not None

    @property
    def is_classification(self) -> bool:
        """Scored by class: a classifier head, or a causal LM's likeliest label word."""
        return self.kind == "classification" or self.is_verbalized

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics this task can be scored with, its default first."""
        return VERBALIZED_METRICS if self.is_verbalized else METRICS_BY_KIND[self.kind]

    @property
    def num_labels(self) -> int:
        """Outputs of a new head: classes, 1 for regression, 0 for a causal LM (its head is the vocabulary)."""
        if self.kind == "regression":
            return 1
        if self.kind == "causal_lm":
            return 0
        return len(self.label_names)


@dataclass
class TaskData:
    """A loaded task: the spec and its three splits. Cached by `load_task`: treat as read-only."""

    spec: TaskSpec
    train: datasets.Dataset
    validation: datasets.Dataset  # used for selection during search
    test: datasets.Dataset | None  # reported split (GLUE dev), distinct from validation
    name: str  # short display name, e.g. "glue_sst2"
    fingerprint: str  # stable hash of source + options, for cache keys
    # Where each split came from, e.g. {"validation": "carved from train (2000 rows, stratified)"}.
    split_sources: dict[str, str] = field(default_factory=dict)


def normalize_kind(task: str | None) -> str | None:
    """Accept "causal-lm" as well as "causal_lm"; reject unknown kinds with a DataError."""
    if task is None:
        return None
    kind = task.strip().lower().replace("-", "_")
    if kind not in KINDS:
        raise DataError(f"unknown task '{task}' (expected one of: {', '.join(KINDS)})")
    return kind


def infer_spec(
    train: datasets.Dataset,
    *,
    name: str,
    task: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    prompt_columns: Sequence[str] | None = None,
    response_column: str | None = None,
    metric: str | None = None,
    verbalizer: Sequence[str] | None = None,
) -> TaskSpec:
    """Build the TaskSpec from the user's flags, filling what is missing from the train columns.

    `label_names` stays empty here: the loader fills it once labels of every split are known, and the
    verbaliser's words with them (`verbalizer` is only checked and kept here).
    """
    columns = list(train.column_names)
    kind = normalize_kind(task)
    wants_causal = bool(prompt_columns) or response_column is not None
    wants_labels = any(c is not None for c in (label_column, text_column, text_pair_column))
    if verbalizer:
        if wants_causal:
            raise DataError("--verbalizer reads a labelled dataset as a causal LM task; it does not go with "
                            "--prompt-column/--response-column")
        if kind not in (None, "causal_lm"):
            raise DataError(f"--verbalizer makes a causal_lm task of a labelled dataset, not a {kind} one")
        kind = "causal_lm"
    if kind is None and wants_causal:
        kind = "causal_lm"
    if kind is None and not wants_labels and _match_causal_layout(columns) is not None:
        kind = "causal_lm"

    verbalize = kind == "causal_lm" and not wants_causal and (
        bool(verbalizer) or wants_labels or _match_causal_layout(columns) is None)
    if verbalize:
        spec = _verbalized_spec(train, columns, name, text_column, text_pair_column, label_column, verbalizer)
    elif kind == "causal_lm":
        spec = _causal_spec(columns, name, prompt_columns, response_column)
    else:
        spec = _labelled_spec(
            train, columns, name, kind, text_column, text_pair_column, label_column
        )
    chosen_metric = metric.strip().lower() if metric else default_metric(spec, train, name)
    check_metric(chosen_metric, spec)
    return replace(spec, metric=chosen_metric)


def default_metric(spec: TaskSpec, train: datasets.Dataset, name: str) -> str:
    """accuracy (mcc for CoLA), pearson for regression, eval_loss or exact match for causal LM."""
    if spec.is_classification:
        return "mcc" if "cola" in name.lower() else "accuracy"
    if spec.kind == "regression":
        return "pearson"
    sample = train.select(range(min(50, len(train))))[spec.response_column][:]
    has_final_answers = any(FINAL_ANSWER_MARKER in (text or "") for text in sample)
    return "exact_match" if has_final_answers else "eval_loss"


def check_metric(metric: str, spec: TaskSpec) -> None:
    allowed = spec.metrics
    if metric not in allowed:
        what = "verbalised classification" if spec.is_verbalized else spec.kind
        raise DataError(
            f"metric '{metric}' does not apply to a {what} task (choose from: {', '.join(allowed)})"
        )


def check_verbalizer(spec: TaskSpec) -> None:
    """One distinct, non-empty word per class: the label words are the answers the model is scored on."""
    words = [w.strip() for w in spec.verbalizer]
    if len(words) != len(spec.label_names):
        names = ", ".join(str(n) for n in spec.label_names)
        raise DataError(f"--verbalizer has {len(words)} word(s) for {len(spec.label_names)} classes ({names}); "
                        "give one per class, in that order")
    if any(not w for w in words):
        raise DataError("--verbalizer has an empty word: every class needs an answer word")
    repeated = sorted({w for w in words if words.count(w) > 1})
    if repeated:
        raise DataError(f"--verbalizer repeats {', '.join(repr(w) for w in repeated)}: each class needs its own word")


def require_column(columns: Sequence[str], column: str, role: str, name: str) -> None:
    if column not in columns:
        raise DataError(
            f"{role} column '{column}' not found in dataset '{name}'; "
            f"available columns: {', '.join(columns)}"
        )


def _causal_spec(
    columns: list[str],
    name: str,
    prompt_columns: Sequence[str] | None,
    response_column: str | None,
) -> TaskSpec:
    layout = _match_causal_layout(columns)
    prompts = tuple(prompt_columns) if prompt_columns else (layout[0] if layout else ())
    response = response_column or (layout[1] if layout else None)
    if not prompts or response is None:
        raise DataError(
            f"cannot find prompt/response columns in dataset '{name}' "
            f"(available columns: {', '.join(columns)}); "
            "pass --prompt-columns and --response-column"
        )
    for column in prompts:
        require_column(columns, column, "prompt", name)
    require_column(columns, response, "response", name)
    return TaskSpec(kind="causal_lm", prompt_columns=prompts, response_column=response)


def _verbalized_spec(
    train: datasets.Dataset,
    columns: list[str],
    name: str,
    text_column: str | None,
    text_pair_column: str | None,
    label_column: str | None,
    verbalizer: Sequence[str] | None,
) -> TaskSpec:
    spec = _labelled_spec(train, columns, name, None, text_column, text_pair_column, label_column)
    if spec.kind == "regression":
        raise DataError(f"the labels of '{name}' (column '{spec.label_column}') are real numbers: a regression "
                        "target has no label words to answer with; drop --task causal_lm/--verbalizer")
    words = tuple(w.strip() for w in verbalizer or ())
    return replace(spec, kind="causal_lm", verbalizer=words)


def _labelled_spec(
    train: datasets.Dataset,
    columns: list[str],
    name: str,
    kind: str | None,
    text_column: str | None,
    text_pair_column: str | None,
    label_column: str | None,
) -> TaskSpec:
    label = label_column or _first_present(LABEL_COLUMNS, columns)
    if label is None:
        raise DataError(
            f"cannot infer the task of dataset '{name}': no label column among "
            f"{', '.join(LABEL_COLUMNS)} and no prompt/response columns "
            f"(available columns: {', '.join(columns)}); pass --label-column or --task"
        )
    require_column(columns, label, "label", name)
    text, pair = _text_columns(columns, text_column, text_pair_column, exclude=label)
    if text is None:
        raise DataError(
            f"cannot find a text column in dataset '{name}' "
            f"(available columns: {', '.join(columns)}); pass --text-column"
        )
    require_column(columns, text, "text", name)
    if pair is not None:
        require_column(columns, pair, "text pair", name)
    if kind is None:
        kind = "regression" if _has_fractional_values(train, label) else "classification"
    return TaskSpec(kind=kind, text_column=text, text_pair_column=pair, label_column=label)


def _text_columns(
    columns: list[str], text: str | None, pair: str | None, exclude: str
) -> tuple[str | None, str | None]:
    """Given text/pair flags (possibly None), fill the rest from the known layouts."""
    if text is not None:
        if pair is None:
            pair = next((b for a, b in TEXT_PAIR_LAYOUTS if a == text and b in columns), None)
        return text, pair
    for first, second in TEXT_PAIR_LAYOUTS:
        if first in columns and second in columns and (pair is None or pair == second):
            return first, second
    candidates = [c for c in columns if c not in (exclude, pair)]
    return _first_present(TEXT_COLUMNS, candidates), pair


def _match_causal_layout(columns: Sequence[str]) -> tuple[tuple[str, ...], str] | None:
    for prompts, response in CAUSAL_LAYOUTS:
        if all(c in columns for c in prompts) and response in columns:
            return prompts, response
    return None


def _first_present(candidates: Sequence[str], columns: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def _has_fractional_values(train: datasets.Dataset, column: str) -> bool:
    """True for float label columns with a non-integer value (STS-B scores), the regression cue."""
    feature = train.features[column]
    if not isinstance(feature, datasets.Value) or not feature.dtype.startswith("float"):
        return False
    values = train.with_format("numpy")[column][:]
    finite = values[~np.isnan(values)]
    return bool((finite != finite.round()).any())
