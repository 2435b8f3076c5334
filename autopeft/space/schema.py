"""The search-space file format, validated with pydantic; errors name the file and the field."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autopeft.arch import MATRIX_ROLES
from autopeft.errors import SpaceError
from autopeft.modules import MODULE_TYPES

ADAPTER_LOCATIONS = ("ffn", "attention")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Choice(_Strict):
    choices: list[Any] = Field(min_length=1)


class Range(_Strict):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError("low must be smaller than high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SizeGrid(_Strict):
    grid: list[float] = Field(min_length=1)
    # grid written for this hidden size; rescaled to the model's
    scale_to_hidden: int | None = Field(default=None, ge=1)
    tie: Literal["global", "per_layer"] = "global"

    @field_validator("grid")
    @classmethod
    def _non_negative(cls, grid):
        if any(not math.isfinite(v) for v in grid):
            raise ValueError("sizes must be finite numbers")
        if any(v < 0 for v in grid):
            raise ValueError("sizes must be >= 0")
        if not any(v > 0 for v in grid):
            shown = [int(v) if v == int(v) else v for v in grid]
            raise ValueError(f"a grid needs at least one size > 0 (0 means the module is off), got {shown}")
        return grid


class ModuleSpec(_Strict):
    """One module type's entry in a space. Which fields apply to which type is the type's to say
    (:class:`autopeft.modules.ModuleType`); :class:`~autopeft.space.SearchSpace` checks it."""

    targets: Union[list[str], Choice, None] = None   # matrix roles, for types that have them
    size: Union[SizeGrid, float, None] = None        # fixed number, or a grid to search
    scaling: Union[float, Choice, None] = None       # parallel adapter output scaling
    location: Union[str, Choice, None] = None        # adapters: ffn | attention
    alpha: Union[float, Choice, None] = None         # lora_alpha as a multiple of the rank
    # this module's learning rate: fixed, searched in a range, or "prior" (searched in the type's own range,
    # log scale); absent: the type's default (or --lr). Its parameters train in their own optimizer group.
    lr: Union[float, Range, Literal["prior"], None] = None
    optional: bool = False                           # adds an on/off dimension

    @field_validator("size", mode="before")
    @classmethod
    def _not_a_bool(cls, size):
        if isinstance(size, bool):
            raise ValueError(f"a size must be a number or {{grid: [...]}}, got {size}")
        return size

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size):
        if isinstance(size, (int, float)) and not (math.isfinite(size) and size > 0):
            raise ValueError(f"a fixed size must be a number > 0, got {size} (to make a module optional, "
                             "use 'optional: true' or a grid with 0 in it)")
        return size

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, lr):
        low = lr.low if isinstance(lr, Range) else lr
        if isinstance(low, (int, float)) and not (math.isfinite(low) and low > 0):
            raise ValueError(f"a learning rate must be a number > 0, got {low}")
        return lr

    @field_validator("targets")
    @classmethod
    def _known_roles(cls, targets):
        sets = targets.choices if isinstance(targets, Choice) else ([targets] if targets is not None else [])
        for target_set in sets:
            if not isinstance(target_set, list) or not target_set:
                raise ValueError("each target set must be a non-empty list of matrix roles")
            unknown = [t for t in target_set if t not in MATRIX_ROLES]
            if unknown:
                raise ValueError(f"unknown matrix role(s) {unknown}; known: {list(MATRIX_ROLES)}")
        return targets

    @field_validator("location")
    @classmethod
    def _known_location(cls, location):
        values = location.choices if isinstance(location, Choice) else ([location] if location else [])
        unknown = [v for v in values if v not in ADAPTER_LOCATIONS]
        if unknown:
            raise ValueError(f"unknown location(s) {unknown}; known: {list(ADAPTER_LOCATIONS)}")
        return location


OPTION_FIELDS = tuple(name for name in ModuleSpec.model_fields if name not in ("targets", "size", "lr", "optional"))
"""The ModuleSpec fields that are module types' options (a type says which it has); a new option is one field."""


class Placement(_Strict):
    mode: Literal["all", "shared", "per_module"] = "all"   # shared: one on/off bit per layer for every module
    layers: list[int] | None = None                        # restrict to these layer indices


