"""SPT's allocation (He et al., ICCV 2023): from a sensitivity map and a trainable-parameter budget to
structured (LoRA) tuning where many sensitive weights cluster and unstructured (sparse) tuning elsewhere.

For a number τ of weights, take the global top-τ sensitivities. A weight matrix W whose count c(W)
of selected weights reaches P_lora(W)/α (P_lora = r·(d_in + d_out)) gets LoRA of rank r; any other W
tunes its c(W) selected entries. The parameter count is non-decreasing in τ, so a binary search finds
the largest τ within the budget; the gap a matrix switching to LoRA leaves is filled with the next
most sensitive entries of sparse matrices (never enough to switch another), so the allocation meets
the budget to within a few parameters.

Structure is decided per (layer, role): a role with several matrices (Llama's gate and up projections
are ``ffn_in``) counts them together, so LoRA points stay expressible by role. Biases and norm
vectors are not part of the ranking (the sensitivity map scores weight matrices only).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from autopeft.arch import architecture_for
from autopeft.errors import AutopeftError
from autopeft.space.point import ModuleChoice, PeftPoint

SPT_RANK = 8
SPT_ALPHA = 10.0      # a matrix goes structured when c(W) >= P_lora(W) / alpha


@dataclass(frozen=True)
class _Matrix:
    name: str             # the module's name in the model (the sensitivity map's key)
    layer: int
    role: str
    rows: int
    cols: int
    order: np.ndarray     # flat indices, most sensitive first
    sorted_scores: np.ndarray  # descending


@dataclass
class SptAllocation:
    budget: int
    tau: int                                    # weights selected by the global threshold
    structured: dict[int, list[str]]            # layer -> roles that get LoRA
    sparse: dict[str, torch.Tensor]             # module name -> flat indices tuned sparsely
    lora_params: int
    sparse_params: int
    rank: int = SPT_RANK
    where: dict[str, tuple[int, str, int]] = field(default_factory=dict, repr=False)  # name -> (layer, role, numel)

    @property
    def params(self) -> int:
        return self.lora_params + self.sparse_params

    def to_point(self, mask_path: str | Path) -> PeftPoint:
        """The allocation as a search-space point; the sparse part's mask is saved to ``mask_path``."""
        from autopeft.tuners.sparse import SparseMask

        modules: dict[str, ModuleChoice] = {}
        if self.structured:
            roles = sorted({role for layer_roles in self.structured.values() for role in layer_roles})
            modules["lora"] = ModuleChoice(
                "lora", {layer: self.rank for layer in sorted(self.structured)}, tuple(roles),
                {"alpha": 2.0, "matrices": {layer: list(r) for layer, r in sorted(self.structured.items())}},
            )
        if self.sparse:
            SparseMask(self.sparse).save(mask_path)
            modules["sparse"] = ModuleChoice(
                "sparse", self._sparse_density_per_layer(), tuple(sorted(self._sparse_roles())),
                {"mask": str(mask_path), "entries": self.sparse_params},
            )
        return PeftPoint(modules)

    def _sparse_roles(self) -> set[str]:
        return {self.where[name][1] for name in self.sparse}

    def _sparse_density_per_layer(self) -> dict[int, float]:
        chosen: dict[int, int] = {}
        total: dict[int, int] = {}
        for name, indices in self.sparse.items():
            layer, _, numel = self.where[name]
            chosen[layer] = chosen.get(layer, 0) + indices.numel()
            total[layer] = total.get(layer, 0) + numel
        return {layer: round(chosen[layer] / total[layer], 6) for layer in sorted(chosen)}


def _matrices(scores: dict[str, torch.Tensor], model_config) -> list[_Matrix]:
    arch = architecture_for(model_config)
    matrices = []
    for layer in range(model_config.num_hidden_layers):
        for role, relatives in arch.matrices.items():
            for relative in relatives:
                suffix = arch.module_name(layer, relative)
                keys = [k for k in scores if k == suffix or k.endswith("." + suffix)]
                if len(keys) != 1:
                    raise AutopeftError(f"the sensitivity map has {len(keys)} entries for '{suffix}' (expected 1)")
                values = scores[keys[0]].detach().float().reshape(-1).cpu().numpy()
                order = np.argsort(-values, kind="stable")  # ties: lower index first
                rows, cols = scores[keys[0]].shape
                matrices.append(_Matrix(keys[0], layer, role, rows, cols, order, values[order]))
    return matrices


def _counts_at(matrices: list[_Matrix], threshold: float) -> list[int]:
    """c(W) at a global threshold: entries whose score is at least it."""
    return [int(np.searchsorted(-m.sorted_scores, -threshold, side="right")) for m in matrices]


def _groups(matrices: list[_Matrix]) -> dict[tuple[int, str], list[int]]:
    groups: dict[tuple[int, str], list[int]] = {}
    for index, m in enumerate(matrices):
        groups.setdefault((m.layer, m.role), []).append(index)
    return groups


