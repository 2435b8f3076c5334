"""What a selection looks like: label (and source) balance against the pool and the target, and a 2-D picture."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autopeft._imports import optional_dependency

PLOT_POINTS = 5000  # at most this many pool (and selected, and target) points are drawn


def label_balance(pool_labels: np.ndarray, selected: np.ndarray, target_labels: np.ndarray | None = None,
                  label_names: Sequence[str] = ()) -> list[dict]:
    """One row per class: counts and shares in the pool, the selection and (optionally) the target.

    Float (regression) labels give one row each for their mean and standard deviation instead.
    """
    pool_labels = np.asarray(pool_labels)
    chosen = pool_labels[np.asarray(selected, dtype=np.int64)]
    columns = {"pool": pool_labels, "selected": chosen}
    if target_labels is not None:
        columns["target"] = np.asarray(target_labels)
    if np.issubdtype(pool_labels.dtype, np.floating):
        return [{"label": stat, **{name: float(getattr(np, stat)(values)) if len(values) else None
                                   for name, values in columns.items()}} for stat in ("mean", "std")]
    classes = sorted(set().union(*(np.unique(values).tolist() for values in columns.values())))
    rows = []
    for label in classes:
        row = {"label": label_names[label] if 0 <= label < len(label_names) else str(label)}
        for name, values in columns.items():
            count = int((values == label).sum())
            row[name] = count
            row[f"{name}_share"] = count / len(values) if len(values) else 0.0
        rows.append(row)
    return rows


def source_balance(sources: Sequence[tuple[str, int]], selected: np.ndarray) -> list[dict]:
    """One row per pool dataset: how many of its examples the pool holds and the selection took."""
    pool = Counter(name for name, _ in sources)
    chosen = Counter(sources[i][0] for i in np.asarray(selected, dtype=np.int64))
    total, picked = len(sources), max(len(selected), 1)
    return [{"source": name, "pool": count, "pool_share": count / total, "selected": chosen.get(name, 0),
             "selected_share": chosen.get(name, 0) / picked} for name, count in pool.items()]


def _markdown_table(rows: list[dict], key: str) -> str:
    if not rows:
        return ""
    sides = [name for name in ("pool", "selected", "target") if name in rows[0]]
    shares = f"{sides[0]}_share" in rows[0]
    header = [key] + [f"{side} {'n (%)' if shares else ''}".strip() for side in sides]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(sides)) + "|"]
    for row in rows:
        cells = [str(row[key])]
        for side in sides:
            value = row[side]
            if shares:
                cells.append(f"{value} ({100 * row[f'{side}_share']:.1f} %)")
            else:
                cells.append("-" if value is None else f"{value:.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_report(*, title: str, summary: dict, details: dict | None = None, labels: list[dict] | None = None,
                     sources: list[dict] | None = None, target_labels: list[dict] | None = None) -> str:
    """A short markdown report: a summary list, the strategy's own details, then the balance tables that apply."""
    parts = [f"# {title}", ""]
    parts += [f"- {name}: {value}" for name, value in summary.items()]
    if details:
        parts += ["", "## Strategy details", ""]
        parts += [f"- {name}: {f'{value:.4g}' if isinstance(value, float) else value}"
                  for name, value in details.items()]
    if labels:
        parts += ["", "## Label balance (selection vs pool" + (" and target)" if "target" in labels[0] else ")"), "",
                  _markdown_table(labels, "label")]
    if sources:
        parts += ["", "## Pool datasets", "", _markdown_table(sources, "source")]
    if target_labels:
        parts += ["", "## Target labels (the pool is unlabelled)", "", _markdown_table(target_labels, "label")]
    return "\n".join(parts) + "\n"


def target_label_rows(target_labels: np.ndarray, label_names: Sequence[str] = ()) -> list[dict]:
    """Class counts of the target alone (for an unlabelled pool), in :func:`label_balance`'s row format."""
    values = np.asarray(target_labels)
    if np.issubdtype(values.dtype, np.floating):
        return [{"label": stat, "target": float(getattr(np, stat)(values))} for stat in ("mean", "std")]
    rows = []
    for label in np.unique(values).tolist():
        count = int((values == label).sum())
        rows.append({"label": label_names[label] if 0 <= label < len(label_names) else str(label),
                     "target": count, "target_share": count / len(values)})
    return rows


def embedding_plot(pool_emb: np.ndarray, selected_idx: np.ndarray, target_emb: np.ndarray | None,
                   path: str | Path, *, title: str | None = None, seed: int = 0) -> None:
    """A PNG scatter of the pool (grey), the selection (colour) and the target (crosses) on the pool's first two
    principal components. Large sets are subsampled (seeded) to :data:`PLOT_POINTS` points each."""
    with optional_dependency("matplotlib", "the embedding plot"):
        from matplotlib.figure import Figure
    pool = np.asarray(pool_emb, dtype=np.float64)
    selected_idx = np.asarray(selected_idx, dtype=np.int64)
    mean = pool.mean(axis=0)
    centred = pool - mean
    # the top two right singular vectors of a sample of the pool (enough for a picture)
    rng = np.random.default_rng(seed)
    sample = centred[rng.choice(len(pool), size=min(len(pool), 20000), replace=False)]
    _, _, components = np.linalg.svd(sample, full_matrices=False)
    axes2 = components[:2].T if components.shape[0] >= 2 else np.eye(pool.shape[1], 2)

    def project(rows: np.ndarray) -> np.ndarray:
        points = (rows - mean) @ axes2
        return points if points.shape[1] == 2 else np.pad(points, ((0, 0), (0, 2 - points.shape[1])))

    def thin(indices: np.ndarray) -> np.ndarray:
        return indices if len(indices) <= PLOT_POINTS else rng.choice(indices, size=PLOT_POINTS, replace=False)

    figure = Figure(figsize=(6.5, 5.5))
    axes = figure.add_subplot()
    shown = project(pool[thin(np.arange(len(pool)))])
    axes.scatter(shown[:, 0], shown[:, 1], s=3, c="lightgrey", label=f"pool ({len(pool):,})", rasterized=True)
    if target_emb is not None and len(target_emb):
        target = np.asarray(target_emb, dtype=np.float64)
        shown = project(target[thin(np.arange(len(target)))])
        axes.scatter(shown[:, 0], shown[:, 1], s=8, c="tab:orange", marker="x", linewidths=0.6,
                     label=f"target ({len(target):,})", rasterized=True)
    shown = project(pool[thin(selected_idx)])
    axes.scatter(shown[:, 0], shown[:, 1], s=5, c="tab:blue", label=f"selected ({len(selected_idx):,})",
                 rasterized=True)
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2")
    axes.set_title(title or "selection in embedding space (PCA of the pool)")
    axes.legend(loc="best", markerscale=3, fontsize=8)
    figure.tight_layout()
    figure.savefig(str(path), dpi=110)