class DataSpec(_Strict):
    """Which training examples a trial tunes on, as search dimensions (fixed values or ``{choices: [...]}``).

    ``strategy`` names a data-selection strategy (``autopeft.priors.selection``); ``size`` is a count (> 1) or
    a fraction (<= 1) of the train split, or a string like ``"10%"``; the trial's fidelity then draws from the
    first examples of that selection.
    """

    strategy: Union[str, Choice] = "random"
    size: Union[float, str, Choice, None] = None

    @field_validator("size")
    @classmethod
    def _positive(cls, size):
        for value in size.choices if isinstance(size, Choice) else [size]:
            if value is None:
                continue
            number = value
            if isinstance(value, str):
                try:
                    number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
                except ValueError:
                    raise ValueError(f"size {value!r} is neither a number nor a percentage") from None
            if not (isinstance(number, (int, float)) and number > 0):
                raise ValueError(f"size must be positive, got {value!r}")
        return size


class SpaceSpec(_Strict):
    name: str
    description: str = ""
    placement: Placement = Placement()
    modules: dict[str, ModuleSpec] = Field(min_length=1)
    training: dict[str, Union[float, Range, Choice]] = Field(default_factory=dict)
    data: DataSpec | None = None

    @field_validator("modules")
    @classmethod
    def _known_modules(cls, modules):
        unknown = [m for m in modules if m not in MODULE_TYPES]
        if unknown:
            raise ValueError(f"unknown module type(s) {unknown}; known: {list(MODULE_TYPES)}")
        return modules

    @field_validator("training")
    @classmethod
    def _known_training(cls, training):
        unknown = [k for k in training if k not in TRAINING_KEYS]
        if unknown:
            raise ValueError(f"unknown training key(s) {unknown}; known: {list(TRAINING_KEYS)}")
        for key in ("learning_rate", "lr_scale"):
            value = training.get(key)
            values = (value.choices if isinstance(value, Choice) else [value.low] if isinstance(value, Range)
                      else [] if value is None else [value])
            bad = [v for v in values if not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0)]
            if bad:
                raise ValueError(f"{key} must be a number > 0, got {bad[0]}")
        return training


TRAINING_KEYS = ("learning_rate", "lr_scale", "weight_decay", "warmup_ratio")
"""``learning_rate``: one rate for every parameter (overrides the module types' rates); ``lr_scale``: a factor on
every module's rate (one search dimension for the whole point)."""


_TYPE_TAGS = {"int", "float", "str", "bool", "none"}


def _field_path(loc: tuple) -> str:
    """The YAML path of an error, without pydantic's union-branch tags (``SizeGrid``, ``list[str]``...)."""
    def is_tag(part) -> bool:
        text = str(part)
        return text[:1].isupper() or "[" in text or text in _TYPE_TAGS or text.startswith("function-")

    return ".".join(str(part) for part in loc if not is_tag(part))


def parse_space(data: Any, source: str) -> SpaceSpec:
    try:
        return SpaceSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        raise SpaceError(f"{source}: field '{_field_path(first['loc'])}': {message}") from None


DEFAULT_SPACE = "default"
"""The space ``autopeft search`` uses without ``--space`` (search_spaces/default.yaml says why it is what it is)."""


def packaged_spaces() -> dict[str, Path]:
    """The spaces that ship with autopeft, by name: ``search_spaces/*.yaml``, in the package as
    ``autopeft/search_spaces`` (a link to the repository's folder, which setuptools packages as files)."""
    folder = Path(__file__).resolve().parents[1] / "search_spaces"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def resolve_space_path(path: str | Path) -> Path:
    """A space file, or the name of a packaged space (``default``, ``unified``, ``autopeft``, ``lora``); a path that
    exists (a file called ``lora`` in the working folder) wins over the packaged space of that name."""
    if Path(path).exists() or not _a_name(str(path)):
        return Path(path)
    return packaged_spaces().get(str(path), Path(path))


def _a_name(text: str) -> bool:
    return not any(sep in text for sep in ("/", "\\")) and not text.endswith((".yaml", ".yml"))


def read_space_file(path: str | Path) -> SpaceSpec:
    given, path = path, resolve_space_path(path)
    if not path.exists() and _a_name(str(given)):
        raise SpaceError(f"search space '{given}' is neither a file nor a packaged space "
                         f"(packaged: {', '.join(packaged_spaces()) or 'none'})")
    if path.is_dir():
        raise SpaceError(f"search space file '{path}' is a folder, not a YAML file")
    if not path.is_file():
        raise SpaceError(f"search space file '{path}' does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpaceError(f"search space file '{path}' cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpaceError(f"search space file '{path}' is not a text file (not UTF-8); give a YAML file") from None
    if "\x00" in text:
        raise SpaceError(f"search space file '{path}' is not a text file (it holds NUL bytes); give a YAML file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        problem = " ".join(str(problem).split())
        raise SpaceError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: a search space must be a YAML mapping")
    return parse_space(data, str(path))
