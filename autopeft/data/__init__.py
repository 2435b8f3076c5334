"""Data layer: load a task (`load_task`), tokenise it once (`tokenize_task`), batch it with little
padding (`length_grouped_batches`, `collate`) and score predictions (`compute_metrics`)."""

from autopeft.data.batching import collate, length_grouped_batches
from autopeft.data.loading import clear_task_cache, load_task
from autopeft.data.metrics import (
    TrivialScore,
    compute_metrics,
    exact_match,
    extract_final_number,
    input_blind_loss,
    is_higher_better,
    loss_trivial_score,
    metric_stderr,
    trivial_score,
)
from autopeft.data.tasks import METRICS_BY_KIND, TaskData, TaskSpec
from autopeft.data.tokenize import (
    IGNORE_INDEX,
    RaggedArray,
    TokenizedSplit,
    TokenizedTask,
    clear_tokenization_cache,
    format_prompt,
    tokenize_task,
)


def clear_caches() -> None:
    """Forget every loaded and tokenised task of this process."""
    clear_task_cache()
    clear_tokenization_cache()


__all__ = [
    "IGNORE_INDEX",
    "METRICS_BY_KIND",
    "RaggedArray",
    "TaskData",
    "TaskSpec",
    "TokenizedSplit",
    "TokenizedTask",
    "clear_caches",
    "clear_task_cache",
    "clear_tokenization_cache",
    "collate",
    "compute_metrics",
    "exact_match",
    "extract_final_number",
    "format_prompt",
    "is_higher_better",
    "length_grouped_batches",
    "load_task",
    "tokenize_task",
    "input_blind_loss",
    "TrivialScore",
    "loss_trivial_score",
    "metric_stderr",
    "trivial_score",
]
