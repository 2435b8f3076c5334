"""HeadRanking: how a head-importance ranking (e.g. from LoFiT step 1) is handed to LoFiT's step 2."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from autopeft.errors import AutopeftError


@dataclass
class HeadRanking:
    """Importance score of every attention head of a model, ``scores[layer][head]`` (higher = more important).

    ``top_k(k)`` gives the selection to pass as ``LofitConfig(heads=...)``. Saved as plain JSON.
    """

    model_id: str
    scores: list[list[float]]

    def __post_init__(self) -> None:
        if not self.scores or not self.scores[0]:
            raise AutopeftError("a head ranking needs at least one layer with one head")
        widths = {len(row) for row in self.scores}
        if len(widths) != 1:
            raise AutopeftError(f"every layer must score the same number of heads, got {sorted(widths)}")
        self.scores = [[float(score) for score in row] for row in self.scores]

    @property
    def num_layers(self) -> int:
        return len(self.scores)

    @property
    def num_heads(self) -> int:
        return len(self.scores[0])

    def within_layers(self) -> HeadRanking:
        """The same heads ranked within their layers first: every layer's best head comes before any layer's
        second best, and so on (among equal ranks, the higher score first). ``top_k(k)`` then spreads the k heads
        over the layers, as LoFiT's per-layer selection would, instead of following the scores' layer-wide scale."""
        largest = max(max(row) for row in self.scores) or 1.0
        scores = []
        for row in self.scores:
            order = sorted(range(len(row)), key=lambda head: -row[head])
            rank = {head: position for position, head in enumerate(order)}
            scores.append([len(row) - rank[head] + 0.5 * row[head] / largest for head in range(len(row))])
        return HeadRanking(self.model_id, scores)

    def top_k(self, k: int) -> dict[int, list[int]]:
        """The ``k`` highest-scoring heads as ``{layer: sorted heads}``; ties go to the lower layer, then head."""
        total = self.num_layers * self.num_heads
        if not 1 <= k <= total:
            raise AutopeftError(f"k must be between 1 and {total} heads, got {k}")
        ranked = sorted(
            ((layer, head) for layer in range(self.num_layers) for head in range(self.num_heads)),
            key=lambda position: (-self.scores[position[0]][position[1]], position[0], position[1]),
        )
        selection: dict[int, list[int]] = {}
        for layer, head in ranked[:k]:
            selection.setdefault(layer, []).append(head)
        return {layer: sorted(heads) for layer, heads in sorted(selection.items())}

    @classmethod
    def from_tensor(cls, model_id: str, scores: torch.Tensor) -> HeadRanking:
        """From a ``[layers, heads]`` tensor, e.g. :func:`~autopeft.tuners.lofit.model.head_norms`."""
        if scores.dim() != 2:
            raise AutopeftError(f"head scores must be [layers, heads], got shape {tuple(scores.shape)}")
        return cls(model_id=model_id, scores=scores.detach().float().cpu().tolist())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> HeadRanking:
        data = json.loads(Path(path).read_text())
        return cls(model_id=data["model_id"], scores=data["scores"])
