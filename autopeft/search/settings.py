"""Settings of one ``autopeft search`` run: a YAML/TOML file with the flags' keys, flags overriding it.

Settings are read and written flat, keyed like the flags: config files, ``run.json`` and what a Ray
worker receives all hold ``{"dataset": ..., "lr": ..., "backend": ...}``. In memory they are grouped
by concern: ``settings.task`` (which data, :class:`TaskSettings`), ``settings.fidelity`` (how much
training a trial gets), ``settings.training``, ``settings.backend`` and ``settings.priors``; the
search's own settings (model, space, budget, sampler, storage) stay at the top. Three flat keys are
named after their group and so read differently inside it: ``task`` is ``task.kind``, ``fidelity``
is ``fidelity.rungs`` and ``backend`` is ``backend.name``.

Parsing of the compact forms users type (``--time-budget 1h30m``, ``--max-params 0.5%``,
``--fidelity 0.25,0.5,1``) lives here too, so the CLI stays a thin shell.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from autopeft.errors import AutopeftError
from autopeft.search.objectives import DEFAULT_OBJECTIVES
from autopeft.space.params import parse_max_params
from autopeft.space.schema import DEFAULT_SPACE
from autopeft.trial.fidelity import Fidelity

if TYPE_CHECKING:
    from autopeft.backends.ray import RayOptions
    from autopeft.data import TaskData
    from autopeft.trial import TrainingConfig


def _as_value_error(check, *args, **kwargs) -> None:
    """Run a library check inside a pydantic validator: its AutopeftError becomes the field's ValueError."""
    try:
        check(*args, **kwargs)
    except AutopeftError as exc:
        raise ValueError(str(exc)) from None