def _allocate(matrices, groups, counts, rank, alpha) -> tuple[set[tuple[int, str]], int, int]:
    structured, lora, sparse = set(), 0, 0
    for key, members in groups.items():
        p_lora = sum(rank * (matrices[i].rows + matrices[i].cols) for i in members)
        chosen = sum(counts[i] for i in members)
        if chosen >= p_lora / alpha:
            structured.add(key)
            lora += p_lora
        else:
            sparse += chosen
    return structured, lora, sparse


def spt_budget_ceiling(model_config, rank: int = SPT_RANK) -> int:
    """The largest budget SPT can allocate: rank-``rank`` LoRA on every role matrix of every layer."""
    arch = architecture_for(model_config)
    per_layer = sum(rank * (rows + cols)
                    for shapes in arch.matrix_shapes(model_config).values() for rows, cols in shapes)
    return per_layer * arch.dims(model_config).num_layers


def parse_spt_budgets(text: str, model_config, model_params: int, *, rank: int = SPT_RANK) -> list[tuple[str, int]]:
    """``"0.1%,50000,120k"`` -> ``[(entry, parameters), ...]``, every entry checked against the model, so a
    budget SPT cannot meet fails before the sensitivity map is computed."""
    from autopeft.space import parse_max_params

    entries = [entry.strip() for entry in text.split(",")]
    if not any(entries):
        raise AutopeftError("--budgets needs at least one budget (examples: 50000, 120k, 0.5%)")
    ceiling = spt_budget_ceiling(model_config, rank)
    budgets: list[tuple[str, int]] = []
    for entry in filter(None, entries):
        try:
            budget = parse_max_params(entry, model_params)
        except AutopeftError:
            raise AutopeftError(f"--budgets entry '{entry}' is not a positive count or percentage "
                                "(examples: 50000, 120k, 0.5%)") from None
        if budget < 1:
            raise AutopeftError(f"--budgets entry '{entry}' is less than one parameter")
        if budget > ceiling:
            raise AutopeftError(f"--budgets entry '{entry}' is {budget:,} parameters, more than SPT can allocate on "
                                f"this model (rank-{rank} LoRA on every matrix: {ceiling:,})")
        if any(entry == seen for seen, _ in budgets):
            raise AutopeftError(f"--budgets lists '{entry}' twice")
        budgets.append((entry, budget))
    return budgets


def spt_allocation(scores: dict[str, torch.Tensor], model_config, budget: int, *, rank: int = SPT_RANK,
                   alpha: float = SPT_ALPHA) -> SptAllocation:
    """SPT's structured/unstructured split of the role matrices that best fills ``budget`` parameters."""
    if budget < 1:
        raise AutopeftError("the SPT budget must be at least one parameter")
    matrices = _matrices(scores, model_config)
    groups = _groups(matrices)
    everything = np.sort(np.concatenate([m.sorted_scores for m in matrices]))[::-1]

    def evaluate(tau: int):
        counts = _counts_at(matrices, float(everything[tau - 1])) if tau else [0] * len(matrices)
        structured, lora, sparse = _allocate(matrices, groups, counts, rank, alpha)
        return counts, structured, lora, sparse

    ceiling = sum(rank * (m.rows + m.cols) for m in matrices)
    if budget > ceiling:
        raise AutopeftError(f"an SPT budget of {budget:,} exceeds rank-{rank} LoRA on every matrix "
                            f"({ceiling:,} params)")
    low, high = 0, len(everything)       # the largest tau with params(tau) <= budget
    while low < high:
        mid = (low + high + 1) // 2
        _, _, lora, sparse = evaluate(mid)
        if lora + sparse <= budget:
            low = mid
        else:
            high = mid - 1
    counts, structured, lora, sparse = evaluate(low)
    counts, left = _top_up(matrices, groups, counts, structured, budget - lora - sparse, rank, alpha)
    if left > 0.01 * budget and low < len(everything):
        # the sparse matrices cannot take the rest without reaching the LoRA threshold: take the next tau
        # (one more matrix goes LoRA) and give back its excess from the least sensitive sparse entries
        over_counts, over_structured, over_lora, over_sparse = evaluate(low + 1)
        excess = over_lora + over_sparse - budget
        if excess <= over_sparse:
            low, structured, lora = low + 1, over_structured, over_lora
            counts = _trim(matrices, over_counts, structured, excess)
        else:  # not even that fits: fill the sparse matrices past SPT's threshold
            counts, _ = _top_up(matrices, groups, counts, structured, left, rank, alpha=None)
    sparse_indices = {}
    for index, m in enumerate(matrices):
        if (m.layer, m.role) not in structured and counts[index]:
            sparse_indices[m.name] = torch.from_numpy(np.sort(m.order[: counts[index]]).astype(np.int64))
    sparse_params = sum(t.numel() for t in sparse_indices.values())
    layers: dict[int, list[str]] = {}
    for layer, role in sorted(structured):
        layers.setdefault(layer, []).append(role)
    where = {m.name: (m.layer, m.role, m.rows * m.cols) for m in matrices}
    return SptAllocation(budget, low, layers, sparse_indices, lora, sparse_params, rank, where)


