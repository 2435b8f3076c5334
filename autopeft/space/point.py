"""A decoded search-space point: which PEFT modules go where, at which size."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.modules import get_module_type


@dataclass(frozen=True)
class ModuleChoice:
    type: str                         # a registered module type (autopeft.modules.MODULE_TYPES)
    sizes: dict[int, float]           # layer -> size (rank / bottleneck / tokens / heads / density; 1 if unsized)
    targets: tuple[str, ...] = ()     # matrix roles, where the module type has them
    options: dict[str, Any] = field(default_factory=dict)  # alpha, scaling, location
    lr: float | None = None           # this module's learning rate when the space gives one (None: the type's default)

    @property
    def layers(self) -> list[int]:
        return sorted(self.sizes)

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"layers": self.layers}
        distinct = set(self.sizes.values())
        data["size"] = (next(iter(distinct)) if len(distinct) == 1
                        else {int(k): v for k, v in sorted(self.sizes.items())})
        if self.targets:
            data["targets"] = list(self.targets)
        data.update(self.options)
        if self.lr is not None:
            data["lr"] = self.lr
        return data


_TRAINING_LABELS = {"lr_scale": "lr x", "learning_rate": "lr ", "weight_decay": "weight decay ",
                    "warmup_ratio": "warm-up "}
"""How :meth:`PeftPoint.describe` names a searched training value."""


@dataclass(frozen=True)
class PeftPoint:
    modules: dict[str, ModuleChoice]
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # {"strategy": name, "size": count|fraction|"N%"|None}

    @property
    def is_empty(self) -> bool:
        return not self.modules

    def to_dict(self) -> dict:
        """The point in the space's YAML vocabulary (what `autopeft export` writes as point.yaml)."""
        data: dict[str, Any] = {"modules": {name: m.to_dict() for name, m in self.modules.items()}}
        if self.training:
            data["training"] = dict(self.training)
        if self.data:
            data["data"] = dict(self.data)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PeftPoint:
        """The inverse of :meth:`to_dict` (a module's type is its name unless it says ``type:``)."""
        modules = {}
        for name, spec in (data.get("modules") or {}).items():
            spec = dict(spec)
            kind = spec.pop("type", name)
            layers = [int(layer) for layer in spec.pop("layers")]
            size = spec.pop("size", 1)
            sizes = ({int(k): v for k, v in size.items()} if isinstance(size, dict)
                     else {layer: size for layer in layers})
            targets = tuple(spec.pop("targets", ()))
            lr = spec.pop("lr", None)
            modules[name] = ModuleChoice(kind, sizes, targets, spec, None if lr is None else float(lr))
        return cls(modules, dict(data.get("training") or {}), dict(data.get("data") or {}))

    @classmethod
    def from_file(cls, path: str | Path) -> PeftPoint:
        """A point YAML (``autopeft export``'s point.yaml, ``autopeft sensitivity``'s SPT points); a module's
        ``mask`` file is relative to the YAML's folder."""
        import yaml

        from autopeft.errors import AutopeftError

        path = Path(path)
        if not path.is_file():
            raise AutopeftError(f"point file '{path}' does not exist")
        try:
            point = cls.from_dict(yaml.safe_load(path.read_text()) or {})
        except (yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as exc:
            detail = " ".join(str(exc).split())  # YAML errors span lines; the CLI prints one
            raise AutopeftError(f"'{path}' is not a point file: {type(exc).__name__}: {detail}") from None
        if point.is_empty:
            raise AutopeftError(f"point file '{path}' has no modules")
        modules = {}
        for name, module in point.modules.items():
            if "mask" in module.options:
                options = {**module.options, "mask": str((path.parent / module.options["mask"]).resolve())}
                module = ModuleChoice(module.type, module.sizes, module.targets, options, module.lr)
            modules[name] = module
        return cls(modules, point.training, point.data)

    def save(self, path: str | Path) -> None:
        """As YAML; mask files in the same folder are written relative to it, so the folder can move."""
        import yaml

        path = Path(path)
        data = self.to_dict()
        for spec in data["modules"].values():
            mask = Path(spec["mask"]) if "mask" in spec else None
            if mask is not None and mask.resolve().parent == path.parent.resolve():
                spec["mask"] = mask.name
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def describe(self) -> str:
        if not self.modules:
            return "(no PEFT module: head only)"
        parts = []
        for name, module in self.modules.items():
            sizes = sorted(set(module.sizes.values()))
            size = "" if get_module_type(module.type).size is None else f" size {'/'.join(f'{s:g}' for s in sizes)}"
            rate = "" if module.lr is None else f" at lr {module.lr:.2g}"
            # the matrices tell apart points of one type and size (LoRA r8 on query/value vs on every linear layer)
            where = f"{'/'.join(module.targets)} of " if module.targets else ""
            parts.append(f"{name}{size} on {where}{len(module.layers)} layer(s){rate}")
        # the searched training values tell apart points whose modules are the same (the default space's lr_scale)
        for key, value in self.training.items():
            label = _TRAINING_LABELS.get(key, key.replace("_", " "))
            parts.append(f"{label}{value:.2g}" if isinstance(value, (int, float)) else f"{label}{value}")
        return "; ".join(parts)