def _comma_separated(value):
    """Flags and config files may give a list as one string: ``"a, b"`` -> ``["a", "b"]``."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _known_strategy(name: str) -> str:
    from autopeft.priors.selection import get_strategy

    _as_value_error(get_strategy, name)
    return name


def _known_prior(name: str) -> str:
    from autopeft.search.priors import PRIORS

    if name not in PRIORS:  # worded like pydantic's Literal error, as --prior always was
        names = [f"'{known}'" for known in PRIORS]
        raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]}" if len(names) > 1
                         else f"Input should be {names[0]}")
    return name


CommaList = Annotated[list[str], BeforeValidator(_comma_separated)]
PriorList = Annotated[list[Annotated[str, AfterValidator(_known_prior)]], BeforeValidator(_comma_separated)]
StrategyName = Annotated[str, AfterValidator(_known_strategy)]


class SettingsGroup(BaseModel):
    """Settings of one concern, validated from the flat keys it declares (a field's alias, else its name)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    @classmethod
    def flat_keys(cls) -> tuple[str, ...]:
        return tuple(field.alias or name for name, field in cls.model_fields.items())


class TaskSettings(SettingsGroup):
    """Which task to tune on: the dataset and how to read it (every command's task flags)."""

    dataset: str
    dataset_config: Optional[str] = None
    kind: Optional[str] = Field(None, alias="task")   # classification | regression | causal_lm; None: detected
    text_column: Optional[str] = None
    text_pair_column: Optional[str] = None
    label_column: Optional[str] = None
    prompt_column: Optional[CommaList] = None
    response_column: Optional[str] = None
    metric: Optional[str] = None
    verbalizer: Optional[CommaList] = None   # label words: a labelled dataset as a causal LM task

    def load(self, seed: int) -> TaskData:
        """The task's splits, read and split with ``seed`` (``autopeft.data.load_task``)."""
        from autopeft.data import load_task

        return load_task(
            self.dataset, dataset_config=self.dataset_config, task=self.kind, text_column=self.text_column,
            text_pair_column=self.text_pair_column, label_column=self.label_column,
            prompt_columns=self.prompt_column or None, response_column=self.response_column, metric=self.metric,
            verbalizer=self.verbalizer or None, seed=seed,
        )


AUTO = "auto"
AUTO_RUNGS = 4   # rungs of --fidelity auto, the full fidelity included


class FidelitySettings(SettingsGroup):
    """How much training a trial gets: the full fidelity, and the successive-halving rungs that scale it."""

    rungs: Union[Literal["auto"], list[float]] = Field("auto", alias="fidelity")   # see auto_fractions
    fidelity_resource: Literal["steps", "data", "epochs"] = "steps"
    eta: int = Field(3, ge=2)
    train_examples: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    epochs: float = Field(1.0, gt=0, allow_inf_nan=False)
    max_steps: Optional[int] = Field(None, ge=1)
    max_length: int = Field(128, ge=8)
    eval_examples: Optional[int] = Field(None, ge=1)
    generation_examples: int = Field(0, ge=0)
    max_new_tokens: int = Field(128, ge=1)
    batch_size: int = Field(32, ge=1)

    @field_validator("rungs", mode="before")
    @classmethod
    def _fractions(cls, value):
        if isinstance(value, (int, float)):
            return [float(value)]
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        if isinstance(value, str):
            try:
                return [float(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError("expected 'auto' or comma-separated fractions such as 0.25,0.5,1") from None
        return value

    @field_validator("rungs")
    @classmethod
    def _increasing_to_one(cls, rungs):
        if rungs == AUTO:
            return rungs
        if not rungs or any(not 0 < f <= 1 for f in rungs):
            raise ValueError("fidelity rungs must be fractions in (0, 1]")
        if any(b <= a for a, b in zip(rungs, rungs[1:])):
            raise ValueError("fidelity rungs must increase")
        if rungs[-1] != 1:
            raise ValueError("the last fidelity rung must be 1 (full fidelity)")
        return rungs

    def full(self) -> Fidelity:
        """The fidelity of the last rung and of the final stage."""
        return Fidelity(
            train_examples=self.train_examples, epochs=self.epochs, max_steps=self.max_steps,
            max_length=self.max_length, eval_examples=self.eval_examples,
            generation_examples=self.generation_examples, max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
        )

    @property
    def auto(self) -> bool:
        """``--fidelity auto``: a ladder of rungs whose lowest one the search raises when it cannot rank
        (:func:`autopeft.search.scheduler.raise_first_rung`)."""
        return self.rungs == AUTO

    def fractions(self) -> list[float]:
        """The rungs as fractions of the full fidelity: ``auto`` is eta^-3, eta^-2, eta^-1, 1 (1/27, 1/9, 1/3, 1
        with eta 3), so that each rung is eta times the one below, as successive halving promotes."""
        if self.auto:
            return [float(self.eta) ** -k for k in range(AUTO_RUNGS - 1, 0, -1)] + [1.0]
        return list(self.rungs)

    def rung_fidelities(self) -> list[Fidelity]:
        return fidelity_rungs(self.full(), self.fractions(), self.fidelity_resource)


class TrainingSettings(SettingsGroup):
    """How a trial trains where its point leaves it open."""

    # one rate for every parameter instead of the module types' own (autopeft.builders.groups); None: each module
    # type trains at its rate, the head at the point's largest. A rate the space fixes or searches still wins.
    lr: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    bf16: bool = False
    deepspeed: Optional[str] = None          # zero2 | zero3 | path to a DeepSpeed JSON config

    def config(self) -> TrainingConfig:
        """The trial's training defaults; without ``--lr`` its ``learning_rate`` is TrainingConfig's default, which
        the evaluator replaces per point by the point's head rate (the warm-up and DeepSpeed's "auto" use it)."""
        from autopeft.trial import TrainingConfig

        if self.lr is None:
            return TrainingConfig(bf16=self.bf16, deepspeed=self.deepspeed)
        return TrainingConfig(learning_rate=self.lr, bf16=self.bf16, deepspeed=self.deepspeed)


class BackendSettings(SettingsGroup):
    """Where trials run: here, one after another, or on a Ray cluster."""

    name: Literal["local", "ray"] = Field("local", alias="backend")
    ray_address: str = "local"               # local | auto | host:port | ray://host:port
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    max_concurrent: Optional[int] = None
    trial_retries: int = 1                   # restarts of a Ray trial whose worker died
    ray_storage: Optional[str] = None        # Tune's trial folders; shared disk for a multi-node cluster

    def ray_options(self) -> RayOptions:
        """Ray's options (checked: a bad number is an AutopeftError; the cluster is not reached)."""
        from autopeft.backends.ray import RayOptions

        return RayOptions(
            address=self.ray_address, cpus_per_trial=self.cpus_per_trial, gpus_per_trial=self.gpus_per_trial,
            workers_per_trial=self.workers_per_trial, max_concurrent=self.max_concurrent,
            max_failures=self.trial_retries, storage_path=self.ray_storage,
        )


class PriorSettings(SettingsGroup):
    """What the search knows before its first trial: task priors (:mod:`autopeft.search.priors`) and data
    selection (:mod:`autopeft.search.subsets`)."""

    prior: PriorList = Field(default_factory=list)
    prior_batches: int = Field(16, ge=1)                 # sensitivity: batches of gradient² (SPT's default)
    prior_budgets: CommaList = Field(default_factory=lambda: ["0.1%", "0.5%", "1%"])  # SPT points to start from
    sensitive_layers: Optional[int] = Field(None, ge=1)  # restrict placement to the K most sensitive layers
    # oneshot: configurations NSGA-II scores on the super-adapter (a score is one pass over the validation examples:
    # ~1 s for 500 on MiniLM, 2 CPU cores), the best of them that start the search, and the super-adapter's training
    # in multiples of the full fidelity's epochs (1: about 1.4x one LoRA r8 training, benchmarks/medium/oneshot.md)
    screen_evaluations: int = Field(60, ge=1)
    # validation examples per screen score (None: the trial's; fewer: the first of them). A cost knob, off by default:
    # fewer examples lost the screen's picks (60 points; 256 of 500: rank Spearman 0.95-0.96 with the full scoring,
    # 2-3 of its 6 best kept; 128: 0.71-0.87, RTE 0.43 of 249; benchmarks/medium/oneshot-subset/oneshot.md)
    screen_examples: Optional[int] = Field(None, ge=1)
    screen_candidates: int = Field(6, ge=1)
    screen_epochs: float = Field(1.0, gt=0, allow_inf_nan=False)
    inherit_weights: bool = False            # oneshot: trials start from their slice of the super-adapter
    super_adapter: Optional[str] = None      # not a flag: the super-adapter's cache entry, set by the search once it
                                             # is trained, so that every worker's trials inherit the same weights
    subset_strategy: Optional[StrategyName] = None    # data selection for the fidelity's training subset (None: random)
    embedding_model: Optional[str] = None    # embeddings for data selection (None: the model being tuned)
    warmup_pool: CommaList = Field(default_factory=list)  # datasets whose texts the adapter warms up on (GOT-D)
    warmup_strategy: StrategyName = "ot"
    warmup_size: Optional[str] = None        # count, fraction or N% of the pool
    warmup_epochs: float = Field(1.0, allow_inf_nan=False)

    @field_validator("warmup_size")
    @classmethod
    def _readable_size(cls, value):
        if value is not None:
            from autopeft.priors.selection import parse_size

            _as_value_error(parse_size, value, pool_size=10**12)
        return value

    @field_validator("warmup_epochs")
    @classmethod
    def _positive_epochs(cls, value):
        if not value > 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _inherit_needs_oneshot(self):
        if self.inherit_weights and "oneshot" not in self.prior:
            raise ValueError("--inherit-weights needs --prior oneshot (the super-adapter the trials start from)")
        return self

    @model_validator(mode="after")
    def _warmup_complete(self):
        if self.warmup_pool and self.warmup_size is None:
            raise ValueError("--warmup-pool needs --warmup-size (a count, a fraction or N% of the pool)")
        if self.warmup_size is not None and not self.warmup_pool:
            raise ValueError("--warmup-size needs --warmup-pool")
        return self


GROUPS: dict[str, type[SettingsGroup]] = {
    "task": TaskSettings, "fidelity": FidelitySettings, "training": TrainingSettings, "backend": BackendSettings,
    "priors": PriorSettings,
}
"""The attribute of :class:`SearchSettings` that holds each group."""


DEFAULT_TRIALS = 30
"""New configurations without --trials or --time-budget: after the baselines (3 in the default space), the Sobol
points (about a fifth) and the sampler's start (3), about 20 proposals for the Bayesian optimisation on the default
space's 8 dimensions. With the default rungs (1/27, 1/9, 1/3, 1; eta 3) and promotions that continue their
checkpoint, they cost about 30/27 + 10 x 2/27 + 3 x 6/27 + 1 x 18/27 ~ 3.3 full-fidelity trainings (plus an evaluation
per trial) before the final stage."""


class SearchSettings(BaseModel):
    """Everything one search needs; built from (and written as) the flat mapping of flag keys."""

    model_config = ConfigDict(extra="forbid")

    model: str
    task: TaskSettings
    space: str = DEFAULT_SPACE         # a space file or a packaged space's name (search_spaces/default.yaml says why)
    objectives: CommaList = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    trials: Optional[int] = Field(None, ge=1)
    time_budget: Optional[Union[float, str]] = None
    sampler: str = "auto"
    max_params: Optional[Union[float, str]] = None
    fidelity: FidelitySettings = Field(default_factory=FidelitySettings)
    final_seeds: int = Field(3, ge=0)
    baselines: bool = True
    quasi_random: Optional[int] = Field(None, ge=0)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    seed: int = Field(0, ge=0)
    storage: Optional[str] = None
    study_name: Optional[str] = None
    out: Optional[str] = None
    tracking: CommaList = Field(default_factory=list)   # experiment trackers: mlflow, wandb (autopeft.search.tracking)
    tracking_uri: Optional[str] = None       # MLflow's tracking URI (None: RUN/mlflow.db)
    trust_remote_code: bool = False
    backend: BackendSettings = Field(default_factory=BackendSettings)
    priors: PriorSettings = Field(default_factory=PriorSettings)

    @model_validator(mode="before")
    @classmethod
    def _group_flat_keys(cls, data):
        """Sort the flat keys into their groups; a key no group or field knows stays here, to be refused."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for attribute, group in GROUPS.items():
            # the group's own name goes in too: it is that group's key (``task``) or else unknown (``priors``)
            data[attribute] = {key: data.pop(key) for key in (*group.flat_keys(), attribute) if key in data}
        return data

    @field_validator("time_budget")
    @classmethod
    def _readable_duration(cls, value):
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("max_params")
    @classmethod
    def _readable_budget(cls, value):
        if value is not None:
            parse_max_params(value, model_params=1)
        return value

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name):
        from autopeft.search.samplers import SAMPLERS, canonical_sampler_name

        if canonical_sampler_name(name) not in SAMPLERS:
            raise ValueError(f"unknown sampler '{name}' (choose from: auto, {', '.join(SAMPLERS)})")
        return name

    @field_validator("tracking")
    @classmethod
    def _known_trackers(cls, names):
        from autopeft.search.tracking import get_tracker

        known = []
        for name in names:
            try:
                known.append(get_tracker(name).name)
            except AutopeftError as exc:
                raise ValueError(str(exc)) from None
        return list(dict.fromkeys(known))

    @property
    def time_budget_seconds(self) -> float | None:
        return None if self.time_budget is None else parse_duration(self.time_budget)

    def flat_dict(self) -> dict[str, Any]:
        """The settings keyed like the flags (JSON types): what :meth:`model_validate` reads back."""
        data = self.model_dump(mode="json", by_alias=True)
        for attribute in GROUPS:
            data.update(data.pop(attribute))
        return data

    def public_dict(self, masked_storage: str | None) -> dict[str, Any]:
        """The settings as written to run.json: the storage URL, the Ray address and any other URL masked."""
        from autopeft.redact import mask_url, mask_values

        data = self.flat_dict()
        data["storage"] = masked_storage
        data["ray_address"] = mask_url(self.backend.ray_address)
        data["tracking_uri"] = mask_url(self.tracking_uri) if self.tracking_uri else None
        return mask_values(data)

    def for_workers(self) -> dict[str, Any]:
        """What a trial worker needs to rebuild model, task and training: local paths made absolute
        (workers run in other folders), no storage URL or Ray address (they may hold credentials)."""
        from autopeft.data.aliases import resolve_dataset_alias

        data = self.flat_dict()
        alias = resolve_dataset_alias(data["dataset"]) if not data.get("dataset_config") else None
        if alias is not None:  # `sst2` resolves against the working folder: workers get what it resolved to here
            data.update(dataset=alias.dataset, dataset_config=alias.dataset_config,
                        **{k: data.get(k) or v for k, v in alias.columns.items()})
        for name in ("model", "dataset", "deepspeed", "embedding_model"):
            value = data.get(name)
            if value and Path(value).expanduser().exists():
                data[name] = str(Path(value).expanduser().resolve())
        data["warmup_pool"] = [_for_worker(p) for p in data.get("warmup_pool") or []]
        for name in ("storage", "ray_address", "ray_storage", "out", "study_name", "tracking", "tracking_uri"):
            data.pop(name, None)
        return data


def _for_worker(dataset: str) -> str:
    """A pool dataset as a worker in another folder finds it: an existing path or a dataset alias's local copy made
    absolute; anything else (a Hub id, an alias with no local copy here) as given."""
    from autopeft.data.aliases import resolve_dataset_alias

    if Path(dataset).expanduser().exists():
        return str(Path(dataset).expanduser().resolve())
    alias = resolve_dataset_alias(dataset)
    return alias.dataset if alias is not None and alias.local else dataset


def _normalise_keys(data: dict[str, Any]) -> dict[str, Any]:
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def read_run_config(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml/.json) or TOML (.toml) mapping of search settings."""
    path = Path(path)
    if not path.is_file():
        raise AutopeftError(f"config file '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise AutopeftError(f"config file '{path}' is not a readable text file ({type(exc).__name__})") from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except ImportError:
        raise AutopeftError("reading TOML on Python 3.10 needs `pip install tomli`") from None
    except Exception as exc:
        raise AutopeftError(f"config file '{path}' is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: "
                            f"{str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise AutopeftError(f"config file '{path}' must hold a mapping of settings")
    return _normalise_keys(data)


DEMO_SEARCH: dict[str, Any] = {
    "dataset": "sst2", "train_examples": 2000, "epochs": 2, "max_length": 64, "batch_size": 16,
    "eval_examples": 500, "trials": 12, "final_seeds": 1, "out": "runs/demo",
}
"""What ``autopeft search`` runs when neither a model nor a dataset is given: MiniLM (the packaged copy, or the
Hub's) on 2,000 SST-2 examples (the local copy, or the Hub's), 12 configurations of the default space — enough for
the Bayesian optimisation to propose 7 of them — each winner retrained once; a few minutes on a laptop's CPU.
Flags given with it still win."""


def demo_model() -> str:
    """The demo's model: the ``minilm`` alias where its package is installed, the Hub's copy of it otherwise."""
    from autopeft.models import MODEL_ALIASES, alias_installed

    return "minilm" if alias_installed("minilm") else MODEL_ALIASES["minilm"].hub_id


def _given(file_values: dict[str, Any], flag_values: dict[str, Any]) -> dict[str, Any]:
    """File values, overridden by every flag that was given (not None)."""
    return {**file_values, **{k: v for k, v in _normalise_keys(flag_values).items() if v is not None}}


def is_demo(file_values: dict[str, Any], flag_values: dict[str, Any]) -> bool:
    """Neither a model nor a dataset anywhere: the user asked for the demo search."""
    values = _given(file_values, flag_values)
    return values.get("model") in (None, "") and values.get("dataset") in (None, "")


def merge_settings(file_values: dict[str, Any], flag_values: dict[str, Any], source: str = "flags") -> SearchSettings:
    """File values, overridden by every flag that was given (not None); without model and dataset, the demo search
    (:data:`DEMO_SEARCH`) under them."""
    if is_demo(file_values, flag_values):
        file_values = {**DEMO_SEARCH, "model": demo_model(), **file_values}
    merged = _given(file_values, flag_values)
    for required in ("model", "dataset"):
        if merged.get(required) in (None, ""):
            raise AutopeftError(f"--{required} is required (as a flag or in the config file)")
    try:
        return SearchSettings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = first["loc"][1:] if first["loc"][:1] and first["loc"][0] in GROUPS else first["loc"]
        field = ".".join(str(p) for p in location)  # the flat key, as the user wrote it
        message = first["msg"].removeprefix("Value error, ")
        where = f"setting '{field.replace('_', '-')}': " if field else ""   # a check across settings names its flags
        raise AutopeftError(f"{source}: {where}{message}") from None


_DURATION = re.compile(r"^\s*(?:(?P<h>[\d.]+)\s*h)?\s*(?:(?P<m>[\d.]+)\s*m(?:in)?)?\s*(?:(?P<s>[\d.]+)\s*s?)?\s*$")


def parse_duration(value: float | str) -> float:
    """``3600``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1h30m"`` -> seconds."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value.lower())
        if not match or not any(match.groupdict().values()):
            raise AutopeftError(f"cannot read duration '{value}' (examples: 3600, 90s, 15m, 2h, 1h30m)")
        parts = {k: float(v) for k, v in match.groupdict().items() if v}
        seconds = parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
    if not seconds > 0:
        raise AutopeftError("--time-budget must be positive")
    return seconds


def distinct_rungs(rungs: list[Fidelity], train_rows: int) -> tuple[list[Fidelity], str | None]:
    """The rungs that train differently on a train split of ``train_rows`` rows, and a note when some did not.

    A rung whose training (examples, optimiser steps, LR schedule) is the next rung's is dropped: on a small task
    every step rung is raised to :data:`~autopeft.trial.fidelity.MIN_RUNG_STEPS` or capped at the full steps, so
    ``--fidelity auto``'s 1/27 and 1/9 (or all three) can be one training. Kept, a promotion to such a rung would only
    re-evaluate the same weights while its quota of trials still counted as a rung of successive halving."""
    def training(rung: Fidelity) -> tuple[int, int, int]:
        size = rung.train_size(train_rows)
        return size, rung.num_steps(size), rung.schedule_length(size)

    kept = [rung for rung, above in zip(rungs, rungs[1:]) if training(rung) != training(above)] + rungs[-1:]
    if len(kept) == len(rungs):
        return rungs, None
    steps = ", ".join(str(training(rung)[1]) for rung in kept)
    return kept, (f"{len(rungs) - len(kept)} of the {len(rungs)} fidelity rungs would train exactly what the next one "
                  f"trains on this task ({train_rows:,} train rows): the search uses {len(kept)} "
                  f"rung{'s' if len(kept) > 1 else ''} ({steps} optimiser steps)")


def fidelity_rungs(full: Fidelity, fractions: list[float], resource: str) -> list[Fidelity]:
    """One fidelity per rung: the full one with its optimiser steps, data or epochs scaled by each fraction.

    ``steps`` (the default): rung k trains ``ceil(fraction x`` the full fidelity's steps ``)`` (at least
    :data:`~autopeft.trial.fidelity.MIN_RUNG_STEPS`) on the full fidelity's data, batches and LR schedule: an exact
    prefix of the full training, so a promoted point continues from its checkpoint instead of restarting. The
    step count is resolved by the runner (``Fidelity.step_fraction``), which knows the train split's size.
    ``data`` and ``epochs`` rungs train a smaller subset or fewer epochs with their own schedule, from scratch."""
    rungs = []
    for fraction in fractions:
        if fraction == 1:
            rungs.append(full)
            continue
        if resource == "steps":
            rungs.append(replace(full, step_fraction=fraction))
            continue
        steps = None if full.max_steps is None else max(1, math.ceil(full.max_steps * fraction))
        if resource == "epochs":
            rungs.append(replace(full, epochs=full.epochs * fraction, max_steps=steps))
            continue
        examples = full.train_examples
        if examples is None:
            scaled = fraction
        elif examples <= 1:
            scaled = examples * fraction
        else:
            scaled = float(max(1, round(examples * fraction)))
        rungs.append(replace(full, train_examples=scaled, max_steps=steps))
    return rungs