def _top_up(matrices, groups, counts, structured, remaining: int, rank: int,
            alpha: float | None) -> tuple[list[int], int]:
    """Spend what the threshold left with the next most sensitive entries of sparse matrices, keeping each
    role below the count that would switch it to LoRA (no limit with ``alpha=None``). Returns the counts
    and what could not be spent."""
    counts = list(counts)
    room = {}
    for key, members in groups.items():
        if key not in structured:
            p_lora = sum(rank * (matrices[i].rows + matrices[i].cols) for i in members)
            limit = (int(np.ceil(p_lora / alpha)) - 1 if alpha
                     else sum(matrices[i].rows * matrices[i].cols for i in members))
            room[key] = limit - sum(counts[i] for i in members)
    heap = [(-float(matrices[i].sorted_scores[counts[i]]), i) for key, members in groups.items()
            if key not in structured for i in members if counts[i] < matrices[i].rows * matrices[i].cols]
    heapq.heapify(heap)
    while remaining > 0 and heap:
        _, i = heapq.heappop(heap)
        key = (matrices[i].layer, matrices[i].role)
        if room[key] <= 0:
            continue
        counts[i] += 1
        room[key] -= 1
        remaining -= 1
        if counts[i] < matrices[i].rows * matrices[i].cols:
            heapq.heappush(heap, (-float(matrices[i].sorted_scores[counts[i]]), i))
    return counts, remaining


def _trim(matrices, counts, structured, excess: int) -> list[int]:
    """Drop the ``excess`` least sensitive selected entries of sparse matrices."""
    counts = list(counts)
    heap = [(float(matrices[i].sorted_scores[counts[i] - 1]), i) for i, m in enumerate(matrices)
            if (m.layer, m.role) not in structured and counts[i] > 0]
    heapq.heapify(heap)
    while excess > 0 and heap:
        _, i = heapq.heappop(heap)
        counts[i] -= 1
        excess -= 1
        if counts[i] > 0:
            heapq.heappush(heap, (float(matrices[i].sorted_scores[counts[i] - 1]), i))
    return counts

def _placements(point: PeftPoint, arch) -> set[tuple[int, str, str]]:
    """(layer, role, 'lora'|'sparse') triples a point tunes: what SPT's allocation decides."""
    from autopeft.modules.lora import matrices_per_layer

    triples = set()
    for module in point.modules.values():
        if module.type == "lora":
            triples |= {(layer, role, "lora") for layer, roles in matrices_per_layer(module).items() for role in roles}
        elif module.type == "sparse":
            if "mask" in module.options:
                continue  # the caller passes the placements of a mask-file point
            triples |= {(layer, role, "sparse") for layer in module.sizes for role in module.targets}
    return triples


def allocation_placements(allocation: SptAllocation) -> set[tuple[int, str, str]]:
    lora = {(layer, role, "lora") for layer, roles in allocation.structured.items() for role in roles}
    sparse = {(allocation.where[name][0], allocation.where[name][1], "sparse") for name in allocation.sparse}
    return lora | sparse


def nearest_space_params(space, allocation: SptAllocation, rng: np.random.Generator, *, draws: int = 3000,
                         max_params: int | None = None) -> dict | None:
    """The space point closest to an SPT allocation: most shared (layer, role, LoRA/sparse) placements
    (Jaccard), then the closest parameter count. None when the space has neither LoRA nor sparse tuning.

    A search space rarely expresses SPT's exact per-matrix choice; its nearest point is what the
    search can start from (the exact allocation is `autopeft sensitivity`'s point.yaml)."""
    from autopeft.space import count_trainable_params

    if not {"lora", "sparse"} & set(space.spec.modules):
        return None
    arch = architecture_for(space.model_config)
    target = allocation_placements(allocation)
    best, best_score = None, -np.inf
    for _ in range(draws):
        params = space.active_params(space.sample(rng))
        point = space.decode(params)
        count = count_trainable_params(point, space.model_config)
        if count == 0 or (max_params is not None and count > max_params):
            continue
        placements = _placements(point, arch)
        union = len(target | placements)
        jaccard = len(target & placements) / union if union else 0.0
        score = jaccard - 0.25 * abs(np.log(count / max(allocation.params, 1)))
        if score > best_score:
            best, best_score = params, score
    return best


def layer_totals(scores: dict[str, torch.Tensor], model_config) -> list[float]:
    """Summed sensitivity of each layer's role matrices (for restricting placement to sensitive layers)."""
    arch = architecture_for(model_config)
    totals = []
    for layer in range(model_config.num_hidden_layers):
        suffixes = tuple("." + arch.module_name(layer, r) for rs in arch.matrices.values() for r in rs)
        totals.append(float(sum(t.float().sum() for k, t in scores.items() if ("." + k).endswith(suffixes))))
    return totals


def most_sensitive_layers(scores: dict[str, torch.Tensor], model_config, k: int) -> list[int]:
    totals = layer_totals(scores, model_config)
    if not 1 <= k <= len(totals):
        raise AutopeftError(f"--sensitive-layers must be between 1 and {len(totals)}, got {k}")
    return sorted(sorted(range(len(totals)), key=lambda layer: -totals[layer])[:k])
