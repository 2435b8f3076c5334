"""A decoded search-space point: which PEFT modules go where, at which size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModuleChoice:
    type: str                         # a schema.MODULE_TYPES entry
    sizes: dict[int, float]           # layer -> size (rank / bottleneck / tokens / heads / density; 1 if unsized)
    targets: tuple[str, ...] = ()     # matrix roles, where the module type has them
    options: dict[str, Any] = field(default_factory=dict)  # alpha, scaling, location

    @property
    def layers(self) -> list[int]:
        return sorted(self.sizes)

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"layers": self.layers}
        distinct = set(self.sizes.values())
        data["size"] = next(iter(distinct)) if len(distinct) == 1 else {int(k): v for k, v in sorted(self.sizes.items())}
        if self.targets:
            data["targets"] = list(self.targets)
        data.update(self.options)
        return data


@dataclass(frozen=True)
class PeftPoint:
    modules: dict[str, ModuleChoice]
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.modules

    def to_dict(self) -> dict:
        """The point in the space's YAML vocabulary (what `autopeft export` writes as point.yaml)."""
        data: dict[str, Any] = {"modules": {name: m.to_dict() for name, m in self.modules.items()}}
        if self.training:
            data["training"] = dict(self.training)
        return data

    def describe(self) -> str:
        if not self.modules:
            return "(no PEFT module: head only)"
        parts = []
        for name, module in self.modules.items():
            sizes = sorted(set(module.sizes.values()))
            size = "" if module.type in ("ia3", "bitfit", "ln_tuning") else f" size {'/'.join(f'{s:g}' for s in sizes)}"
            parts.append(f"{name}{size} on {len(module.layers)} layer(s)")
        return "; ".join(parts)
